// Reads the environment, builds the app, starts the outbox worker, listens, and shuts down
// gracefully on SIGTERM/SIGINT: stop accepting, finish in-flight requests, drain the worker, close
// the pools.
import type pg from 'pg';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from './config.ts';
import { createLogger, type Logger } from './logger.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { buildApp, type BuildAppOptions } from './app.ts';
import { createProdPool, createStagingPool } from './db/pools.ts';
import { migrateOutbox } from './db/migrate.ts';
import { redactUrl } from './db/urls.ts';
import { OUTBOX_BACKLOG_SQL, SYNC_TASKS } from './sync/outbox.ts';
import { startSyncWorker, type SyncWorker } from './sync/worker.ts';
import { startReconcileLoop, type ReconcileLoop } from '@elara/sync';
import { collectStatus, statusRoutes } from './ops/status.ts';
import { registerReconcileMetrics } from './ops/reconcile-metrics.ts';

export interface RunningServer {
  app: FastifyInstance;
  config: Config;
  logger: Logger;
  metrics: Metrics;
  prodPool: pg.Pool;
  stagingPool: pg.Pool | null;
  /** http://host:port actually bound (PORT=0 picks a free port). */
  url: string;
  close(): Promise<void>;
}

export interface StartServerOptions extends BuildAppOptions {
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Install SIGTERM/SIGINT handlers that close everything and exit (default true). */
  handleSignals?: boolean;
  /** Called after a signal-triggered close, before exit (e.g. to stop the embedded PostgreSQL). */
  afterClose?: () => Promise<void>;
}

export async function startServer(opts: StartServerOptions = {}): Promise<RunningServer> {
  const config = loadConfig(opts.env ?? process.env);
  const logger = opts.logger ?? createLogger(config.logLevel);
  if (config.jwt.generated) {
    logger.warn('JWT_SECRET is not set: generated a random signing key for this process; tokens stop working at restart. Set JWT_SECRET (≥ 32 random bytes) in any shared deployment.');
  }
  if (config.failpoint) logger.warn({ failpoint: config.failpoint }, 'ELARA_FAILPOINT is set: this process will kill itself on purpose (tests only)');

  const prodPool = createProdPool(config, logger);
  const stagingPool = config.stagingDatabaseUrl ? createStagingPool(config.stagingDatabaseUrl, config, logger) : null;
  const metrics = createMetrics();
  let worker: SyncWorker | null = null;
  let reconcile: ReconcileLoop | null = null;
  let app: FastifyInstance | null = null;
  const cleanup = async () => {
    await app?.close().catch(() => {});
    await reconcile?.stop().catch(() => {});
    await worker?.stop().catch((err) => logger.error({ error: { message: (err as Error).message } }, 'sync worker stop failed'));
    await prodPool.end().catch(() => {});
    await stagingPool?.end().catch(() => {});
  };
  try {
    await migrateOutbox(config.databaseUrl);
    metrics.setOutboxProbe(async () => {
      const { rows } = await prodPool.query<{ backlog: number; oldestAgeSeconds: number }>(OUTBOX_BACKLOG_SQL, [SYNC_TASKS]);
      return rows[0]!;
    });
    if (stagingPool) {
      worker = await startSyncWorker({ config, stagingPool, logger, metrics });
      logger.info({ staging: redactUrl(config.stagingDatabaseUrl!) }, 'staging sync is on');
    } else {
      logger.warn('staging sync is off: STAGING_DATABASE_URL is not set');
    }
    const statusOptions = {
      tables: [...config.ops.tables],
      intervalSeconds: Math.round(config.ops.expectedIntervalMs / 1000),
      opsToken: config.ops.token,
      openOnLoopback: config.ops.openOnLoopback,
    };
    app = await buildApp({ config, prodPool, stagingPool, logger, metrics }, { plugins: [statusRoutes(statusOptions), ...(opts.plugins ?? [])] });
    if (stagingPool) {
      const deps = app.elara;
      registerReconcileMetrics(metrics, {
        stagingPool,
        rowCounts: async () => (await collectStatus(deps, statusOptions)).tables,
      });
    }
    if (stagingPool && config.ops.reconcileIntervalMs !== null) {
      reconcile = startReconcileLoop({
        sourceUrl: config.databaseUrl,
        targetUrl: config.stagingDatabaseUrl!,
        tables: config.ops.tables.map((name) => ({ name })),
        intervalMs: config.ops.reconcileIntervalMs,
        firstDelayMs: 1000,
        onResult: (r) => {
          const counts = r.tables.map((t) => ({ table: t.table, inserted: t.inserted, updated: t.updated, deleted: t.deleted, conflicts: t.conflicts }));
          if (r.skipped) logger.info('[Reconcile] another run is in progress; skipped');
          else if (r.error) logger.error({ code: r.error.code, error: { message: r.error.message }, tables: counts }, `[Reconcile] failed: ${r.error.message}`);
          else logger.info({ durationMs: r.durationMs, tables: counts }, `[Reconcile] ${r.ok ? 'completed' : 'completed with conflicts'} in ${r.durationMs} ms`);
        },
        onError: (e) => logger.error({ error: { message: (e as Error).message } }, '[Reconcile] crashed'),
      });
      logger.info({ intervalMs: config.ops.reconcileIntervalMs }, '[Reconcile] running in-process');
    }
    await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    await cleanup();
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${port}`;
  logger.info({ url, production: redactUrl(config.databaseUrl) }, `Elara API listening on ${url}`);

  let closing: Promise<void> | null = null;
  const close = () => (closing ??= cleanup());
  if (opts.handleSignals !== false) {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'shutting down');
      const force = setTimeout(() => process.exit(1), 15_000);
      force.unref();
      close()
        .then(() => opts.afterClose?.())
        .then(() => { logger.info('stopped'); process.exit(0); }, () => process.exit(1));
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  }
  return { app, config, logger, metrics, prodPool, stagingPool, url, close };
}
