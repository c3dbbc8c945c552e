// The tracking trigger on each synced staging table: rows QA creates in staging become local keys
// (kept, never overwritten or deleted by the engine). The engine applies with
// session_replication_role = replica, so the trigger never fires for the engine's own writes.
// Writes that bypass the trigger (replica-role sessions, DISABLE TRIGGER, restores) are found by
// the staging-side fingerprints instead, and are repaired rather than kept.
import type pg from 'pg';
import { createHash } from 'node:crypto';
import { quoteIdent } from '../catalog/introspect.ts';
import type { TablePlan } from '../plan/table-plan.ts';
import { FUNCTION_SETTINGS, keyArray, keyLabel } from '../sql/statements.ts';
import { LOCK_DDL } from './schema.ts';

const literal = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** A dollar-quote tag that does not occur in `body`, so any identifier is safe inside it. */
function dollarTag(body: string): string {
  let n = 0;
  let tag = '$elara$';
  while (body.includes(tag)) tag = `$elara${++n}$`;
  return tag;
}

export function trackingFunctionName(plan: TablePlan): string {
  return `track_${createHash('sha1').update(plan.id).digest('hex').slice(0, 12)}`;
}

/**
 * DDL of the trigger. The function runs with fixed TimeZone/DateStyle/… (SET clauses), so the key
 * text it records is the same whatever the QA session's settings. Rows put back are not QA data:
 * a TRUNCATE forgets the table's local keys, and rows inserted later in the same transaction (a
 * reload: TRUNCATE then COPY of a dump) are not recorded; a production row deleted in staging
 * leaves its key in `vacated`, so inserting that key again (a restore by DELETE + INSERT) is not
 * recorded either. A QA row whose key QA changes stays a local row.
 */
export function trackingTriggerDdl(plan: TablePlan, fnName = trackingFunctionName(plan)): string[] {
  const fn = `elara_sync.${quoteIdent(fnName)}`;
  const id = literal(plan.id);
  const reloadFlag = literal(`elara_sync.reload_${fnName.slice(6)}`);
  const body = `
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM elara_sync.local_keys WHERE table_name = ${id};
    PERFORM set_config(${reloadFlag}, 'on', true);
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    DELETE FROM elara_sync.vacated WHERE table_name = ${id} AND key = ${keyArray(plan, 'NEW')};
    IF NOT FOUND AND current_setting(${reloadFlag}, true) IS DISTINCT FROM 'on' THEN
      INSERT INTO elara_sync.local_keys (table_name, key) VALUES (${id}, ${keyArray(plan, 'NEW')}) ON CONFLICT DO NOTHING;
    END IF;
  ELSIF TG_OP = 'DELETE' THEN
    DELETE FROM elara_sync.local_keys WHERE table_name = ${id} AND key = ${keyArray(plan, 'OLD')};
    IF NOT FOUND THEN
      INSERT INTO elara_sync.vacated (table_name, key) VALUES (${id}, ${keyArray(plan, 'OLD')}) ON CONFLICT DO NOTHING;
    END IF;
  ELSIF ${keyArray(plan, 'NEW')} IS DISTINCT FROM ${keyArray(plan, 'OLD')} THEN
    DELETE FROM elara_sync.local_keys WHERE table_name = ${id} AND key = ${keyArray(plan, 'OLD')};
    IF FOUND THEN
      INSERT INTO elara_sync.local_keys (table_name, key) VALUES (${id}, ${keyArray(plan, 'NEW')}) ON CONFLICT DO NOTHING;
    END IF;
  END IF;
  RETURN NULL;
END`;
  const tag = dollarTag(body);
  return [
    // SECURITY DEFINER: the trigger fires for QA and app sessions that have no rights on the
    // engine's schema; it runs as the engine's role with a fixed search_path.
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
       SET search_path = pg_catalog, pg_temp ${FUNCTION_SETTINGS} AS ${tag}${body}${tag}`,
    `CREATE OR REPLACE TRIGGER elara_sync_track AFTER INSERT OR UPDATE OR DELETE ON ${plan.id}
       FOR EACH ROW EXECUTE FUNCTION ${fn}()`,
    `CREATE OR REPLACE TRIGGER elara_sync_track_truncate AFTER TRUNCATE ON ${plan.id}
       FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  ];
}

const tracked = new WeakMap<object, Set<string>>();

/**
 * Installs (or updates) the tracking trigger of a staging table, and moves version-2 local rows
 * (text keys, display names) to local_keys. Cached per connection owner. Runs inside `c`'s
 * transaction when `c` is a client; a pool gets a transaction of its own.
 */
export async function ensureTracking(target: pg.ClientBase | pg.Pool, plan: TablePlan, cacheKey: object = target): Promise<void> {
  const seen = tracked.get(cacheKey) ?? new Set<string>();
  tracked.set(cacheKey, seen);
  const fnName = trackingFunctionName(plan);
  const ddl = trackingTriggerDdl(plan, fnName);
  // The function body depends on the key columns; a hash of the DDL tells whether it is current.
  const version = createHash('sha1').update(ddl.join(';')).digest('hex').slice(0, 16);
  const cacheId = `${plan.id}|${plan.target.oid}|${version}`;
  if (seen.has(cacheId)) return;
  // Under an advisory lock: two processes installing at once (the worker's warm-up and the first
  // registration) would otherwise race on CREATE FUNCTION.
  const install = async (c: pg.ClientBase) => {
    await c.query(`SELECT pg_advisory_xact_lock(${LOCK_DDL})`);
    const r = await c.query(
      `SELECT obj_description(p.oid, 'pg_proc') AS v,
              (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = $1::regclass AND g.tgname IN ('elara_sync_track', 'elara_sync_track_truncate')
                 AND g.tgfoid = p.oid AND g.tgenabled = 'O')::int AS n
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'elara_sync' AND p.proname = $2`,
      [plan.id, fnName],
    );
    if (r.rows[0]?.v !== version || r.rows[0]?.n !== 2) {
      // CREATE OR REPLACE TRIGGER also enables a trigger someone disabled (and needs only the
      // TRIGGER privilege, not ownership): QA data depends on it.
      for (const stmt of ddl) await c.query(stmt);
      await c.query(`COMMENT ON FUNCTION elara_sync.${quoteIdent(fnName)}() IS '${version}'`);
    }
    const legacy = await c.query(`SELECT 1 FROM elara_sync.local_rows WHERE table_name = $1 LIMIT 1`, [plan.display]);
    if (legacy.rowCount) {
      await c.query(`INSERT INTO elara_sync.local_keys (table_name, key, created_at)
          SELECT $1, ${keyArray(plan, 't')}, l.created_at FROM elara_sync.local_rows l JOIN ${plan.only}${plan.id} t ON ${keyLabel(plan, 't')} = l.key
          WHERE l.table_name = $2 ON CONFLICT DO NOTHING`, [plan.id, plan.display]);
      await c.query(`DELETE FROM elara_sync.local_rows WHERE table_name = $1`, [plan.display]);
    }
    await c.query(`UPDATE elara_sync.table_state SET table_name = $1 WHERE table_name = $2
        AND NOT EXISTS (SELECT 1 FROM elara_sync.table_state WHERE table_name = $1)`, [plan.id, plan.display]);
  };
  if ('totalCount' in target) {
    const client = await (target as pg.Pool).connect();
    try {
      await client.query('BEGIN');
      await install(client);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      throw e;
    } finally {
      client.release();
    }
  } else {
    await install(target as pg.ClientBase);
  }
  seen.add(cacheId);
}
