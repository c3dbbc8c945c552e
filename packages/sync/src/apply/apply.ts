// The one apply path: every mode (reconcile ranges, immediate keys, later CDC) loads source rows
// into a temp table in the target's transaction and then runs the same statements from sql/.
import type pg from 'pg';
import { createHash } from 'node:crypto';
import { quoteIdent, type SyncedTable } from '../catalog/introspect.ts';
import { LOCK_DDL } from '../state/schema.ts';
import { withTransaction } from '../engine/transaction.ts';
import {
  adoptLocalRows, columnList, createTempTable, LOCAL_ROWS, deleteMissing, findConflicts, planCounts, trackingTriggerDdl, insertNew, updateChanged, freeUniqueValues, keyHash, keyText, type Scope,
} from '../sql/statements.ts';

/** Runs a statement; for session-scoped staging, as a named prepared statement (planned once per connection). */
function exec(target: pg.ClientBase, s: StagedTable, text: string, values: unknown[] = []) {
  if (!s.prepared) return target.query(text, values);
  return target.query({ name: `elara_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`, text, values });
}

export interface StagedTable {
  /** Statements are prepared per connection (the immediate sync's session-scoped tables). */
  prepared?: boolean;
  table: SyncedTable;
  tmp: string;
  conflicts: string;
  /** Table of local (QA) rows: elara_sync.local_rows, or an empty temp stand-in for a dry run. */
  localRows: string;
}

/** Creates the per-table temp tables (dropped at commit) that hold source rows and conflicting keys. */
export async function stageTable(target: pg.ClientBase, t: SyncedTable, index: number, localRows = LOCAL_ROWS): Promise<StagedTable> {
  const tmp = `_elara_src_${index}`;
  const conflicts = `_elara_conflicts_${index}`;
  await target.query(`DROP TABLE IF EXISTS ${tmp}; DROP TABLE IF EXISTS ${conflicts}`);
  await target.query(createTempTable(t, tmp));
  await target.query(`CREATE TEMP TABLE ${conflicts} (key text PRIMARY KEY, reason text NOT NULL) ON COMMIT DROP`);
  return { table: t, tmp, conflicts, localRows };
}

const sessionTables = new WeakMap<object, Set<string>>();

/**
 * Temp tables kept for the life of a pooled session and emptied at every commit, for the
 * immediate sync: creating temp tables is catalog work that would cost more than applying one
 * registration. Names carry a hash of the column list, so a migrated table gets new ones.
 */
export async function stageTableForSession(target: pg.ClientBase, t: SyncedTable): Promise<StagedTable & { keys: string }> {
  const h = createHash('sha1').update(`${t.target.qualified}|${t.columns.map((c) => `${c.name}:${c.type}`).join(',')}`).digest('hex').slice(0, 12);
  const tmp = `_elara_ks_${h}`;
  const conflicts = `_elara_kc_${h}`;
  const keys = `_elara_kk_${h}`;
  const seen = sessionTables.get(target) ?? new Set<string>();
  sessionTables.set(target, seen);
  if (!seen.has(h)) {
    const pk = t.target.primaryKey.map(quoteIdent).join(', ');
    await target.query(`CREATE TEMP TABLE IF NOT EXISTS ${tmp} ON COMMIT DELETE ROWS AS SELECT ${columnList(t)} FROM ${t.target.qualified} WITH NO DATA;
      CREATE TEMP TABLE IF NOT EXISTS ${conflicts} (key text PRIMARY KEY, reason text NOT NULL) ON COMMIT DELETE ROWS;
      CREATE TEMP TABLE IF NOT EXISTS ${keys} ON COMMIT DELETE ROWS AS SELECT ${pk} FROM ${t.target.qualified} WITH NO DATA`);
    seen.add(h);
  }
  return { table: t, tmp, conflicts, localRows: LOCAL_ROWS, keys, prepared: true };
}

export interface UpsertOutcome {
  inserted: number;
  updated: number;
  /** Rows deleted early to free a unique value (see freeUniqueValues). */
  deleted: number;
  conflicts: number;
  conflictKeys: string[];
}

/** Conflict detection and the upsert. `adopt` marks target-only rows as local first (a table's first run). */
export async function applyUpserts(target: pg.ClientBase, s: StagedTable, scope: Scope, opts: { adopt: boolean; dryRun: boolean }): Promise<UpsertOutcome> {
  if (opts.adopt && !opts.dryRun) {
    const a = adoptLocalRows(s.table, s.tmp, scope, s.localRows);
    await exec(target, s, a.text, a.values);
  }
  for (const q of findConflicts(s.table, s.tmp, s.conflicts, s.localRows)) await exec(target, s, q.text, q.values);
  const c = await exec(target, s, `SELECT key, count(*) OVER () AS n FROM ${s.conflicts} ORDER BY key LIMIT 100`);
  const nConflicts = Number(c.rows[0]?.n ?? 0);
  if (opts.dryRun) return { inserted: 0, updated: 0, deleted: 0, conflicts: nConflicts, conflictKeys: c.rows.map((r) => r.key) };
  let deleted = 0;
  for (const q of freeUniqueValues(s.table, s.tmp, s.conflicts, scope, s.localRows)) {
    const r = await exec(target, s, q.text, q.values);
    if (q.kind === 'delete') deleted += r.rowCount ?? 0;
  }
  // New rows first, so changed rows may point at them (FKs are checked per statement).
  const inserted = (await exec(target, s, insertNew(s.table, s.tmp, s.conflicts))).rowCount ?? 0;
  const update = updateChanged(s.table, s.tmp, s.conflicts);
  const updated = update ? (await exec(target, s, update)).rowCount ?? 0 : 0;
  return { inserted, updated, deleted, conflicts: nConflicts, conflictKeys: c.rows.map((r) => r.key) };
}

export async function applyDeletes(target: pg.ClientBase, s: StagedTable, scope: Scope): Promise<number> {
  const d = deleteMissing(s.table, s.tmp, s.conflicts, scope, s.localRows);
  const r = await exec(target, s, d.text, d.values);
  return r.rowCount ?? 0;
}

export async function countPlanned(target: pg.ClientBase, s: StagedTable, scope: Scope): Promise<{ inserted: number; updated: number; deleted: number }> {
  const q = planCounts(s.table, s.tmp, s.conflicts, scope, s.localRows);
  const r = await target.query(q.text, q.values);
  return r.rows[0];
}

/** Buckets (under `buckets`) of the conflicting keys, so the run can re-check them next time. */
export async function conflictBuckets(target: pg.ClientBase, s: StagedTable, buckets: number): Promise<number[]> {
  const r = await target.query(`SELECT DISTINCT (${keyHash(s.table.target, 's')} & ${buckets - 1})::int AS b FROM ${s.tmp} s JOIN ${s.conflicts} c ON c.key = ${keyText(s.table.target, 's')}`);
  return r.rows.map((x) => x.b);
}

const tracked = new WeakMap<object, Set<string>>();

/** Installs the write-tracking trigger on a staging table if it is not there yet (cached per connection owner). */
export async function ensureTracking(target: pg.ClientBase | pg.Pool, t: SyncedTable, cacheKey: object = target): Promise<void> {
  const seen = tracked.get(cacheKey) ?? new Set<string>();
  tracked.set(cacheKey, seen);
  if (seen.has(t.target.qualified)) return;
  const fnName = `track_${createHash('sha1').update(t.target.qualified).digest('hex').slice(0, 12)}`;
  const ddl = trackingTriggerDdl(t.target, fnName);
  // The function body depends on the key columns; a hash of the DDL tells whether it is current.
  const version = createHash('sha1').update(ddl.join(';')).digest('hex').slice(0, 16);
  // Under an advisory lock: two processes installing at once (the worker's warm-up and the first
  // registration) would otherwise race on CREATE FUNCTION.
  const install = async (c: pg.ClientBase) => {
    await c.query(`SELECT pg_advisory_xact_lock(${LOCK_DDL})`);
    const r = await c.query(
      `SELECT obj_description(p.oid, 'pg_proc') AS v,
              (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = $1::regclass AND g.tgname IN ('elara_sync_track', 'elara_sync_track_truncate'))::int AS n
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'elara_sync' AND p.proname = $2`,
      [t.target.qualified, fnName],
    );
    if (r.rows[0]?.v !== version || r.rows[0]?.n !== 2) {
      for (const stmt of ddl) await c.query(stmt);
      await c.query(`COMMENT ON FUNCTION elara_sync."${fnName}"() IS '${version}'`);
    }
  };
  if ('totalCount' in target) {
    // A pool: one client, its own transaction.
    await withTransaction(target as pg.Pool, install);
  } else {
    // A client inside the run's transaction: the lock is released at its end.
    await install(target as pg.ClientBase);
  }
  seen.add(t.target.qualified);
}
