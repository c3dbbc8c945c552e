// Reads the environment, builds the app, starts the outbox worker, listens, and shuts down
// gracefully on SIGTERM/SIGINT: stop accepting, finish in-flight requests (cut after
// SHUTDOWN_TIMEOUT_MS), stop watch (real-time sync), the reconcile loop and the worker, close the pools; then afterClose
// (main.ts stops the embedded PostgreSQL there, after every client of it is gone).
import type pg from 'pg';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from './config.ts';
import { createLogger, type Logger } from './logger.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { buildApp, type BuildAppOptions } from './app.ts';
import { createProdPool, createStagingPool } from './db/pools.ts';
import { migrateOutbox } from './db/migrate.ts';
import { OUTBOX_BACKLOG_SQL, SYNC_TASKS } from './sync/outbox.ts';
import { startSyncWorker, type SyncWorker } from './sync/worker.ts';
import { describeTls, encrypts, plaintextRisk, redactUrl, startReconcileLoop, type ReconcileLoop } from '@elara/sync';
import { collectStatus, readOutbox, statusRoutes } from './ops/status.ts';
import { describeError } from './db/errors.ts';
import { registerReconcileMetrics } from './ops/reconcile-metrics.ts';
import { registerStreamMetrics } from './ops/stream-metrics.ts';
import { startWatches, type Watches } from './sync/watch.ts';

/** How old the row counts behind elara_sync_lag_rows may be. */
const ROW_COUNT_MAX_AGE_MS = 60_000;

export interface RunningServer {
  app: FastifyInstance;
  config: Config;
  logger: Logger;
  metrics: Metrics;
  prodPool: pg.Pool;
  stagingPool: pg.Pool | null;
  /** The in-process real-time sync (SYNC_WATCH): its state and every target's stream. */
  watches: Watches;
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

/**
 * One line per database saying what its TLS checks, and in production a warning for each URL that
 * DB_ALLOW_PLAINTEXT lets through in plaintext, or that encrypts without authenticating the server.
 */
function logTlsAtStartup(config: Config, logger: Logger): void {
  const sides = [['production', 'DATABASE_URL', config.databaseUrl, config.tls.production], ['staging', 'STAGING_DATABASE_URL', config.stagingDatabaseUrl, config.tls.staging]] as const;
  for (const [side, key, url, settings] of sides) {
    if (!url || !settings) continue;
    logger.info({ database: side, tls: describeTls(settings) }, `${side} database TLS: ${describeTls(settings)}`);
    if (!config.isProduction) continue;
    const risk = plaintextRisk(url);
    if (risk) logger.warn({ database: side }, `${key} ${risk}; allowed only because DB_ALLOW_PLAINTEXT=true`);
    else if (encrypts(settings) && settings.verify === 'none') {
      logger.warn({ database: side }, `${key} uses sslmode=${settings.mode} without a CA: encrypted, but the server is not authenticated; add sslrootcert and sslmode=verify-full`);
    }
  }
}

export async function startServer(opts: StartServerOptions = {}): Promise<RunningServer> {
  const config = loadConfig(opts.env ?? process.env);
  const logger = opts.logger ?? createLogger(config.logLevel);
  if (config.jwt.generated) {
    logger.warn('JWT_SECRET is not set: generated a random signing key for this process; tokens stop working at restart. Set JWT_SECRET (≥ 32 random bytes) in any shared deployment.');
  }
  if (config.failpoint) logger.warn({ failpoint: config.failpoint }, 'ELARA_FAILPOINT is set: this process will kill itself on purpose (tests only)');
  logTlsAtStartup(config, logger);

  const prodPool = createProdPool(config, logger);
  const stagingPool = config.stagingDatabaseUrl ? createStagingPool(config.stagingDatabaseUrl, config, logger) : null;
  const metrics = createMetrics();
  let worker: SyncWorker | null = null;
  let watches: Watches | null = null;
  const reconciles: ReconcileLoop[] = [];
  const targetPools: Array<{ name: string; pool: pg.Pool }> = [];
  let app: FastifyInstance | null = null;
  const cleanup = async () => {
    if (app) {
      const server = app.server;
      // Requests still running at the deadline (a client sending its body very slowly, a stuck
      // handler) have their connections cut, so they cannot hold the shutdown.
      const cut = setTimeout(() => {
        logger.warn({ timeoutMs: config.http.shutdownTimeoutMs }, 'shutdown: requests still in flight at the deadline; closing their connections');
        server.closeAllConnections();
      }, config.http.shutdownTimeoutMs);
      cut.unref();
      await app.close().catch((err) => logger.warn({ error: describeError(err) }, 'shutdown: closing the HTTP server failed'));
      clearTimeout(cut);
    }
    // Watch first: it finishes the transaction in hand and closes its replication connection, so
    // PostgreSQL's smart shutdown (main.ts, after this) finds no session of ours left.
    await watches?.stop();
    await Promise.all(reconciles.map((r) => r.stop().catch(() => {})));
    await worker?.stop().catch((err) => logger.warn({ error: describeError(err) }, 'shutdown: stopping the sync worker failed'));
    await prodPool.end().catch(() => {});
    await stagingPool?.end().catch(() => {});
    await Promise.all(targetPools.map((t) => t.pool.end().catch(() => {})));
  };
  try {
    await migrateOutbox(config.databaseUrl, { label: 'production', setting: 'DATABASE_URL' });
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
    for (const t of config.targets.skipped) logger.info({ target: t.name }, `[Reconcile] target ${t.name} is not synced: ${t.reason}`);
    watches = await startWatches({ config, prodPool, logger });
    const live = watches;
    registerStreamMetrics(metrics, () => live.statuses());
    const statusOptions = {
      tables: [...config.ops.tables],
      intervalSeconds: Math.round(config.ops.expectedIntervalMs / 1000),
      opsToken: config.ops.token,
      openOnLoopback: config.ops.openOnLoopback,
      watch: () => ({ ...live.state, streams: live.statuses() }),
    };
    app = await buildApp({ config, prodPool, stagingPool, logger, metrics }, { plugins: [statusRoutes(statusOptions), ...(opts.plugins ?? [])] });
    if (stagingPool) {
      const deps = app.elara;
      // Row counts scan both databases: at most once a minute, however often /metrics is scraped.
      let counted: { at: number; tables: Promise<Awaited<ReturnType<typeof collectStatus>>['tables']> } | null = null;
      // The other targets' run records (an anonymized dev copy…): a small pool each, for the metrics.
      for (const t of config.targets.all) if (t.name !== 'staging') targetPools.push({ name: t.name, pool: createStagingPool(t.url, config, logger) });
      registerReconcileMetrics(metrics, {
        targets: [{ name: 'staging', pool: stagingPool, outbox: () => readOutbox(prodPool) }, ...targetPools],
        rowCounts: () => {
          if (!counted || Date.now() - counted.at >= ROW_COUNT_MAX_AGE_MS) {
            const tables = collectStatus(deps, statusOptions).then((s) => s.tables);
            counted = { at: Date.now(), tables };
            tables.catch(() => { counted = null; });
          }
          return counted.tables;
        },
      });
    }
    if (config.ops.reconcileIntervalMs !== null) {
      // One loop per target with a URL: staging (raw, as the seed) and e.g. an anonymized dev copy.
      for (const target of config.targets.all) {
        const tag = `[Reconcile${target.name === 'staging' ? '' : ` ${target.name}`}]`;
        reconciles.push(startReconcileLoop({
          sourceUrl: config.databaseUrl,
          targetUrl: target.url,
          target,
          tables: [...config.syncConfig.tables],
          statementTimeoutMs: config.syncConfig.statementTimeoutMs,
          sequenceHeadroom: config.syncConfig.sequenceHeadroom,
          intervalMs: config.ops.reconcileIntervalMs,
          firstDelayMs: 1000,
          onResult: (r) => {
            const counts = r.tables.map((t) => ({ table: t.table, inserted: t.inserted, updated: t.updated, deleted: t.deleted, conflicts: t.conflicts }));
            if (r.skipped) logger.info({ target: target.name }, `${tag} another run is in progress; skipped`);
            else if (r.error) logger.error({ target: target.name, code: r.error.code, error: describeError(r.error), tables: counts }, `${tag} failed: ${describeError(r.error).message}`);
            else logger.info({ target: target.name, durationMs: r.durationMs, tables: counts }, `${tag} ${r.ok ? 'completed' : 'completed with conflicts'} in ${r.durationMs} ms`);
          },
          onError: (e) => logger.error({ target: target.name, error: describeError(e) }, `${tag} crashed`),
        }));
        logger.info({ target: target.name, anonymized: target.anonymize, intervalMs: config.ops.reconcileIntervalMs }, `${tag} running in-process`);
      }
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
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      // Under `npm start` one Ctrl-C arrives twice (from the terminal, and forwarded by npm); a
      // repeated signal must not end the process halfway through its shutdown. The deadlines bound it.
      if (signalled) { logger.info({ signal }, 'already shutting down'); return; }
      signalled = true;
      logger.info({ signal }, 'shutting down');
      // Last resort only: the HTTP drain is bounded by SHUTDOWN_TIMEOUT_MS, the worker's jobs by the
      // staging timeouts; this fires only if something else hangs.
      const force = setTimeout(() => {
        logger.fatal('shutdown did not finish in time; exiting');
        logger.flush(() => process.exit(1));
      }, config.http.shutdownTimeoutMs + 30_000);
      force.unref();
      close()
        .then(() => opts.afterClose?.())
        .then(() => { logger.info('stopped'); logger.flush(() => process.exit(0)); },
          (err) => { logger.fatal({ error: describeError(err) }, 'shutdown failed'); logger.flush(() => process.exit(1)); });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
  return { app, config, logger, metrics, prodPool, stagingPool, watches: watches!, url, close };
}
