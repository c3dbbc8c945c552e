// Staging's sequences (serial and identity columns of synced tables) are kept ahead of
// production's, so rows QA inserts in staging with default keys never take a key production
// will hand out later. Never moved backwards. setval is not transactional: a run that rolls back
// leaves a sequence it moved forward where it is, which is harmless.
import type pg from 'pg';
import type { TablePlan } from '../plan/table-plan.ts';
import { SyncError } from '../errors.ts';
import { describeDatabaseError } from './errors.ts';

export const DEFAULT_SEQUENCE_HEADROOM = 1_000_000_000;

/** The value staging's sequence must reach: production's plus the headroom, capped at half the remaining range. */
export function sequenceTarget(sourceLast: bigint, max: bigint, headroom: bigint): bigint {
  const room = (max - sourceLast) / 2n;
  return sourceLast + (headroom < room ? headroom : room);
}

/** Production's high-water mark of a column: its sequence's last value, or max(column) if the sequence is not readable. */
async function sourceHighWater(source: pg.ClientBase, plan: TablePlan, seq: TablePlan['sequences'][number]): Promise<bigint> {
  let last = 0n;
  if (seq.source) {
    await source.query('SAVEPOINT elara_seq');
    try {
      const r = await source.query(`SELECT last_value::text AS v, is_called FROM ${seq.source}`);
      last = BigInt(r.rows[0].v) - (r.rows[0].is_called ? 0n : 1n);
      await source.query('RELEASE SAVEPOINT elara_seq');
    } catch {
      await source.query('ROLLBACK TO SAVEPOINT elara_seq');
    }
  }
  const m = await source.query(`SELECT max(${'"' + seq.column.replace(/"/g, '""') + '"'})::text AS v FROM ${plan.only}${plan.id}`);
  const max = m.rows[0].v === null ? 0n : BigInt(m.rows[0].v);
  return max > last ? max : last;
}

export async function adjustSequences(source: pg.ClientBase, target: pg.ClientBase, plans: TablePlan[], headroom = DEFAULT_SEQUENCE_HEADROOM): Promise<void> {
  for (const plan of plans) {
    for (const seq of plan.sequences) {
      const high = await sourceHighWater(source, plan, seq);
      try {
        const r = await target.query(`SELECT s.last_value::text AS v, s.is_called, q.seqmax::text AS max, q.seqincrement > 0 AS up
            FROM ${seq.target} s, pg_sequence q WHERE q.seqrelid = $1::regclass`, [seq.target]);
        if (!r.rows[0].up) continue;
        const max = BigInt(r.rows[0].max) < seq.max ? BigInt(r.rows[0].max) : seq.max;
        const want = sequenceTarget(high, max, BigInt(headroom));
        const current = BigInt(r.rows[0].v) - (r.rows[0].is_called ? 0n : 1n);
        if (current < want) await target.query(`SELECT setval($1::regclass, $2::bigint, true)`, [seq.target, want.toString()]);
      } catch (e) {
        throw new SyncError('E_PERMISSION', `staging (target) refused to move sequence ${seq.target} of ${plan.display}.${seq.column} ahead of production: ${describeDatabaseError(e)}`,
          'grant the writer role USAGE, SELECT, UPDATE on the sequences of the synced tables (deploy/kubernetes/sql/staging-roles.sql)',
          { cause: e, table: plan.display, side: 'target' });
      }
    }
  }
}
