// The outbox worker: graphile-worker on the production database runs `sync_registration` jobs,
// which call syncRegistrationToStaging. Delivery is at-least-once; the apply is idempotent.
//
// Two additions to graphile-worker's defaults:
// - Recovery probe. Failed jobs back off exponentially (exp(min(attempts,10)) s). While staging is
//   unreachable we probe it every SYNC_PROBE_INTERVAL_MS; once it answers, waiting jobs are
//   rescheduled to run now, so a backlog drains seconds after staging returns, not minutes.
// - Dead-worker sweep. graphile-worker (OSS) leaves a crashed process's locked jobs for 4 hours.
//   Each of our worker pools holds a PostgreSQL advisory lock named after its id (the `locked_by`
//   of the jobs it takes) on a connection of its own; PostgreSQL drops the lock the moment that
//   connection ends, e.g. when the process is killed. Every second, jobs whose locker holds no such
//   lock (after a few seconds of grace, for a pool that has just started) are released, so another
//   process picks them up within seconds. A process that hangs with its connection open is caught
//   by the older rule: our task is bounded by the staging timeouts, so a sync job locked longer than
//   SYNC_STALE_LOCK_SECONDS is released too.
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { z } from 'zod';
import { Logger as GraphileLogger, makeWorkerUtils, run, type Runner, type WorkerEvents, type WorkerUtils } from 'graphile-worker';
import { createClient, createPool, maskOptions, syncKeys } from '@elara/sync';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { createDatabase } from '../db/client.ts';
import { removeRegistrationJobs, SYNC_ERASURE_TASK, SYNC_REGISTRATION_TASK, SYNC_TASKS } from './outbox.ts';
import { describeError, isConnectivityError, syncRegistrationToStaging } from './staging-sync.ts';
import { syncErasureToStaging, userExists, withUserSyncLock } from './erasure-sync.ts';

const payloadSchema = z.object({
  organizationId: z.uuid(),
  userId: z.uuid(),
  email: z.string(),
  organizationName: z.string(),
});
const erasurePayloadSchema = z.object({ userId: z.uuid(), organizationId: z.uuid() });

/** First key of the liveness advisory locks (the second is hashtext(pool id)); any constant works. */
const LIVENESS_LOCK_KEY = 720_301_519;
/** A pool's lock is taken just after it starts; its jobs are not judged before this many seconds. */
const LIVENESS_GRACE_SECONDS = 3;
const SWEEP_INTERVAL_MS = 1000;

export interface SyncWorker {
  /** Graceful: stops taking jobs and waits for running ones. */
  stop(): Promise<void>;
}

export function graphileLogger(logger: Logger): GraphileLogger {
  return new GraphileLogger((scope) => (level, message) => {
    const meta = { component: 'graphile-worker', workerId: scope.workerId, taskIdentifier: scope.taskIdentifier, jobId: scope.jobId };
    if (level === 'error') logger.error(meta, message);
    else if (level === 'warning') logger.warn(meta, message);
    else logger.debug(meta, message);
  });
}

export async function startSyncWorker(deps: {
  config: Config;
  stagingPool: pg.Pool;
  logger: Logger;
  metrics: Metrics;
}): Promise<SyncWorker> {
  const { config, stagingPool, metrics } = deps;
  const logger = deps.logger.child({ component: 'sync-worker' });
  // Its own small production pool: the worker (job bookkeeping, LISTEN, the engine's source reads)
  // can never take the connections API requests need, nor the other way round.
  // graphile-worker gets this pool (never a connection string), so its connections use TLS as the URL says.
  const prodPool = createPool(config.databaseUrl, {
    // Per running job: the engine's source transaction and the per-user lock; plus graphile-worker's own.
    max: config.sync.concurrency * 3 + 2,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 60_000,
    keepAlive: true,
    application_name: 'elara-sync-worker',
    // An anonymized staging target's rules run in production's source query: its sessions carry
    // the mask key's pads in their startup options (never in SQL text or logs).
    ...(config.targets.staging?.mask ? { options: maskOptions(config.targets.staging.mask) } : {}),
  }, { label: 'production', setting: 'DATABASE_URL' });
  prodPool.on('error', (err) => logger.error({ error: describeError(err) }, 'worker pool: idle client error'));
  prodPool.on('connect', (client) => client.on('error', () => {}));
  const glog = graphileLogger(deps.logger);
  const db = createDatabase(prodPool);
  const syncDeps = () => ({
    prodPool, stagingPool, logger: deps.logger, metrics, statementTimeoutMs: config.staging.statementTimeoutMs, tables: [...config.syncConfig.tables],
    target: config.targets.staging ?? undefined,
  });
  let utils: WorkerUtils;
  try {
    utils = await makeWorkerUtils({ pgPool: prodPool, logger: glog });
  } catch (err) {
    await prodPool.end();
    throw err;
  }
  let stopping = false;
  let probing = false;

  // The liveness connection: holds one advisory lock per running worker pool of this process.
  const livePools = new Set<string>();
  let liveness: pg.Client | null = null;
  const connectLiveness = async () => {
    const c = createClient(config.databaseUrl, { keepAlive: true, application_name: 'elara-sync-worker-liveness' }, { label: 'production', setting: 'DATABASE_URL' });
    c.on('error', (err) => {
      if (stopping || liveness !== c) return;
      liveness = null;
      logger.warn({ error: describeError(err) }, '[DB Sync] worker liveness connection lost; reconnecting');
    });
    await c.connect();
    for (const id of livePools) await c.query('SELECT pg_try_advisory_lock($1, hashtext($2))', [LIVENESS_LOCK_KEY, id]);
    liveness = c;
  };
  const holdLiveness = async (poolId: string) => {
    livePools.add(poolId);
    if (!liveness) await connectLiveness();
    else await liveness.query('SELECT pg_try_advisory_lock($1, hashtext($2))', [LIVENESS_LOCK_KEY, poolId]);
  };
  const dropLiveness = async (poolId: string) => {
    livePools.delete(poolId);
    await liveness?.query('SELECT pg_advisory_unlock($1, hashtext($2))', [LIVENESS_LOCK_KEY, poolId]).catch(() => {});
  };

  const releaseStaleLocks = async () => {
    if (!liveness && livePools.size > 0 && !stopping) await connectLiveness();
    const { rows } = await prodPool.query<{ locked_by: string }>(
      `SELECT DISTINCT j.locked_by FROM graphile_worker.jobs j
        WHERE j.task_identifier = ANY($1::text[]) AND j.locked_by IS NOT NULL
          AND (j.locked_at < now() - make_interval(secs => $2)
               OR (j.locked_at < now() - make_interval(secs => $3)
                   AND NOT EXISTS (SELECT 1 FROM pg_locks l
                                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                                      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                      AND l.classid = $4::int::oid AND l.objid = hashtext(j.locked_by)::oid)))`,
      [SYNC_TASKS, config.sync.staleLockSeconds, LIVENESS_GRACE_SECONDS, LIVENESS_LOCK_KEY]);
    const dead = rows.map((r) => r.locked_by).filter((id) => !livePools.has(id));
    if (dead.length > 0) {
      await utils.forceUnlockWorkers(dead);
      // Wake idle workers (ours and other processes') now instead of at their next poll.
      await prodPool.query(`SELECT pg_notify('jobs:insert', json_build_object('count', $1::int)::text)`, [dead.length]);
      logger.warn({ workers: dead.length }, '[DB Sync] released sync jobs locked by workers that stopped (process gone or not responding)');
    }
  };

  const retryWaitingNow = async () => {
    const { rows } = await prodPool.query<{ id: string }>(
      `SELECT id::text FROM graphile_worker.jobs
        WHERE task_identifier = ANY($1::text[]) AND locked_at IS NULL
          AND attempts > 0 AND attempts < max_attempts AND run_at > now()`,
      [SYNC_TASKS]);
    if (rows.length > 0) {
      await utils.rescheduleJobs(rows.map((r) => r.id), { runAt: new Date() });
      // Wake idle workers now instead of at their next poll (graphile-worker's own channel).
      await prodPool.query(`SELECT pg_notify('jobs:insert', json_build_object('count', $1::int)::text)`, [rows.length]);
      logger.info({ jobs: rows.length }, '[DB Sync] staging reachable again; retrying waiting sync jobs now');
    }
  };

  const startProbe = () => {
    if (probing || stopping) return;
    probing = true;
    const tick = async () => {
      if (stopping) { probing = false; return; }
      try {
        await stagingPool.query('SELECT 1');
        probing = false;
        await retryWaitingNow();
      } catch {
        setTimeout(() => void tick(), config.sync.probeIntervalMs).unref();
      }
    };
    setTimeout(() => void tick(), config.sync.probeIntervalMs).unref();
  };

  let sweepFailing = false;
  const sweep = () => releaseStaleLocks().then(() => { sweepFailing = false; }, (err) => {
    // Production unreachable: say so once, not every second.
    if (!sweepFailing && !stopping) logger.warn({ error: describeError(err) }, '[DB Sync] dead-worker sweep failed; retrying every second');
    sweepFailing = true;
  });
  await sweep();
  const sweepTimer = setInterval(() => void sweep(), SWEEP_INTERVAL_MS);
  sweepTimer.unref();

  const startRunner = async () => {
    const events: WorkerEvents = new EventEmitter();
    const pools: Promise<void>[] = [];
    events.on('pool:create', ({ workerPool }) => {
      pools.push(holdLiveness(workerPool.id).catch((err) => logger.warn({ error: describeError(err) }, '[DB Sync] could not take the worker liveness lock')));
      workerPool.promise.finally(() => void dropLiveness(workerPool.id));
    });
    const r = await runOnce(events);
    await Promise.all(pools);
    return r;
  };
  const runOnce = (events: WorkerEvents) => run({
    events,
    pgPool: prodPool,
    concurrency: config.sync.concurrency,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: glog,
    // Batched completion (delay 0) retries a failed "mark done/failed" with backoff; unbatched,
    // graphile-worker 0.17 drops a connection error there as an unhandled rejection.
    preset: { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
    taskList: {
      [SYNC_REGISTRATION_TASK]: async (payload) => {
        const ref = payloadSchema.parse(payload);
        // Test-only fault injection: die while holding the job's lock.
        if (config.failpoint === 'in_sync_job') process.kill(process.pid, 'SIGKILL');
        try {
          // One user's sync jobs run one at a time (see withUserSyncLock): an erasure is never undone.
          await withUserSyncLock(prodPool, ref.userId, async () => {
            // Erased since it was enqueued: its erasure job takes care of staging, and the payload's
            // email must not reach the log after the person asked to be forgotten.
            if (!(await userExists(prodPool, ref.userId))) {
              logger.info({ userId: ref.userId }, `[DB Sync] Registration sync skipped, the user was erased: ${ref.userId}`);
              return;
            }
            await syncRegistrationToStaging(syncDeps(), ref);
          });
        } catch (err) {
          if (isConnectivityError(err)) startProbe();
          throw err;
        }
      },
      [SYNC_ERASURE_TASK]: async (payload) => {
        const ref = erasurePayloadSchema.parse(payload);
        try {
          await withUserSyncLock(prodPool, ref.userId, async () => {
            // A registration job that was running when the erasure committed (so it was not removed
            // then) may be waiting to retry now; it carries the email and has nothing to deliver.
            await db.execute(removeRegistrationJobs(ref.userId));
            await syncErasureToStaging(syncDeps(), ref);
          });
        } catch (err) {
          if (isConnectivityError(err)) startProbe();
          throw err;
        }
      },
    },
  });
  let runner: Runner = await startRunner();
  // If graphile-worker gives up (e.g. production unreachable for long), start it again: jobs it
  // held are released by the dead-worker sweep (its pool gives up its liveness lock) and re-run.
  const supervise = (r: Runner) => {
    r.promise.then(() => {}, (err) => {
      if (stopping) return;
      logger.error({ error: describeError(err) }, '[DB Sync] outbox worker stopped unexpectedly; restarting in 1 s');
      setTimeout(() => {
        if (stopping) return;
        startRunner().then((next) => { runner = next; supervise(next); },
          (e) => { logger.error({ error: describeError(e) }, '[DB Sync] outbox worker restart failed'); supervise(r); });
      }, 1000).unref();
    });
  };
  supervise(runner);
  logger.info({ concurrency: config.sync.concurrency }, '[DB Sync] outbox worker started');
  // Warm the engine's catalog (and check staging's schema) now, not on the first registration.
  syncKeys(prodPool, stagingPool, [{ table: 'Organization', keys: [] }, { table: 'User', keys: [] }],
    { statementTimeoutMs: config.staging.statementTimeoutMs, tables: [...config.syncConfig.tables], target: config.targets.staging ?? undefined })
    .catch((err) => {
      logger.warn({ error: describeError(err) }, '[DB Sync] staging is not ready at start-up; sync jobs will retry');
      if (isConnectivityError(err)) startProbe();
    });

  return {
    async stop() {
      stopping = true;
      clearInterval(sweepTimer);
      await runner.stop();
      await utils.release();
      await liveness?.end().catch(() => {});
      await prodPool.end();
    },
  };
}
