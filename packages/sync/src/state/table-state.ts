// Per-table change-detection state on the target (elara_sync.table_state), and the target log
// that immediate syncs (and later watch) write so the next run knows which staging row versions
// are the engine's own.
import type pg from 'pg';
import { Fingerprints, splitInt64 } from '../copy/fingerprint.ts';

export interface Total {
  rows: number;
  /** The xor of row versions, as PostgreSQL prints an int8. */
  text: string;
}

export interface StoredState {
  configSig: string;
  buckets: number;
  source: Fingerprints | null;
  target: Fingerprints | null;
  sourceTotal: Total | null;
  targetTotal: Total | null;
  targetOid: number | null;
  trackedSince: Date | null;
  lastEqualAt: Date | null;
  lastImmediateAt: Date | null;
  targetRows: number | null;
}

/** The stored state of one table (row-locked when `lock`), or null before its first run. */
export async function readStoredState(target: pg.ClientBase, id: string, lock: boolean): Promise<StoredState | null> {
  const r = await target.query(
    `SELECT config_sig, buckets, total_rows, total_hash::text AS total_hash, target_total_rows, target_total_hash::text AS target_total_hash,
            target_oid, tracked_since, last_equal_at, last_immediate_at, target_rows,
            octet_length(fingerprints) AS fp_len, octet_length(target_fingerprints) AS tfp_len
       FROM elara_sync.table_state WHERE table_name = $1 ${lock ? 'FOR UPDATE' : ''}`, [id]);
  const x = r.rows[0];
  if (!x) return null;
  const buckets = Number(x.buckets);
  const fp = async (column: string, len: number | null) => (len === null ? null : Fingerprints.fromBytes(buckets, await readBytes(target, id, column, Number(len))));
  return {
    configSig: x.config_sig,
    buckets,
    source: await fp('fingerprints', x.fp_len),
    target: await fp('target_fingerprints', x.tfp_len),
    sourceTotal: x.total_rows === null ? null : { rows: Number(x.total_rows), text: x.total_hash },
    targetTotal: x.target_total_rows === null ? null : { rows: Number(x.target_total_rows), text: x.target_total_hash },
    targetOid: x.target_oid === null ? null : Number(x.target_oid),
    trackedSince: x.tracked_since,
    lastEqualAt: x.last_equal_at,
    lastImmediateAt: x.last_immediate_at,
    targetRows: x.target_rows === null ? null : Number(x.target_rows),
  };
}

/**
 * A stored bytea read in 512 KiB slices: a bytea arrives as a hex string twice its size, and a
 * few MB of strings at once would show up in the process's peak memory.
 */
async function readBytes(target: pg.ClientBase, id: string, column: string, n: number): Promise<Buffer> {
  const out = Buffer.alloc(n);
  const slice = 512 * 1024;
  for (let off = 0; off < n; off += slice) {
    const r = await target.query(`SELECT substring(${column} FROM $2 FOR $3) AS s FROM elara_sync.table_state WHERE table_name = $1`, [id, off + 1, slice]);
    (r.rows[0].s as Buffer).copy(out, off);
  }
  return out;
}

export interface LogFold {
  /** Row-count delta and version xor of everything logged, for the table total. */
  rows: number;
  hi: number;
  lo: number;
  entries: number;
  lastAt: Date | null;
  /** Buckets the logged writes touched: they must be compared again (see detectChanges). */
  buckets: number[];
}

/**
 * Takes the table's target-log entries (deleting them unless `keep`) and folds them into `fp`
 * (when given): afterwards `fp` describes staging as the engine left it, immediate syncs included.
 */
export async function foldTargetLog(target: pg.ClientBase, id: string, buckets: number, fp: Fingerprints | null, keep: boolean): Promise<LogFold> {
  const source = keep
    ? `SELECT key_hash, version_xor, row_delta, at FROM elara_sync.target_log WHERE table_name = $1`
    : `DELETE FROM elara_sync.target_log WHERE table_name = $1 RETURNING key_hash, version_xor, row_delta, at`;
  const r = await target.query(
    `WITH d AS (${source}) SELECT (key_hash & ${buckets - 1})::int AS b, sum(row_delta)::int AS n, bit_xor(version_xor)::text AS x,
       count(*)::int AS entries, max(at) AS last FROM d GROUP BY 1`, [id]);
  const out: LogFold = { rows: 0, hi: 0, lo: 0, entries: 0, lastAt: null, buckets: [] };
  for (const row of r.rows) {
    out.buckets.push(row.b);
    const { hi, lo } = splitInt64(row.x);
    fp?.xorBucket(row.b, row.n, hi, lo);
    out.rows += row.n;
    out.hi = (out.hi ^ hi) >>> 0;
    out.lo = (out.lo ^ lo) >>> 0;
    out.entries += row.entries;
    if (!out.lastAt || row.last > out.lastAt) out.lastAt = row.last;
  }
  return out;
}

/** A total with a fold applied, as the int8 text PostgreSQL would print. */
export function applyFold(total: Total, fold: LogFold): Total {
  const v = BigInt.asUintN(64, BigInt(total.text)) ^ ((BigInt(fold.hi) << 32n) | BigInt(fold.lo));
  return { rows: total.rows + fold.rows, text: BigInt.asIntN(64, v).toString() };
}

export function totalOf(fp: Fingerprints): Total {
  const t = fp.total();
  const v = (BigInt(t.hi) << 32n) | BigInt(t.lo);
  return { rows: t.rows, text: BigInt.asIntN(64, v).toString() };
}

export interface StateToStore {
  id: string;
  display: string;
  configSig: string;
  source: Fingerprints;
  target: Fingerprints;
  sourceTotal: Total;
  targetTotal: Total;
  targetOid: number;
  sourceRows: number;
  targetRows: number;
  /** Staging was checked equal to production (no held rows) at this time, or null. */
  equalAt: Date | null;
  runId: number | null;
  lastImmediateAt: Date | null;
}

export async function writeState(target: pg.ClientBase, s: StateToStore): Promise<void> {
  await target.query(
    `INSERT INTO elara_sync.table_state (table_name, display, config_sig, buckets, fingerprints, target_fingerprints, source_rows, target_rows,
        last_equal_at, last_run_id, tracked_since, total_rows, total_hash, target_total_rows, target_total_hash, target_oid, last_immediate_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11, $12, $13, $14, $15, $16)
     ON CONFLICT (table_name) DO UPDATE SET display = EXCLUDED.display, config_sig = EXCLUDED.config_sig, buckets = EXCLUDED.buckets,
       fingerprints = EXCLUDED.fingerprints, target_fingerprints = EXCLUDED.target_fingerprints,
       source_rows = EXCLUDED.source_rows, target_rows = EXCLUDED.target_rows,
       last_equal_at = coalesce(EXCLUDED.last_equal_at, elara_sync.table_state.last_equal_at),
       last_run_id = EXCLUDED.last_run_id, tracked_since = coalesce(elara_sync.table_state.tracked_since, now()),
       total_rows = EXCLUDED.total_rows, total_hash = EXCLUDED.total_hash,
       target_total_rows = EXCLUDED.target_total_rows, target_total_hash = EXCLUDED.target_total_hash, target_oid = EXCLUDED.target_oid,
       last_immediate_at = greatest(EXCLUDED.last_immediate_at, elara_sync.table_state.last_immediate_at)`,
    [s.id, s.display, s.configSig, s.source.buckets, s.source.toBytes(), s.target.toBytes(), s.sourceRows, s.targetRows,
      s.equalAt, s.runId, s.sourceTotal.rows, s.sourceTotal.text, s.targetTotal.rows, s.targetTotal.text, s.targetOid, s.lastImmediateAt],
  );
}

/** Marks a table checked and unchanged on both sides (no other state changes). */
export async function markUnchanged(target: pg.ClientBase, id: string, equalAt: Date, runId: number | null, fold: LogFold, targetTotal: Total): Promise<void> {
  await target.query(
    `UPDATE elara_sync.table_state SET last_equal_at = $2, last_run_id = $3, target_total_rows = $4, target_total_hash = $5,
       last_immediate_at = greatest(last_immediate_at, $6::timestamptz) WHERE table_name = $1`,
    [id, equalAt, runId, targetTotal.rows, targetTotal.text, fold.lastAt]);
}
