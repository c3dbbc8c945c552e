import type pg from 'pg';
import type { KeySyncRequest, KeySyncResult } from '../types.ts';
import { SyncError } from '../errors.ts';
import { quoteIdent, resolveTables, type SyncedTable } from '../catalog/introspect.ts';
import { orderTables } from '../plan/table-order.ts';
import { columnList, sourceSelect, SESSION_SETTINGS } from '../sql/statements.ts';
import { applyDeletes, applyUpserts, ensureTracking, stageTable } from './apply.ts';
import { ensureStateSchema, LOCK_APPLY } from '../state/schema.ts';

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
  const src = await source.connect();
  try {
    await src.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
    await src.query(SESSION_SETTINGS.replace(/SET /g, 'SET LOCAL '));
    for (const [q, { t, keys }] of byName) {
      if (keys.length === 0) continue;
      const text = `${sourceSelect(t, { kind: 'all' })} ${t.where ? 'AND' : 'WHERE'} (${t.target.primaryKey.map((c) => `s.${quoteIdent(c)}`).join(', ')}) IN (${keysRecordset(t, '$1')})`;
      const r = await src.query({ text, values: [keysJson(t, keys)], rowMode: 'array', types: rawText });
      rows.set(q, r.rows);
    }
    await src.query('COMMIT');
  } catch (e) {
    await src.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    src.release();
  }

  await ensureStateSchema(target);
  for (const t of tables) await ensureTracking(target, t);
  const client = await target.connect();
  const results = new Map<string, KeySyncResult & { conflicts: number }>();
  try {
    await client.query('BEGIN');
    await client.query(`SET LOCAL elara_sync.writer = 'on'; SET CONSTRAINTS ALL DEFERRED; SET LOCAL lock_timeout = ${options.lockWaitMs ?? 30_000}; SET LOCAL statement_timeout = ${Math.max(options.statementTimeoutMs ?? 5000, options.lockWaitMs ?? 30_000)}`);
    await client.query(`SELECT pg_advisory_xact_lock_shared(${LOCK_APPLY})`);
    await client.query(`SET LOCAL statement_timeout = ${options.statementTimeoutMs ?? 5000}`);
    await client.query(SESSION_SETTINGS.replace(/SET /g, 'SET LOCAL '));
    const staged = new Map<string, { s: Awaited<ReturnType<typeof stageTable>>; keysTable: string }>();
    for (const [i, q] of order.upsertOrder.entries()) {
      const { t, keys } = byName.get(q)!;
      const s = await stageTable(client, t, 1000 + i);
      const keysTable = `_elara_keys_${i}`;
      await client.query(`DROP TABLE IF EXISTS ${keysTable}`);
      await client.query(`CREATE TEMP TABLE ${keysTable} ON COMMIT DROP AS ${keysRecordset(t, '$1')}`, [keysJson(t, keys)]);
      const data = rows.get(q) ?? [];
      const n = t.columns.length;
      for (let start = 0; start < data.length; start += 500) {
        const chunk = data.slice(start, start + 500);
        const values: unknown[] = [];
        const tuples = chunk.map((row, r) => `(${t.columns.map((c, j) => {
          values.push(row[j]);
          return `$${r * n + j + 1}::${c.type}`;
        }).join(', ')})`);
        await client.query(`INSERT INTO ${s.tmp} (${columnList(t)}) VALUES ${tuples.join(', ')}`, values);
      }
      const up = await applyUpserts(client, s, { kind: 'keys', keysTable }, { adopt: false, dryRun: false });
      results.set(q, { table: t.target.display, upserted: up.inserted + up.updated, deleted: up.deleted, unchanged: data.length - up.inserted - up.updated - up.conflicts, conflicts: up.conflicts });
      staged.set(q, { s, keysTable });
    }
    for (const q of order.deleteOrder) {
      const { s, keysTable } = staged.get(q)!;
      results.get(q)!.deleted += await applyDeletes(client, s, { kind: 'keys', keysTable });
    }
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
  return requests.map((_, i) => results.get(tables[i]!.target.qualified)!);
}
