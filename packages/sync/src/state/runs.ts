import type pg from 'pg';
import type { RunRecord, RunStatus, TableRunResult } from '../types.ts';

interface RunRow {
  id: string;
  started_at: Date;
  finished_at: Date | null;
  status: RunStatus;
  mode: string;
  duration_ms: number | null;
  error: string | null;
  tables: TableRunResult[];
}

const toRecord = (r: RunRow): RunRecord => ({
  id: Number(r.id),
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  status: r.status,
  mode: r.mode,
  durationMs: r.duration_ms,
  error: r.error,
  tables: r.tables,
});

/** The newest run records from elara_sync.runs on the target; [] when no run has happened yet. */
export async function readRuns(target: pg.Pool | pg.ClientBase, limit = 20): Promise<RunRecord[]> {
  const exists = await target.query(`SELECT to_regclass('elara_sync.runs') IS NOT NULL AS e`);
  if (!exists.rows[0].e) return [];
  const r = await target.query<RunRow>(
    `SELECT id, started_at, finished_at, status, mode, duration_ms, error, tables FROM elara_sync.runs ORDER BY id DESC LIMIT $1`,
    [limit],
  );
  return r.rows.map(toRecord);
}

export interface TableState {
  table: string;
  sourceRows: number | null;
  targetRows: number | null;
  /** When a run last checked both sides and found staging equal to production (no rows held back). */
  lastEqualAt: Date | null;
  /** When an immediate sync last wrote rows of this table to staging. */
  lastImmediateAt: Date | null;
  lastRunId: number | null;
}

/** Per-table state written by the last successful run: when staging last equalled production. */
export async function readTableStates(target: pg.Pool | pg.ClientBase): Promise<TableState[]> {
  const exists = await target.query(`SELECT to_regclass('elara_sync.table_state') IS NOT NULL AS e`);
  if (!exists.rows[0].e) return [];
  const hasLog = (await target.query(`SELECT to_regclass('elara_sync.target_log') IS NOT NULL AS e`)).rows[0].e;
  const r = await target.query(
    `SELECT coalesce(s.display, s.table_name) AS table_name, s.source_rows, s.target_rows, s.last_equal_at, s.last_run_id,
            ${hasLog ? `greatest(s.last_immediate_at, (SELECT max(at) FROM elara_sync.target_log l WHERE l.table_name = s.table_name))` : 'NULL::timestamptz'} AS last_immediate_at
       FROM elara_sync.table_state s ORDER BY 1`,
  );
  return r.rows.map((x) => ({
    table: x.table_name,
    lastImmediateAt: x.last_immediate_at,
    sourceRows: x.source_rows === null ? null : Number(x.source_rows),
    targetRows: x.target_rows === null ? null : Number(x.target_rows),
    lastEqualAt: x.last_equal_at,
    lastRunId: x.last_run_id === null ? null : Number(x.last_run_id),
  }));
}

export async function startRun(target: pg.ClientBase, mode: string): Promise<number> {
  // Only one run holds the run lock, so any other 'running' record is a run that died.
  await target.query(
    `UPDATE elara_sync.runs SET status = 'error', finished_at = coalesce(finished_at, now()),
       error = 'interrupted: the process was killed or lost its connection; nothing it had not committed was applied'
     WHERE status = 'running' AND mode = 'run'`,
  );
  const r = await target.query(`INSERT INTO elara_sync.runs (status, mode) VALUES ('running', $1) RETURNING id`, [mode]);
  return Number(r.rows[0].id);
}

export async function finishRun(
  target: pg.ClientBase,
  id: number,
  status: RunStatus,
  durationMs: number,
  tables: TableRunResult[],
  error: string | null,
): Promise<void> {
  await target.query(
    `UPDATE elara_sync.runs SET status = $2, finished_at = now(), duration_ms = $3, tables = $4::jsonb, error = $5 WHERE id = $1`,
    [id, status, durationMs, JSON.stringify(tables), error],
  );
}
