import type pg from 'pg';
import { createHash } from 'node:crypto';
import type { KeySyncRequest, KeySyncResult } from '../types.ts';
import { SyncError } from '../errors.ts';
import { quoteIdent, resolveTables, type SyncedTable } from '../catalog/introspect.ts';
import { orderTables } from '../plan/table-order.ts';
import { columnList, sourceSelect, SESSION_SETTINGS } from '../sql/statements.ts';
import { applyDeletes, applyUpserts, ensureTracking, stageTableForSession } from './apply.ts';
import { ensureStateSchema, LOCK_APPLY } from '../state/schema.ts';
import { withTransaction } from '../engine/transaction.ts';

export interface SyncKeysOptions {
  /** statement_timeout on the target, ms (default 5000). */
  statementTimeoutMs?: number;
  /** How long to wait for a reconcile run that is applying, ms (default 30000). */
  lockWaitMs?: number;
}

// Values travel as text and are cast back to the column type on the target: exact for every type.
const rawText = { getTypeParser: () => (v: string) => v };
const catalogCache = new WeakMap<object, Map<string, SyncedTable>>();

async function tablesFor(source: pg.Pool, target: pg.Pool, names: string[]): Promise<SyncedTable[]> {
  const cache = catalogCache.get(target) ?? new Map<string, SyncedTable>();
  catalogCache.set(target, cache);
  const missing = names.filter((n) => !cache.has(n));
  if (missing.length > 0) {
    const resolved = await resolveTables(source, target, missing.map((name) => ({ name })));
    missing.forEach((n, i) => cache.set(n, resolved[i]!));
  }
  return names.map((n) => cache.get(n)!);
}

function keysJson(t: SyncedTable, keys: Array<Record<string, unknown>>): string {
  return JSON.stringify(keys.map((k) => {
    const o: Record<string, string> = {};
    for (const c of t.target.primaryKey) {
      const v = k[c];
      if (v === undefined || v === null) {
        throw new SyncError('E_BAD_KEY', `a key for table ${t.target.display} has no value for primary-key column ${c}`, 'pass every primary-key column in each key');
      }
      o[c] = v instanceof Date ? v.toISOString() : String(v);
    }
    return o;
  }));
}

function keysRecordset(t: SyncedTable, param: string): string {
  const pkCols = t.target.primaryKey.map((c) => t.columns.find((x) => x.name === c)!);
  return `SELECT ${pkCols.map((c) => `x.${quoteIdent(c.name)}::${c.type}`).join(', ')}
    FROM jsonb_to_recordset(${param}::jsonb) AS x(${pkCols.map((c) => `${quoteIdent(c.name)} text`).join(', ')})`;
}

/**
 * Reads the rows with the given primary keys from the source (through the engine's source query)
 * and applies them to the target in ONE transaction, parents before children. Keys no longer at
 * the source are deleted from the target unless they are local (QA) rows. Idempotent.
 */
export async function syncKeys(
  source: pg.Pool,
  target: pg.Pool,
  requests: KeySyncRequest[],
  options: SyncKeysOptions = {},
): Promise<Array<KeySyncResult & { conflicts: number }>> {
  const tables = await tablesFor(source, target, requests.map((r) => r.table));
  const byName = new Map(tables.map((t, i) => [t.target.qualified, { t, keys: requests[i]!.keys }]));
  const order = orderTables(tables.map((t) => t.target));

  // Read every requested row from one snapshot of the source.
  const rows = new Map<string, unknown[][]>();
  await withTransaction(source, async (src) => {
    for (const [q, { t, keys }] of byName) {
      if (keys.length === 0) continue;
      const text = `${sourceSelect(t, { kind: 'all' })} ${t.where ? 'AND' : 'WHERE'} (${t.target.primaryKey.map((c) => `s.${quoteIdent(c)}`).join(', ')}) IN (${keysRecordset(t, '$1')})`;
      const r = await src.query({ name: `elara_src_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`, text, values: [keysJson(t, keys)], rowMode: 'array', types: rawText });
      rows.set(q, r.rows);
    }
  }, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${SESSION_SETTINGS.replace(/SET /g, 'SET LOCAL ')}`);

  await ensureStateSchema(target);
  for (const t of tables) await ensureTracking(target, t);
  const results = new Map<string, KeySyncResult & { conflicts: number }>();
  await withTransaction(target, async (client) => {
    const lockWait = options.lockWaitMs ?? 30_000;
    const timeout = options.statementTimeoutMs ?? 5000;
    // Wait (up to lockWait) while a reconcile applies, then apply under the normal timeout.
    await client.query(`SET LOCAL elara_sync.writer = 'on'; SET CONSTRAINTS ALL DEFERRED;
      SET LOCAL lock_timeout = ${lockWait}; SET LOCAL statement_timeout = ${Math.max(timeout, lockWait)};
      SELECT pg_advisory_xact_lock_shared(${LOCK_APPLY});
      SET LOCAL statement_timeout = ${timeout}; ${SESSION_SETTINGS.replace(/SET /g, 'SET LOCAL ')}`);
    const staged = new Map<string, Awaited<ReturnType<typeof stageTableForSession>>>();
    for (const q of order.upsertOrder) {
      const { t, keys } = byName.get(q)!;
      const s = await stageTableForSession(client, t);
      const insertKeys = `INSERT INTO ${s.keys} ${keysRecordset(t, '$1')}`;
      await client.query({ name: `elara_keys_${s.keys}`, text: insertKeys, values: [keysJson(t, keys)] });
      const data = rows.get(q) ?? [];
      const n = t.columns.length;
      for (let start = 0; start < data.length; start += 500) {
        const chunk = data.slice(start, start + 500);
        const values: unknown[] = [];
        const tuples = chunk.map((row, r) => `(${t.columns.map((c, j) => {
          values.push(row[j]);
          return `$${r * n + j + 1}::${c.type}`;
        }).join(', ')})`);
        const insertRows = `INSERT INTO ${s.tmp} (${columnList(t)}) VALUES ${tuples.join(', ')}`;
        await client.query({ name: `elara_rows_${createHash('sha1').update(insertRows).digest('hex').slice(0, 20)}`, text: insertRows, values });
      }
      const up = await applyUpserts(client, s, { kind: 'keys', keysTable: s.keys }, { adopt: false, dryRun: false });
      results.set(q, { table: t.target.display, upserted: up.inserted + up.updated, deleted: up.deleted, unchanged: data.length - up.inserted - up.updated - up.conflicts, conflicts: up.conflicts });
      staged.set(q, s);
    }
    for (const q of order.deleteOrder) {
      const s = staged.get(q)!;
      results.get(q)!.deleted += await applyDeletes(client, s, { kind: 'keys', keysTable: s.keys });
    }
  });
  return requests.map((_, i) => results.get(tables[i]!.target.qualified)!);
}
