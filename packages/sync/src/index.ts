// Public surface of the sync engine: what the backend and the elara-sync CLI use.
export { SyncError, SYNC_ERRORS, type SyncErrorCode, type Side } from './errors.ts';
export type { TableRunResult, RunRecord, RunStatus, KeySyncRequest, KeySyncResult } from './types.ts';
export { syncKeys, type SyncKeysOptions } from './engine/immediate.ts';
export { runSync, type RunOptions, type RunResult, type ProgressEvent } from './engine/run.ts';
export { startReconcileLoop, type ReconcileLoop } from './engine/loop.ts';
export { verifySync, type VerifyResult, type TableVerifyResult } from './verify/verify.ts';
export { loadConfig, parseConfig, parseDuration, DEFAULT_TABLES, type SyncConfig } from './config.ts';
export { readRuns, readTableStates, type TableState } from './state/runs.ts';
export { redactUrl, describeUrl, scrubSecrets } from './redact.ts';
export { connect } from './engine/connect.ts';
export { withTransaction } from './engine/transaction.ts';
// Shared with the backend, so each exists once: identifier quoting, duration parsing, URL redaction.
export { quoteIdent } from './catalog/introspect.ts';
export { runDoctor, formatDoctorReport, type DoctorResult, type DoctorCheck } from './doctor/index.ts';
// `elara-sync watch`: its slot and publication names, its status, and the metrics' names.
export { streamName, slotName, publicationName } from './watch/names.ts';
export type { StreamStatus, StreamPhase } from './watch/types.ts';
export { STREAM_METRICS, type StreamMetric } from './watch/metrics.ts';
export type { TableConfig, TablePlan } from './plan/table-plan.ts';
export { resolveTarget, maskOptions, maskFromKey, expandUrl, urlVariables, type ResolvedTarget, type TargetConfig, type Mask } from './engine/targets.ts';
export { RULES, type Rule, type RuleName } from './sql/rules.ts';
// Every PostgreSQL connection of the project (backend pools, worker, migrations, engine, doctor):
// libpq's sslmode semantics, PGSSL* variables, clear TLS errors (docs/operations.md#tls).
export { createClient, createPool, pgConfig, tlsStatus, loadTlsOptions, type ConnectOptions, type TlsStatus } from './tls/client.ts';
export { resolveTlsSettings, applyTlsEnv, describeTls, plaintextRisk, refusedInProduction, allowsPlaintext, isLoopbackHost, encrypts, TlsConfigError, type TlsSettings, type SslMode } from './tls/settings.ts';
export { DatabaseTlsError, isTlsError } from './tls/errors.ts';
// Real-time sync over logical replication (`elara-sync watch`).
export { startWatch, dropStream, type WatchOptions, type WatchEvent, type WatchHandle } from './watch/watch.ts';
export { readStreamStates, type StreamState } from './state/stream.ts';
