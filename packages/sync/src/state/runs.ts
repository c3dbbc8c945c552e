import type pg from 'pg';
import type { RunRecord } from '../types.ts';

/** The newest run records from elara_sync.runs on the target; [] when no run has happened yet. */
export async function readRuns(_target: pg.Pool | pg.ClientBase, _limit = 20): Promise<RunRecord[]> {
  return [];
}
