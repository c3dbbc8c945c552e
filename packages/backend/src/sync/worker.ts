// The outbox worker: graphile-worker on the production database runs `sync_registration` jobs,
// which call syncRegistrationToStaging. Delivery is at-least-once; the apply is idempotent.
//
// Two additions to graphile-worker's defaults:
// - Recovery probe. Failed jobs back off exponentially (exp(min(attempts,10)) s). While staging is
//   unreachable we probe it every SYNC_PROBE_INTERVAL_MS; once it answers, waiting jobs are
//   rescheduled to run now, so a backlog drains seconds after staging returns, not minutes.
// - Stale-lock sweep. graphile-worker (OSS) leaves a crashed process's locked jobs for 4 hours. Our
//   task is bounded by the staging connect and statement timeouts, so a sync job locked longer than
//   SYNC_STALE_LOCK_SECONDS belongs to a dead process; its worker's locks are released.
import pg from 'pg';
import { z } from 'zod';
import { Logger as GraphileLogger, makeWorkerUtils, run, type Runner, type WorkerUtils } from 'graphile-worker';
import { syncKeys } from '@elara/sync';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { SYNC_REGISTRATION_TASK, SYNC_TASKS } from './outbox.ts';
import { describeError, isConnectivityError, syncRegistrationToStaging } from './staging-sync.ts';

const payloadSchema = z.object({
  organizationId: z.uuid(),
  userId: z.uuid(),
  email: z.string(),
  organizationName: z.string(),
});

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
  const prodPool = new pg.Pool({
    connectionString: config.databaseUrl,
    max: config.sync.concurrency * 2 + 2,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 60_000,
    keepAlive: true,
    application_name: 'elara-sync-worker',
  });
  prodPool.on('error', (err) => logger.error({ error: describeError(err) }, 'worker pool: idle client error'));
  prodPool.on('connect', (client) => client.on('error', () => {}));
  const glog = graphileLogger(deps.logger);
  let utils: WorkerUtils;
  try {
    utils = await makeWorkerUtils({ pgPool: prodPool, logger: glog });
  } catch (err) {
    await prodPool.end();
    throw err;
  }
  let stopping = false;
  let probing = false;

  const releaseStaleLocks = async () => {
    const { rows } = await prodPool.query<{ locked_by: string }>(
      `SELECT DISTINCT locked_by FROM graphile_worker.jobs
        WHERE task_identifier = ANY($1::text[]) AND locked_by IS NOT NULL
          AND locked_at < now() - make_interval(secs => $2)`,
      [SYNC_TASKS, config.sync.staleLockSeconds]);
    if (rows.length > 0) {
      await utils.forceUnlockWorkers(rows.map((r) => r.locked_by));
      logger.warn({ workers: rows.length }, '[DB Sync] released sync jobs locked by workers that stopped responding');
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

  await releaseStaleLocks().catch((err) => logger.error({ error: describeError(err) }, 'stale-lock sweep failed'));
  const sweepEvery = Math.min(30_000, Math.max(250, config.sync.staleLockSeconds * 500));
  const sweepTimer = setInterval(() => {
    releaseStaleLocks().catch((err) => logger.error({ error: describeError(err) }, 'stale-lock sweep failed'));
  }, sweepEvery);
  sweepTimer.unref();

  const startRunner = () => run({
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
        try {
          await syncRegistrationToStaging({ prodPool, stagingPool, logger: deps.logger, metrics, statementTimeoutMs: config.staging.statementTimeoutMs }, ref);
        } catch (err) {
          if (isConnectivityError(err)) startProbe();
          throw err;
        }
      },
    },
  });
  let runner: Runner = await startRunner();
  // If graphile-worker gives up (e.g. production unreachable for long), start it again: jobs it
  // held are released by the stale-lock sweep and re-run.
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
    { statementTimeoutMs: config.staging.statementTimeoutMs })
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
      await prodPool.end();
    },
  };
}
