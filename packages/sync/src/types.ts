// Terminology
// - source: the production database. Opened read-only, in one REPEATABLE READ READ ONLY snapshot per run.
// - target: the staging database. Every write happens there, each table's changes in one transaction.
// - synced table: a table named in elara-sync.yml (or --tables) that has a primary key on both sides.
// - source query: the SELECT that reads a table from the source; transforms (per-column expressions)
//   and row filters live in it, so values that must not leave production never do.
// - bucket: a slice of a table's rows chosen by a hash of the primary key; the unit of comparison.
// - bucket fingerprint: count and xor of hashes of (key, xmin) on the source for one bucket. xmin
//   changes whenever a row is written, so an unchanged fingerprint means an unchanged bucket.
// - local row: a row created directly in staging (QA data), recorded by a trigger, never deleted.
// - run: one reconcile of all synced tables, recorded in elara_sync.runs on the target.

export interface TableRunResult {
  table: string;
  sourceRows: number;
  targetRows: number;
  inserted: number;
  updated: number;
  deleted: number;
  unchanged: number;
  conflicts: number;
  durationMs: number;
  /** Keys (as text) of rows that could not be applied because a local staging row holds the key or a unique value. */
  conflictKeys?: string[];
  error?: string;
}

export type RunStatus = 'running' | 'ok' | 'conflicts' | 'error';

export interface RunRecord {
  id: number;
  startedAt: Date;
  finishedAt: Date | null;
  status: RunStatus;
  /** 'run' for a reconcile, 'keys' for an immediate sync of a few keys. */
  mode: string;
  durationMs: number | null;
  error: string | null;
  tables: TableRunResult[];
}

export interface KeySyncRequest {
  /** Table name as in the catalog, e.g. "User" or "public.User". */
  table: string;
  /** Primary-key values, one object per row, keyed by primary-key column name. */
  keys: Array<Record<string, unknown>>;
}

export interface KeySyncResult {
  table: string;
  upserted: number;
  deleted: number;
  unchanged: number;
}
