// The seed's immediate sync functions, kept by name. They no longer run fire-and-forget after the
// response: the outbox worker (worker.ts) calls them for a job committed with the registration.
// The upsert itself is the sync engine's (`syncKeys` from @elara/sync), one implementation shared
// with the reconcile job: it reads the rows by key from production and applies them to staging in
// one staging transaction, parents first, only when changed.
import type pg from 'pg';
import { isTlsError, syncKeys, type KeySyncResult, type ResolvedTarget, type TableConfig } from '@elara/sync';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { describeError } from '../db/errors.ts';

export interface StagingSyncDeps {
  prodPool: pg.Pool;
  stagingPool: pg.Pool;
  logger: Logger;
  metrics: Metrics;
  /** statement_timeout for the engine's staging transaction. */
  statementTimeoutMs?: number;
  /** The configured tables (elara-sync.yml): their transforms and row filters apply to immediate syncs too. */
  tables?: TableConfig[];
  /** The staging target of elara-sync.yml: its rules (anonymize) and subset apply too. */
  target?: ResolvedTarget;
}

/** The engine options every immediate sync passes (registration and erasure alike). */
export const engineOptions = (deps: StagingSyncDeps) => ({
  ...(deps.statementTimeoutMs ? { statementTimeoutMs: deps.statementTimeoutMs } : {}),
  ...(deps.tables ? { tables: deps.tables } : {}),
  ...(deps.target ? { target: deps.target } : {}),
});

export interface RegistrationRef {
  organizationId: string;
  userId: string;
  email: string;
  organizationName: string;
}

export async function syncOrganizationToStaging(deps: StagingSyncDeps, org: { id: string; name: string }): Promise<KeySyncResult[]> {
  const r = await syncKeys(deps.prodPool, deps.stagingPool, [{ table: 'Organization', keys: [{ id: org.id }] }], engineOptions(deps));
  deps.logger.info({ organizationId: org.id }, `[DB Sync] ✓ Organization synced to staging: ${org.name}`);
  return r;
}

export async function syncUserToStaging(deps: StagingSyncDeps, user: { id: string; email: string }): Promise<KeySyncResult[]> {
  const r = await syncKeys(deps.prodPool, deps.stagingPool, [{ table: 'User', keys: [{ id: user.id }] }], engineOptions(deps));
  deps.logger.info({ userId: user.id }, `[DB Sync] ✓ User synced to staging: ${user.email}`);
  return r;
}

/**
 * Organization first (parent), then user (child) — in ONE staging transaction, so staging never
 * holds the user without its organization. Throws on failure (the worker retries); counts and logs
 * every attempt. Never called on the request path.
 */
export async function syncRegistrationToStaging(deps: StagingSyncDeps, reg: RegistrationRef): Promise<KeySyncResult[]> {
  const log = deps.logger.child({ organizationId: reg.organizationId, userId: reg.userId });
  log.info(`[DB Sync] Starting immediate sync for registration: ${reg.email}`);
  const end = deps.metrics.immediateSyncDuration.startTimer();
  try {
    const results = await syncKeys(deps.prodPool, deps.stagingPool, [
      { table: 'Organization', keys: [{ id: reg.organizationId }] },
      { table: 'User', keys: [{ id: reg.userId }] },
    ], engineOptions(deps));
    end();
    deps.metrics.immediateSyncTotal.inc({ result: 'success' });
    // A QA row created directly in staging can hold the same key or email; the engine leaves it.
    const conflicts = results.reduce((n, r) => n + ((r as { conflicts?: number }).conflicts ?? 0), 0);
    if (conflicts > 0) log.warn({ conflicts }, `[DB Sync] staging already holds a local row with this key or email; left as is: ${reg.email}`);
    log.info({ results }, `[DB Sync] ✓ Organization synced to staging: ${reg.organizationName}`);
    log.info(`[DB Sync] ✓ User synced to staging: ${reg.email}`);
    log.info(`[DB Sync] ✓ Registration sync completed for: ${reg.email}`);
    return results;
  } catch (err) {
    end();
    deps.metrics.immediateSyncTotal.inc({ result: 'failure' });
    log.error({ error: describeError(err) }, `[DB Sync] ✗ Registration sync failed for: ${reg.email} (will retry)`);
    throw err;
  }
}

// What may be logged of an error (no query, parameters, detail or values): shared with the API.
export { describeError } from '../db/errors.ts';

const CONNECTIVITY_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH',
  'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', '57P01', '57P02', '57P03', '53300', '57014']);

/** True when staging could not be reached or answered too slowly (as opposed to a data problem). */
export function isConnectivityError(err: unknown, depth = 0): boolean {
  if (!(err instanceof Error) || depth > 5) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTIVITY_CODES.has(code) || code.startsWith('08'))) return true;
  // 55000 as a FATAL at connect time: the database refuses connections (ALLOW_CONNECTIONS false, as
  // in a maintenance window or `npm run staging:down`). Without this the recovery probe never starts
  // and waiting jobs sit out their exponential backoff after staging is back.
  if (code === '55000' && (err as { severity?: unknown }).severity === 'FATAL') return true;
  if (/timeout|timed out|Connection terminated|connect ECONNREFUSED|socket hang up/i.test(err.message)) return true;
  // A TLS failure (e.g. staging's certificate rotated before the CA file was): the recovery probe
  // keeps trying, and the CA file is read again for each connection, so the fix needs no restart.
  if (isTlsError(err)) return true;
  if (err instanceof AggregateError) return err.errors.some((e) => isConnectivityError(e, depth + 1));
  return isConnectivityError(err.cause, depth + 1);
}
