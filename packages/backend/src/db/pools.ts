import type pg from 'pg';
import { createPool } from '@elara/sync';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';

// TLS comes from the URL (sslmode, sslrootcert, …) through @elara/sync's createPool, as for every
// connection of the project.
export function createProdPool(config: Config, logger: Logger): pg.Pool {
  const pool = createPool(config.databaseUrl, {
    max: config.dbPoolMax,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 60_000,
    keepAlive: true,
    application_name: 'elara-backend',
  }, { label: 'production', setting: 'DATABASE_URL' });
  // An idle client losing its connection must not crash the process.
  pool.on('error', (err) => logger.error({ error: { message: err.message, code: (err as { code?: string }).code } }, 'production pool: idle client error'));
  // graphile-worker holds a LISTEN client from this pool; a dropped connection must not throw.
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/**
 * Staging is optional and may be slow or gone: short connect timeout, a statement timeout set by
 * the server for every session, TCP keep-alive so a dead peer is noticed, a small pool.
 */
export function createStagingPool(url: string, config: Config, logger: Logger): pg.Pool {
  const { connectTimeoutMs, statementTimeoutMs } = config.staging;
  const pool = createPool(url, {
    max: Math.max(2, config.sync.concurrency + 1),
    connectionTimeoutMillis: connectTimeoutMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    idleTimeoutMillis: 30_000,
    options: `-c statement_timeout=${statementTimeoutMs} -c lock_timeout=${Math.min(statementTimeoutMs, 5000)} -c idle_in_transaction_session_timeout=${statementTimeoutMs * 2}`,
    // Client-side bound too, for a peer that stops answering without closing the socket.
    query_timeout: statementTimeoutMs + 2000,
    application_name: 'elara-backend-staging-sync',
  }, { label: 'staging', setting: 'STAGING_DATABASE_URL' });
  pool.on('error', (err) => logger.warn({ error: { message: err.message, code: (err as { code?: string }).code } }, 'staging pool: idle client error'));
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}
