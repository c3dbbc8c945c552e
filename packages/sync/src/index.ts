// Public surface of the sync engine: what the backend and the elara-sync CLI use.
export { SyncError } from './errors.ts';
export type { TableRunResult, RunRecord, RunStatus, KeySyncRequest, KeySyncResult } from './types.ts';
export { syncKeys } from './apply/sync-keys.ts';
export { readRuns } from './state/runs.ts';
