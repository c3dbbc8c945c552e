// Errors with a stable code, a message that says what failed and on which side (never a row value
// or a password), and a hint that says what to do. One table of codes (as fastify's lib/errors.js):
// docs/errors.md lists exactly these, and a test checks that it does.

export const SYNC_ERRORS = {
  E_CONFIG: { exit: 2, summary: 'elara-sync.yml or the flags are invalid' },
  E_CONNECT_SOURCE: { exit: 2, summary: 'production cannot be reached or refused the login' },
  E_CONNECT_TARGET: { exit: 2, summary: 'staging cannot be reached or refused the login' },
  E_SAME_DATABASE: { exit: 2, summary: 'source and target are the same database' },
  E_PRODUCTION_TARGET: { exit: 2, summary: 'the target is marked as production' },
  E_NO_PRIMARY_KEY: { exit: 2, summary: 'a synced table has no primary key' },
  E_SCHEMA_MISMATCH: { exit: 2, summary: "the two sides' schemas differ in a way that would change values" },
  E_CONFLICT: { exit: 1, summary: 'rows held back: QA rows in staging block them' },
  E_SOURCE: { exit: 2, summary: 'production rejected the source query (a transform or filter)' },
  E_LOCKED: { exit: 2, summary: 'a lock could not be obtained in time' },
  E_TIMEOUT: { exit: 2, summary: 'a statement timed out' },
  E_APPLY: { exit: 2, summary: 'staging rejected a write' },
  E_PERMISSION: { exit: 2, summary: 'a role lacks a privilege' },
  E_VERIFY: { exit: 2, summary: 'verify could not compare' },
  E_BAD_KEY: { exit: 2, summary: 'syncKeys was given a key without all primary-key columns' },
  E_WAL_LEVEL: { exit: 2, summary: 'production cannot stream changes: wal_level is not logical' },
  E_STREAM: { exit: 2, summary: 'the change stream (replication slot) failed or is used by another watch' },
  E_INTERNAL: { exit: 2, summary: 'an unexpected error (a bug)' },
} as const;

export type SyncErrorCode = keyof typeof SYNC_ERRORS;
export type Side = 'source' | 'target';

export class SyncError extends Error {
  readonly code: SyncErrorCode;
  readonly hint: string;
  readonly table?: string;
  /** Which database raised it, when one did. */
  readonly side?: Side;

  constructor(code: SyncErrorCode, message: string, hint: string, options?: { cause?: unknown; table?: string; side?: Side }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SyncError';
    this.code = code;
    this.hint = hint;
    this.table = options?.table;
    this.side = options?.side;
  }
}
