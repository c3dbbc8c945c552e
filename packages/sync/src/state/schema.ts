import type pg from 'pg';

// The engine's own schema on the target. Created on first use; every statement is idempotent and
// serialised by an advisory lock so two processes starting at once do not race on CREATE.
export const STATE_SCHEMA_VERSION = 5;
/** Serialises the engine's DDL on staging (state schema, tracking triggers) across processes. */
export const LOCK_DDL = 0x656c6172; // "elar"
/** Session-level lock held for a whole reconcile run: one run at a time per staging database. */
export const LOCK_RUN = 0x656c6131;
/** Held exclusively by a run while it applies, shared by immediate (keys) syncs: they wait for the run. */
export const LOCK_APPLY = 0x656c6132;
/** First half of the two-int transaction locks keyed appliers take per bucket of keys (engine/immediate.ts). */
export const LOCK_KEYS = 0x656c6b;

// CREATE SCHEMA checks the CREATE privilege on the database even with IF NOT EXISTS, and the
// least-privilege writer role has none: the schema is created only when it is missing.
// Version 2's tables (local_rows, edits) stay: tracking triggers of tables no longer synced may
// still write to them, and a missing table would make QA's writes fail.
const DDL = `
CREATE TABLE IF NOT EXISTS elara_sync.meta (version int NOT NULL);
CREATE TABLE IF NOT EXISTS elara_sync.runs (
  id bigserial PRIMARY KEY,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  status text NOT NULL CHECK (status IN ('running', 'ok', 'conflicts', 'error')),
  mode text NOT NULL DEFAULT 'run',
  duration_ms integer,
  error text,
  tables jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS runs_started_at ON elara_sync.runs (started_at DESC);
CREATE TABLE IF NOT EXISTS elara_sync.table_state (
  table_name text PRIMARY KEY,
  config_sig text NOT NULL,
  buckets integer NOT NULL,
  fingerprints bytea,
  source_rows bigint,
  target_rows bigint,
  last_equal_at timestamptz,
  last_run_id bigint,
  tracked_since timestamptz
);
ALTER TABLE elara_sync.table_state ADD COLUMN IF NOT EXISTS total_rows bigint, ADD COLUMN IF NOT EXISTS total_hash bigint,
  ADD COLUMN IF NOT EXISTS target_fingerprints bytea, ADD COLUMN IF NOT EXISTS target_total_rows bigint,
  ADD COLUMN IF NOT EXISTS target_total_hash bigint, ADD COLUMN IF NOT EXISTS target_oid bigint,
  ADD COLUMN IF NOT EXISTS last_immediate_at timestamptz, ADD COLUMN IF NOT EXISTS display text;
CREATE TABLE IF NOT EXISTS elara_sync.local_rows (
  table_name text NOT NULL,
  key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, key)
);
CREATE TABLE IF NOT EXISTS elara_sync.edits (
  table_name text NOT NULL,
  key_hash bigint NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS edits_table ON elara_sync.edits (table_name);
CREATE TABLE IF NOT EXISTS elara_sync.local_keys (
  table_name text NOT NULL,
  key text[] NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, key)
);
CREATE TABLE IF NOT EXISTS elara_sync.tombstones (
  table_name text NOT NULL,
  key_hash bigint NOT NULL,
  deleted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, key_hash)
);
CREATE TABLE IF NOT EXISTS elara_sync.vacated (
  table_name text NOT NULL,
  key text[] NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_name, key)
);
CREATE TABLE IF NOT EXISTS elara_sync.target_log (
  id bigserial PRIMARY KEY,
  table_name text NOT NULL,
  key_hash bigint NOT NULL,
  version_xor bigint NOT NULL,
  row_delta integer NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS target_log_table ON elara_sync.target_log (table_name);
CREATE TABLE IF NOT EXISTS elara_sync.stream_state (
  slot_name text PRIMARY KEY,
  lsn pg_lsn NOT NULL,
  source_system text NOT NULL,
  plan_sig text NOT NULL,
  snapshot_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  last_commit_at timestamptz,
  transactions bigint NOT NULL DEFAULT 0,
  rows bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS elara_sync.stream_retry (
  slot_name text NOT NULL,
  table_name text NOT NULL,
  key jsonb NOT NULL,
  held_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (slot_name, table_name, key)
);
`;

const ensured = new WeakSet<object>();

/** Creates the elara_sync schema on the target if needed (cached per pool or client). */
export async function ensureStateSchema(target: pg.Pool | pg.ClientBase): Promise<void> {
  if (ensured.has(target)) return;
  const exists = await target.query(`SELECT 1 FROM elara_sync.meta WHERE version >= $1`, [STATE_SCHEMA_VERSION]).then(
    (r) => r.rowCount! > 0,
    () => false,
  );
  if (!exists) {
    // One simple-protocol query, so it runs on one connection even when target is a pool.
    const hasSchema = (await target.query(`SELECT to_regnamespace('elara_sync') IS NOT NULL AS e`)).rows[0].e;
    await target.query(`BEGIN; SELECT pg_advisory_xact_lock(${LOCK_DDL}); ${hasSchema ? '' : 'CREATE SCHEMA IF NOT EXISTS elara_sync;'} ${DDL}
      DELETE FROM elara_sync.meta; INSERT INTO elara_sync.meta (version) VALUES (${STATE_SCHEMA_VERSION}); COMMIT;`)
      .catch(async (e) => {
        await target.query('ROLLBACK').catch(() => {});
        throw e;
      });
  }
  ensured.add(target);
}
