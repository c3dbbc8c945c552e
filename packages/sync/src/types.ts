// Terminology
// - source: the production database. Opened read-only, in one REPEATABLE READ READ ONLY snapshot per run.
// - target: the staging database. Every write happens there, all of a run in one transaction.
// - synced table: a table named in elara-sync.yml (or --tables) that has a primary key on both sides.
// - table plan: what every path knows about a synced table, compiled once from the config and both
//   catalogs (plan/table-plan.ts): columns, key, source query, unique indexes, FKs, sequences.
// - source query: the SELECT that reads a table from the source; transforms (per-column expressions)
//   and row filters live in it, so values that must not leave production never do.
// - apply: the one function (apply/apply.ts) that writes a set of source rows to the target in the
//   caller's transaction; reconcile, immediate sync and watch differ only in how they pick the rows.
// - bucket: a slice of a table's rows chosen by a hash of the primary key; the unit of comparison.
// - bucket fingerprint: count and xor of hashes of (key, xmin) for one bucket, kept for both sides.
//   xmin changes whenever a row is written, so an unchanged fingerprint means an unchanged bucket:
//   on the source, production's changes; on the target, anything that wrote to staging.
// - local row: a row created directly in staging (QA data), recorded by a trigger, never written
//   or deleted by the engine.
// - held row: a change the apply did not make, because a local row blocks it (same key, a unique
//   value, or it still references a row production deleted), reported by key.
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
  /** Keys (as text) of the first held rows (at most 100); `conflicts` counts them all. */
  conflictKeys?: string[];
  /** The same rows with why each was held back. */
  held?: Array<{ key: string; reason: string }>;
  /** What change detection found on each side, and what it cost. */
  checks?: { source: 'unchanged' | 'changed'; target: 'unchanged' | 'changed'; compared: 'none' | 'all' | 'changed buckets'; sourceMs: number; targetMs: number };
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
