// watch's position on the target: the last production commit (end LSN) applied there, written in
// the same transaction as the rows, so the position never runs ahead of (or behind) the data.
import type pg from 'pg';

export interface StreamState {
  lsn: string;
  sourceSystem: string;
  planSig: string;
  snapshotAt: Date;
  updatedAt: Date;
  lastCommitAt: Date | null;
  transactions: number;
  rows: number;
}

export async function readStreamState(target: pg.ClientBase | pg.Pool, slot: string): Promise<StreamState | null> {
  const r = await target.query(`SELECT lsn::text, source_system, plan_sig, snapshot_at, updated_at, last_commit_at, transactions::float8, rows::float8
    FROM elara_sync.stream_state WHERE slot_name = $1`, [slot]).catch((e) => {
    if ((e as { code?: string }).code === '42P01' || (e as { code?: string }).code === '3F000') return null;
    throw e;
  });
  const x = r?.rows[0];
  if (!x) return null;
  return {
    lsn: x.lsn, sourceSystem: x.source_system, planSig: x.plan_sig, snapshotAt: x.snapshot_at, updatedAt: x.updated_at,
    lastCommitAt: x.last_commit_at, transactions: Number(x.transactions), rows: Number(x.rows),
  };
}

/** Every stream recorded on a target (for status). */
export async function readStreamStates(target: pg.ClientBase | pg.Pool): Promise<Array<StreamState & { slot: string }>> {
  const r = await target.query(`SELECT slot_name, lsn::text, source_system, plan_sig, snapshot_at, updated_at, last_commit_at, transactions::float8, rows::float8
    FROM elara_sync.stream_state ORDER BY slot_name`).catch(() => null);
  return (r?.rows ?? []).map((x) => ({
    slot: x.slot_name, lsn: x.lsn, sourceSystem: x.source_system, planSig: x.plan_sig, snapshotAt: x.snapshot_at, updatedAt: x.updated_at,
    lastCommitAt: x.last_commit_at, transactions: Number(x.transactions), rows: Number(x.rows),
  }));
}

/** After a snapshot: the stream starts at the slot's consistent point. */
export async function resetStreamState(tx: pg.ClientBase, slot: string, s: { lsn: string; sourceSystem: string; planSig: string }): Promise<void> {
  // A snapshot compared everything: nothing waits for a retry any more.
  await tx.query(`DELETE FROM elara_sync.stream_retry WHERE slot_name = $1`, [slot]);
  await tx.query(`INSERT INTO elara_sync.stream_state (slot_name, lsn, source_system, plan_sig) VALUES ($1, $2::pg_lsn, $3, $4)
    ON CONFLICT (slot_name) DO UPDATE SET lsn = EXCLUDED.lsn, source_system = EXCLUDED.source_system, plan_sig = EXCLUDED.plan_sig,
      snapshot_at = now(), updated_at = now(), last_commit_at = NULL, transactions = 0, rows = 0`, [slot, s.lsn, s.sourceSystem, s.planSig]);
}

/** In the apply transaction, before commit. `transactions` 0: a heartbeat position (nothing applied). */
export async function advanceStreamState(tx: pg.ClientBase, slot: string, s: { lsn: string; lastCommitAt: Date | null; transactions: number; rows: number }): Promise<void> {
  const r = await tx.query(`UPDATE elara_sync.stream_state SET lsn = greatest(lsn, $2::pg_lsn), updated_at = now(),
      last_commit_at = coalesce($3, last_commit_at), transactions = transactions + $4, rows = rows + $5 WHERE slot_name = $1`,
  [slot, s.lsn, s.lastCommitAt, s.transactions, s.rows]);
  // Someone removed the row (watch --drop from another process): the stream must start over.
  if (r.rowCount === 0) throw Object.assign(new Error(`the stream position of ${slot} is gone from the target`), { code: 'ELARA_NO_POSITION' });
}

export async function deleteStreamState(target: pg.ClientBase | pg.Pool, slot: string): Promise<boolean> {
  await target.query(`DELETE FROM elara_sync.stream_retry WHERE slot_name = $1`, [slot]).catch(() => null);
  const r = await target.query(`DELETE FROM elara_sync.stream_state WHERE slot_name = $1`, [slot]).catch(() => null);
  return Boolean(r?.rowCount);
}

/**
 * Keys whose change watch held back (a QA row in the way, or a parent the stream has not brought
 * yet): retried with every batch and when idle, so a hold the next transactions do not touch
 * again still heals. Written in the batch's transaction.
 */
export async function readStreamRetry(target: pg.ClientBase, slot: string): Promise<Array<{ table: string; key: Record<string, string> }>> {
  const r = await target.query(`SELECT table_name, key FROM elara_sync.stream_retry WHERE slot_name = $1`, [slot]);
  return r.rows.map((x) => ({ table: x.table_name, key: x.key }));
}

export async function writeStreamRetry(tx: pg.ClientBase, slot: string, keys: Array<{ table: string; key: Record<string, string> }>): Promise<void> {
  await tx.query(`DELETE FROM elara_sync.stream_retry WHERE slot_name = $1`, [slot]);
  if (keys.length) {
    await tx.query(`INSERT INTO elara_sync.stream_retry (slot_name, table_name, key) SELECT $1, t, k FROM unnest($2::text[], $3::jsonb[]) AS x(t, k) ON CONFLICT DO NOTHING`,
      [slot, keys.map((k) => k.table), keys.map((k) => JSON.stringify(k.key))]);
  }
}
