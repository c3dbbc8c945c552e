// Public surface of the sync engine: what the backend and the elara-sync CLI use.
export { SyncError } from './errors.ts';
export type { TableRunResult, RunRecord, RunStatus, KeySyncRequest, KeySyncResult } from './types.ts';
export { syncKeys, type SyncKeysOptions } from './apply/sync-keys.ts';
export { runSync, type RunOptions, type RunResult, type ProgressEvent } from './engine/run.ts';
export { startReconcileLoop, type ReconcileLoop } from './engine/loop.ts';
export { verifySync, type VerifyResult, type TableVerifyResult } from './verify/verify.ts';
export { loadConfig, type SyncConfig } from './config.ts';
export { readRuns, readTableStates, type TableState } from './state/runs.ts';
export { redactUrl } from './engine/connect.ts';
export { withTransaction } from './engine/transaction.ts';
export type { TableConfig } from './catalog/introspect.ts';
// Shared with the backend, so each exists once: identifier quoting, duration parsing, URL redaction.
export { quoteIdent } from './catalog/introspect.ts';
export { parseDuration } from './config.ts';
export { scrubSecrets } from './redact.ts';
