// The immediate sync of a few rows by key (the backend's registration sync): the same table plans
// (transforms and row filters included) and the same apply as a reconcile run; its bookkeeping is
// a target-log entry per changed row, so the next run knows those staging row versions are the
// engine's own.
import type pg from 'pg';
import { createHash } from 'node:crypto';
import type { KeySyncRequest, KeySyncResult } from '../types.ts';
import { SyncError } from '../errors.ts';
import { parseTableName, qualifiedName, quoteIdent } from '../catalog/introspect.ts';
import { orderTables } from '../plan/table-order.ts';
import type { TableConfig, TablePlan } from '../plan/table-plan.ts';
import { columnList, keyColumns, keyHash, keysRecordset, LOCAL_SESSION_SETTINGS, rowVersionHash, sourceSelectByKeys } from '../sql/statements.ts';
import { createStageTables, findReferencingChildren, findUniqueColliders, LOCAL_KEYS, type Stage } from '../sql/apply-statements.ts';
import { applyStages, beginApply, type TableOutcome } from '../apply/apply.ts';
import { ensureStateSchema, LOCK_KEYS } from '../state/schema.ts';
import { ensureTracking } from '../state/tracking.ts';
import { withTransaction } from './transaction.ts';
import { assertMaskSession, compilePlans, validateOnSource } from './plans.ts';
import { planTargetFor, type ResolvedTarget } from './targets.ts';
import { toSyncError } from './errors.ts';

export interface SyncKeysOptions {
  /** The configured tables (elara-sync.yml): their transforms and row filters apply here too. */
  tables?: TableConfig[];
  /** statement_timeout on the target, ms (default 5000). */
  statementTimeoutMs?: number;
  /** How long to wait for a reconcile run that is applying, ms (default 30000). */
  lockWaitMs?: number;
  /** The target's rules and subset (resolveTarget). The source pool must then be opened with maskOptions(target.mask). */
  target?: ResolvedTarget;
}

// Values travel as text and are cast back to the column type on the target: exact for every type
// (both sessions use the same fixed settings, e.g. UTC and extra_float_digits = 3).
const rawText = { getTypeParser: () => (v: string) => v };
const planCache = new WeakMap<object, Map<string, TablePlan>>();

const configFor = (name: string, tables: TableConfig[] | undefined): TableConfig => {
  const p = parseTableName(name);
  const q = qualifiedName(p.schema, p.name);
  return tables?.find((t) => {
    const x = parseTableName(t.name);
    return qualifiedName(x.schema, x.name) === q;
  }) ?? { name };
};

async function plansFor(source: pg.Pool, target: pg.Pool, names: string[], tables: TableConfig[] | undefined, resolved: ResolvedTarget | undefined): Promise<TablePlan[]> {
  const cache = planCache.get(target) ?? new Map<string, TablePlan>();
  planCache.set(target, cache);
  const tag = JSON.stringify([resolved?.name ?? null, resolved?.anonymize ?? false, resolved?.subset ?? null, resolved?.mask?.sig ?? null]);
  const keyOf = (c: TableConfig) => `${tag}|${JSON.stringify(c)}`;
  const cfgs = names.map((n) => configFor(n, tables));
  if (cfgs.some((c) => !cache.has(keyOf(c)))) {
    // A subset's filters are computed over every configured table: compile them together.
    const all = resolved?.subset && tables?.length
      ? [...tables, ...cfgs.filter((c) => !tables.some((t) => qualifiedOf(t.name) === qualifiedOf(c.name)))]
      : cfgs;
    const compiled = await compilePlans(source, target, all, resolved ? await planTargetFor(resolved) : null);
    await validateOnSource(source, compiled);
    await assertMaskSession(source, compiled);
    // compileTablePlans returns one plan per config, in order.
    all.forEach((c, i) => cache.set(keyOf(c), compiled[i]!));
  }
  return cfgs.map((c) => cache.get(keyOf(c))!);
}

const qualifiedOf = (name: string) => {
  const p = parseTableName(name);
  return qualifiedName(p.schema, p.name);
};

function keysJson(plan: TablePlan, keys: Array<Record<string, unknown>>): string {
  return JSON.stringify(keys.map((k) => {
    const o: Record<string, string> = {};
    for (const c of plan.key) {
      const v = k[c.name];
      if (v === undefined || v === null) {
        throw new SyncError('E_BAD_KEY', `a key for table ${plan.display} has no value for primary-key column ${c.name}`, 'pass every primary-key column in each key');
      }
      o[c.name] = v instanceof Date ? v.toISOString() : String(v);
    }
    return o;
  }));
}

/** Temp tables kept for the life of a pooled session (creating them per sync would cost more than the sync), emptied at commit. */
const sessionTables = new WeakMap<object, Set<string>>();
async function sessionStage(client: pg.ClientBase, plan: TablePlan): Promise<Stage & { keys: string; before: string }> {
  const h = createHash('sha1').update(`${plan.id}|${plan.columns.map((c) => `${c.name}:${c.type}`).join(',')}`).digest('hex').slice(0, 12);
  const names = { src: `_elara_ks_${h}`, act: `_elara_ka_${h}`, keys: `_elara_kk_${h}`, before: `_elara_kv_${h}` };
  const seen = sessionTables.get(client) ?? new Set<string>();
  sessionTables.set(client, seen);
  if (!seen.has(h)) {
    await client.query(`${createStageTables(plan, names.src, names.act, 'DELETE ROWS')};
      CREATE TEMP TABLE IF NOT EXISTS ${names.keys} ON COMMIT DELETE ROWS AS SELECT ${keyColumns(plan)} FROM ${plan.only}${plan.id} WITH NO DATA;
      CREATE TEMP TABLE IF NOT EXISTS ${names.before} (kh bigint, vh bigint) ON COMMIT DELETE ROWS`);
    seen.add(h);
  }
  return { plan, src: names.src, act: names.act, scope: { kind: 'keys', keysTable: names.keys }, localKeys: LOCAL_KEYS, keys: names.keys, before: names.before };
}

const literal = (v: string) => `'${v.replace(/'/g, "''")}'`;
const prepared = (text: string) => `elara_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`;

/**
 * Reads the rows with the given primary keys from the source (through the table plans' source
 * query) and applies them to the target in ONE transaction. Keys no longer at the source (or
 * outside the row filter) are deleted from the target unless they are local (QA) rows. Idempotent.
 */
export async function syncKeys(
  source: pg.Pool,
  target: pg.Pool,
  requests: KeySyncRequest[],
  options: SyncKeysOptions = {},
): Promise<Array<KeySyncResult & { conflicts: number }>> {
  try {
    return await syncKeysOnce(source, target, requests, options);
  } catch (e) {
    // A migration since the plans were compiled (a column added, a table re-created): compile again, once.
    const code = (e as { cause?: { code?: string }; code?: string }).cause?.code ?? (e as { code?: string }).code;
    if (code && /^(42703|42P01|42804|0A000|26000)$/.test(code)) {
      planCache.delete(target);
      return syncKeysOnce(source, target, requests, options);
    }
    throw e;
  }
}

async function syncKeysOnce(source: pg.Pool, target: pg.Pool, requests: KeySyncRequest[], options: SyncKeysOptions): Promise<Array<KeySyncResult & { conflicts: number }>> {
  const requested = await plansFor(source, target, requests.map((r) => r.table), options.tables, options.target);
  // The other configured tables can join the scope (children of a row being deleted).
  const others = options.tables?.length
    ? (await plansFor(source, target, options.tables.map((t) => t.name), options.tables, options.target)).filter((p) => !requested.some((r) => r.id === p.id)) : [];
  const plans = [...requested, ...others];
  await ensureStateSchema(target);
  for (const p of plans) await ensureTracking(target, p);

  let outcomes = new Map<string, KeyOutcome>();
  // One production snapshot for everything this sync reads, held while staging is written (a
  // few milliseconds): rows pulled into scope later come from the same snapshot.
  await withTransaction(source, async (src) => {
    await withTransaction(target, async (tx) => {
      const timeout = options.statementTimeoutMs ?? 5000;
      // Waits (up to lockWait) while a reconcile applies, then applies under the normal timeout.
      await beginApply(tx, { lock: 'shared', lockWaitMs: options.lockWaitMs ?? 30_000, statementTimeoutMs: timeout });
      outcomes = await applyKeys(src, tx, plans, requested.map((plan, i) => ({ plan, keys: requests[i]!.keys })));
    });
  }, SOURCE_SNAPSHOT);
  return requested.map((p) => {
    const o = outcomes.get(p.id)!;
    return {
      table: p.display, upserted: o.inserted + o.updated, deleted: o.deleted,
      unchanged: Math.max(0, o.sourceRows - o.inserted - o.updated - o.held), conflicts: o.held,
    };
  });
}

/** How a keys-scoped apply reads the source: one snapshot, read-only, the engine's settings. */
export const SOURCE_SNAPSHOT = `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${LOCAL_SESSION_SETTINGS}`;

export interface KeyOutcome extends TableOutcome {
  /** Source rows read for this table (asked for, and pulled into scope). */
  sourceRows: number;
  /** With collectHeld: the key (column → text) of every change held back. */
  heldKeys?: Array<Record<string, string>>;
}

/**
 * The keys-scoped apply, shared by the immediate sync and watch: reads the rows with the given
 * keys through the plans' source query from `src` (a source transaction: SOURCE_SNAPSHOT), closes
 * the scope (staging rows holding a unique value an incoming row needs; children, in the tables of
 * `plans`, of rows production deleted; both read from the same snapshot), applies everything in
 * `tx` (a target transaction begun with beginApply), and logs staging's row-version deltas in
 * elara_sync.target_log, so the next reconcile knows them for the engine's own. The caller adds its
 * own bookkeeping (a stream position) and commits. Keys are objects keyed by key column, with
 * values as text (as PostgreSQL prints them with the engine's session settings) or Dates.
 */
export async function applyKeys(
  src: pg.ClientBase, tx: pg.ClientBase, plans: TablePlan[], requests: Array<{ plan: TablePlan; keys: Array<Record<string, unknown>> }>,
  opts: { clearAfter?: boolean; collectHeld?: boolean } = {},
): Promise<Map<string, KeyOutcome>> {
  const order = orderTables(plans.map((p) => p.target)).upsertOrder;
  const read = async (plan: TablePlan, keysJsonText: string): Promise<unknown[][]> => {
    const text = sourceSelectByKeys(plan, '$1');
    const r = await src.query({ name: prepared(text), text, values: [keysJsonText], rowMode: 'array', types: rawText })
      .catch((e) => { throw toSyncError(e, 'source', plan.display); });
    return r.rows;
  };
  const stages = new Map<string, Stage & { keys: string; before: string }>();
  const sourceRows = new Map<string, number>();
  const stageOf = async (plan: TablePlan) => {
    let s = stages.get(plan.id);
    if (!s) {
      s = await sessionStage(tx, plan);
      stages.set(plan.id, s);
      sourceRows.set(plan.id, 0);
    }
    return s;
  };
  const add = async (s: Stage, json: string) => {
    const rows = await read(s.plan, json);
    sourceRows.set(s.plan.id, sourceRows.get(s.plan.id)! + rows.length);
    await loadRows(tx, s, rows);
  };
  const asked: Array<{ s: Stage & { keys: string }; json: string }> = [];
  for (const { plan, keys } of requests) {
    const s = await stageOf(plan);
    if (keys.length === 0) continue;
    const json = keysJson(plan, keys);
    const insertKeys = `INSERT INTO ${s.keys} ${keysRecordset(plan, '$1')} ON CONFLICT DO NOTHING`;
    await tx.query({ name: prepared(insertKeys), text: insertKeys, values: [json] });
    asked.push({ s, json });
  }
  // Keyed appliers run side by side (watch, the outbox's immediate syncs: both hold the apply lock
  // shared). A key missing from the target has no row to lock, so two of them would both insert it
  // (a duplicate-key error), and the one that read production first could commit last (staging
  // keeps the older value). A transaction lock per asked key, taken in one sorted statement (no
  // deadlock between callers) BEFORE production is read, serialises them: the second reads after
  // the first committed. Keys pulled into scope below are staging rows, locked FOR UPDATE there.
  // The locks are on 256 buckets of the keys, not the keys: a 5000-key chunk would otherwise
  // exhaust the server's lock table (max_locks_per_transaction); two callers sharing a bucket
  // only wait for each other.
  if (asked.length) {
    const lock = `SELECT count(pg_advisory_xact_lock(${LOCK_KEYS}, b)) FROM (SELECT DISTINCT (h & 255)::int AS b FROM (${asked.map(({ s }) =>
      `SELECT hashtextextended(${literal(s.plan.id)} || ':' || ${keyHash(s.plan, 'k')}::text, 0) AS h FROM ${s.keys} k`).join(' UNION ALL ')}) u ORDER BY 1) o`;
    await tx.query({ name: prepared(lock), text: lock });
  }
  for (const { s, json } of asked) await add(s, json);
  // Close the scope: a staging row outside the keys that holds a unique value an incoming row
  // needs is stale (production is unique); a child (in a synced table) of a row production
  // deleted goes with it. Both are read from production and applied too.
  for (let round = 0; round < 50; round++) {
    let added = 0;
    for (const s of [...stages.values()]) {
      for (const u of s.plan.uniques) {
        const q = findUniqueColliders(s, u);
        const r = await tx.query({ name: prepared(q.text), text: q.text, values: q.values });
        if (r.rowCount) {
          added += r.rowCount;
          await add(s, JSON.stringify(r.rows));
        }
      }
      for (const fk of s.plan.fksIn) {
        const childPlan = plans.find((p) => p.id === fk.table);
        if (!childPlan) continue;
        const child = await stageOf(childPlan);
        const q = findReferencingChildren(s, fk, child);
        const r = await tx.query({ name: prepared(q.text), text: q.text, values: q.values });
        if (r.rowCount) {
          added += r.rowCount;
          await add(child, JSON.stringify(r.rows));
        }
      }
    }
    if (added === 0) break;
  }
  const involved = order.filter((id) => stages.has(id)).map((id) => stages.get(id)!);
  for (const s of involved) {
    // Staging's row versions before the apply, locked so nobody changes them until commit.
    const before = `INSERT INTO ${s.before} SELECT ${keyHash(s.plan, 't')}, ${rowVersionHash(s.plan, 't')} FROM ${s.plan.only}${s.plan.id} t
      WHERE (${keyColumns(s.plan, 't')}) IN (SELECT ${keyColumns(s.plan)} FROM ${s.keys}) FOR UPDATE OF t`;
    await tx.query({ name: prepared(before), text: before });
  }
  const applied = await applyStages(tx, involved, order, { prepare: true });
  const out = new Map<string, KeyOutcome>();
  for (const s of involved) {
    const o = applied.get(s.plan.id)!;
    out.set(s.plan.id, { ...o, sourceRows: sourceRows.get(s.plan.id)! });
    if (opts.collectHeld && o.held > 0) {
      const q = `SELECT json_build_object(${s.plan.key.map((c) => `${literal(c.name)}, a.${quoteIdent(c.name)}::text`).join(', ')}) AS k FROM ${s.act} a WHERE a.held IS NOT NULL`;
      out.get(s.plan.id)!.heldKeys = (await tx.query({ name: prepared(q), text: q })).rows.map((r) => r.k);
    }
    if (o.inserted + o.updated + o.deleted === 0) continue;
    const log = `INSERT INTO elara_sync.target_log (table_name, key_hash, version_xor, row_delta)
      SELECT $1, kh, bit_xor(vh), sum(d) FROM (
        SELECT kh, vh, -1 AS d FROM ${s.before}
        UNION ALL SELECT ${keyHash(s.plan, 't')}, ${rowVersionHash(s.plan, 't')}, 1 FROM ${s.plan.only}${s.plan.id} t
          WHERE (${keyColumns(s.plan, 't')}) IN (SELECT ${keyColumns(s.plan)} FROM ${s.keys})) x
      GROUP BY kh HAVING bit_xor(vh) <> 0 OR sum(d) <> 0`;
    await tx.query({ name: prepared(log), text: log, values: [s.plan.id] });
  }
  // A caller applying several chunks in one transaction (watch, a large source transaction)
  // empties the session's stage tables, so the next chunk does not apply this one's rows again.
  if (opts.clearAfter && involved.length) await tx.query(`TRUNCATE ${involved.flatMap((s) => [s.src, s.act, s.keys, s.before]).join(', ')}`);
  return out;
}

/** Source rows (as text) into the stage's src table, 500 rows per statement, cast to the target's types. */
async function loadRows(client: pg.ClientBase, s: Stage, data: unknown[][]): Promise<void> {
  const n = s.plan.columns.length;
  for (let start = 0; start < data.length; start += 500) {
    const chunk = data.slice(start, start + 500);
    const values: unknown[] = [];
    const tuples = chunk.map((row, r) => `(${s.plan.columns.map((c, j) => {
      values.push(row[j]);
      return `$${r * n + j + 1}::${c.type}`;
    }).join(', ')})`);
    const insertRows = `INSERT INTO ${s.src} (${columnList(s.plan)}) VALUES ${tuples.join(', ')}`;
    await client.query({ name: prepared(insertRows), text: insertRows, values });
  }
}
