// The staging side of an erasure (DELETE /api/v2/auth/me): the outbox worker runs `sync_erasure`
// jobs through syncErasureToStaging. It is the engine's keys-scoped apply, as for a registration:
// keys that no longer exist in production are deleted from staging, in one staging transaction,
// except rows created in staging (QA data), and a delete a QA row still depends on is held back and
// reported. Log lines name ids only, never the email: the person is gone.
import type pg from 'pg';
import { quoteIdent, syncKeys, type KeySyncResult } from '@elara/sync';
import { describeError } from '../db/errors.ts';
import { engineOptions, type StagingSyncDeps } from './staging-sync.ts';

export interface ErasureRef {
  userId: string;
  organizationId: string;
}

export interface ErasureSyncResult {
  results: KeySyncResult[];
  /** Erased rows staging still holds ("User <id>", "Organization <id>"), because the engine held their delete. */
  held: string[];
}

/**
 * Deletes the erased user (and organization, when production deleted it too) from staging. The
 * organization's key is always passed: when it still exists in production it is upserted as is (a
 * no-op when unchanged), so the job needs to know nothing about how the erasure went.
 *
 * A held delete does not fail the job: retrying cannot help until someone removes the QA row, and
 * every reconcile run reports it again (by key, with why) until then. It is logged as a warning
 * naming the held key and counted as `held`. Connection or apply failures throw; the worker retries.
 */
export async function syncErasureToStaging(deps: StagingSyncDeps, ref: ErasureRef): Promise<ErasureSyncResult> {
  const log = deps.logger.child({ userId: ref.userId, organizationId: ref.organizationId });
  log.info(`[DB Sync] Starting immediate sync for erasure: ${ref.userId}`);
  const end = deps.metrics.immediateSyncDuration.startTimer();
  let results: KeySyncResult[];
  try {
    results = await syncKeys(deps.prodPool, deps.stagingPool, [
      { table: 'Organization', keys: [{ id: ref.organizationId }] },
      { table: 'User', keys: [{ id: ref.userId }] },
    ], engineOptions(deps));
  } catch (err) {
    end();
    deps.metrics.immediateSyncTotal.inc({ result: 'failure' });
    deps.metrics.erasureSyncTotal.inc({ result: 'failure' });
    log.error({ error: describeError(err) }, `[DB Sync] ✗ Erasure sync failed for: ${ref.userId} (will retry)`);
    throw err;
  }
  end();
  deps.metrics.immediateSyncTotal.inc({ result: 'success' });
  const conflicts = results.reduce((n, r) => n + ((r as { conflicts?: number }).conflicts ?? 0), 0);
  const held = conflicts > 0 ? await heldKeys(deps, ref) : [];
  if (held.length > 0 || conflicts > 0) {
    deps.metrics.erasureSyncTotal.inc({ result: 'held' });
    log.warn({ conflicts, held, results },
      `[DB Sync] ⚠ Erasure held in staging: ${held.length > 0 ? held.join(', ') : `${conflicts} row(s)`} still there, `
      + 'because rows created in staging (QA data) reference it; delete or repoint them, and the next reconcile run removes it '
      + '(npx elara-sync status lists the held keys and why)');
    return { results, held };
  }
  deps.metrics.erasureSyncTotal.inc({ result: 'success' });
  log.info({ results }, `[DB Sync] ✓ Erasure synced to staging: ${ref.userId}`);
  return { results, held };
}

/** The erased keys staging still has: in staging, and no longer in production. */
async function heldKeys(deps: StagingSyncDeps, ref: ErasureRef): Promise<string[]> {
  const probe = `SELECT 'User' AS t, id::text FROM ${quoteIdent('User')} WHERE id = $1
       UNION ALL SELECT 'Organization', id::text FROM ${quoteIdent('Organization')} WHERE id = $2`;
  const [inStaging, inProduction] = await Promise.all([
    deps.stagingPool.query<{ t: string; id: string }>(probe, [ref.userId, ref.organizationId]),
    deps.prodPool.query<{ t: string; id: string }>(probe, [ref.userId, ref.organizationId]),
  ]).catch((err) => {
    // Only the wording of the warning depends on it; the sync itself has committed.
    deps.logger.warn({ error: describeError(err) }, '[DB Sync] could not look up which erased keys staging kept');
    return [{ rows: [] }, { rows: [] }];
  });
  const live = new Set(inProduction.rows.map((r) => `${r.t} ${r.id}`));
  return inStaging.rows.map((r) => `${r.t} ${r.id}`).filter((k) => !live.has(k));
}

/** Whether production still has the user (a registration job checks this under the user's lock). */
export async function userExists(pool: pg.Pool, userId: string): Promise<boolean> {
  return ((await pool.query(`SELECT 1 FROM ${quoteIdent('User')} WHERE id = $1`, [userId])).rowCount ?? 0) > 0;
}

/** First key of the per-user sync locks (the second is hashtext(user id)); the liveness locks use another. */
const USER_SYNC_LOCK_KEY = 720_301_520;
/** A holder is a sync job bounded by the staging timeouts; waiting longer means something is stuck. */
const USER_SYNC_LOCK_WAIT_MS = 60_000;

/**
 * Runs fn while holding a production advisory lock for one user, so the sync jobs of one user run
 * one at a time. Without it a registration sync that read production just before the erasure
 * committed could apply after the erasure sync deleted the staging rows, and bring them back
 * (immediate syncs share the engine's staging lock, and each reads its own snapshot). A job that
 * takes the lock reads production after the other one finished, so the last apply is always the
 * one that saw the erasure. If the lock's connection breaks, PostgreSQL drops the lock; fn goes on.
 */
export async function withUserSyncLock<T>(pool: pg.Pool, userId: string, fn: () => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A connection whose lock or unlock failed is not returned to the pool with a lock or setting on it.
  let broken = false;
  try {
    try {
      await client.query(`SET lock_timeout = ${USER_SYNC_LOCK_WAIT_MS}`);
      await client.query('SELECT pg_advisory_lock($1, hashtext($2))', [USER_SYNC_LOCK_KEY, userId]);
      await client.query('RESET lock_timeout');
    } catch (err) {
      broken = true;
      throw err;
    }
    try {
      return await fn();
    } finally {
      await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [USER_SYNC_LOCK_KEY, userId]).catch(() => { broken = true; });
    }
  } finally {
    client.release(broken);
  }
}
