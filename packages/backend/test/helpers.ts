// Shared test plumbing: real databases (testkit), a server with captured logs, polling.
import { Writable } from 'node:stream';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { createLogger } from '../src/logger.ts';
import { migrateDatabase } from '../src/db/migrate.ts';
import { startServer, type RunningServer } from '../src/server.ts';

export { sql };

export interface Databases {
  prod: TestDatabase;
  staging: TestDatabase;
  drop(): Promise<void>;
}

/** A production and a staging database, both migrated; production carries the outbox schema. */
export async function createDatabases(prefix: string): Promise<Databases> {
  const prod = await createTestDatabase(`${prefix}_prod`);
  const staging = await createTestDatabase(`${prefix}_stg`);
  await migrateDatabase(prod.url, { outbox: true });
  await migrateDatabase(staging.url);
  return { prod, staging, async drop() { await prod.drop(); await staging.drop(); } };
}

export interface CapturedLogs { lines: string[]; text(): string }

export function captureLogs(level = 'debug') {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(...String(chunk).split('\n').filter(Boolean)); cb(); } });
  const logger = createLogger(level, stream);
  return { logger, logs: { lines, text: () => lines.join('\n') } as CapturedLogs };
}

export const FAST_ENV = {
  PORT: '0',
  HOST: '127.0.0.1',
  JWT_SECRET: 'test-secret-test-secret-test-secret-0123456789',
  RATE_LIMIT_IP_PER_MINUTE: '1000000',
  RATE_LIMIT_EMAIL_PER_HOUR: '1000000',
  SYNC_PROBE_INTERVAL_MS: '100',
  STAGING_CONNECT_TIMEOUT_MS: '1000',
  SYNC_WORKER_CONCURRENCY: '4',
};

export async function startTestServer(env: Record<string, string | undefined>, level = 'debug'): Promise<RunningServer & { logs: CapturedLogs }> {
  const { logger, logs } = captureLogs(level);
  const server = await startServer({ env: { ...FAST_ENV, ...env }, logger, handleSignals: false });
  return Object.assign(server, { logs });
}

export async function waitFor<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs: number, intervalMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

let n = 0;
export function registration(overrides: Record<string, unknown> = {}) {
  n++;
  return {
    email: `user${n}.${process.pid}.${Date.now()}@example.com`,
    password: `pw-${n}-${Math.random().toString(36).slice(2)}-long-enough`,
    organizationName: `Org ${n} ${process.pid}`,
    firstName: 'Ada',
    lastName: 'Lovelace',
    ...overrides,
  };
}

export const json = { 'content-type': 'application/json' };

/**
 * A TCP proxy on 127.0.0.1 in front of PostgreSQL that can be switched off (the port is closed and
 * live connections are cut: ECONNREFUSED for new ones) and on again on the same port.
 */
export async function startProxy(targetPort: number, targetHost = '127.0.0.1') {
  const net = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  let server: import('node:net').Server | null = null;
  let port = 0;
  let blackholed = false;
  const listen = () => new Promise<void>((resolve, reject) => {
    server = net.createServer((client) => {
      if (blackholed) {
        // Accept and never answer: the client's connect/statement timeouts must fire.
        sockets.add(client);
        client.on('close', () => sockets.delete(client));
        client.on('error', () => {});
        return;
      }
      const upstream = net.connect(targetPort, targetHost);
      for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); }
      client.pipe(upstream).pipe(client);
      const end = () => { client.destroy(); upstream.destroy(); };
      client.on('close', end); upstream.on('close', end);
    });
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => { port = (server!.address() as { port: number }).port; resolve(); });
  });
  await listen();
  return {
    get port() { return port; },
    url(database: string) { return `postgresql://postgres@127.0.0.1:${port}/${database}`; },
    async stop() {
      const s = server;
      server = null;
      for (const sock of sockets) sock.destroy();
      if (s) await new Promise<void>((r) => s.close(() => r()));
    },
    async start() { if (!server) await listen(); },
    /** Keep the port open but stop answering (and cut live connections). */
    blackhole(on: boolean) {
      blackholed = on;
      if (on) for (const sock of sockets) sock.destroy();
    },
  };
}

export function dbName(url: string): string {
  return new URL(url).pathname.slice(1);
}

/** A port on 127.0.0.1 with nothing listening (connections are refused). */
export async function closedPort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const p = (srv.address() as { port: number }).port; srv.close(() => resolve(p)); });
  });
}
