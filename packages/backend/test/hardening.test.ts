// Failure paths: every error in our shape (malformed HTTP, slow clients, shutdown, production
// unavailable, a malformed token subject), and no secret in any log line while they happen (a lock
// timeout inside a registration, staging rejecting rows, tokens in query strings).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { FastifyPluginAsync } from 'fastify';
import pg from 'pg';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { migrateDatabase } from '../src/db/migrate.ts';
import { startServer, type RunningServer } from '../src/server.ts';
import { captureLogs, createDatabases, FAST_ENV, json, registration, startProxy, startTestServer, waitFor, type CapturedLogs, type Databases } from './helpers.ts';

type Server = RunningServer & { logs: CapturedLogs };
const REGISTER = '/api/v2/auth/register';

/** Sends raw bytes on a new connection; resolves with everything the server wrote before closing. */
function rawRequest(url: string, bytes: string, opts: { end?: boolean } = {}): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), hostname);
    let out = '';
    s.on('data', (c) => { out += c.toString(); });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(bytes);
    if (opts.end) s.end();
  });
}

function parseResponse(raw: string): { status: number; headers: string; body: any } {
  const [head = '', ...rest] = raw.split('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
  let body = rest.join('\r\n\r\n');
  if (/transfer-encoding: chunked/i.test(head)) body = body.split('\r\n').filter((_, i) => i % 2 === 1).join('');
  return { status, headers: head, body: body ? JSON.parse(body) : null };
}

function assertShape(body: any, status: number, code: string): void {
  assert.equal(body.statusCode, status);
  assert.equal(body.code, code);
  assert.equal(typeof body.error, 'string');
  assert.equal(typeof body.message, 'string');
}

/** The secrets of a registration that must never appear in a log line. */
const secretsOf = (body: { password: string }, extra: string[] = []) => [body.password, '$argon2', 'elara_sk_', 'elara_rt_', 'eyJ', ...extra];

function assertNoSecrets(logs: CapturedLogs, secrets: string[]): void {
  for (const line of logs.lines) {
    for (const s of secrets) assert.ok(!line.includes(s), `a log line contains ${s.slice(0, 12)}…: ${line.slice(0, 300)}`);
    assert.doesNotMatch(line, /insert into|select .* from|params:/i, `a log line contains SQL: ${line.slice(0, 300)}`);
  }
}

describe('HTTP-level errors in our shape', () => {
  let prod: TestDatabase;
  let server: Server;
  before(async () => {
    prod = await createTestDatabase('backend_hard_http');
    await migrateDatabase(prod.url, { outbox: true });
    server = await startTestServer({ DATABASE_URL: prod.url, REQUEST_TIMEOUT_MS: '1000' }, 'trace');
  });
  after(async () => {
    await server?.close();
    await prod?.drop();
  });

  const cases: Array<[string, string]> = [
    ['a bad chunk size', 'POST /api/v2/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    ['a duplicate Content-Length', 'POST /api/v2/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}'],
    ['Content-Length with Transfer-Encoding', 'POST /api/v2/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n'],
    ['a request line that is not HTTP', 'HELLO\r\n\r\n'],
  ];
  for (const [name, bytes] of cases) {
    test(`${name} → 400 E_BAD_REQUEST`, async () => {
      const res = parseResponse(await rawRequest(server.url, bytes));
      assert.equal(res.status, 400);
      assertShape(res.body, 400, 'E_BAD_REQUEST');
      assert.match(res.headers, /connection: close/i);
    });
  }

  test('a body that stops arriving → 408 E_REQUEST_TIMEOUT and the connection is closed', async () => {
    const res = parseResponse(await rawRequest(server.url, 'POST /api/v2/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email":"'));
    assert.equal(res.status, 408);
    assertShape(res.body, 408, 'E_REQUEST_TIMEOUT');
  });

  test('headers that stop arriving → 408 as well', async () => {
    const res = parseResponse(await rawRequest(server.url, 'GET /health HTTP/1.1\r\nHost: x\r\n'));
    assert.equal(res.status, 408);
    assertShape(res.body, 408, 'E_REQUEST_TIMEOUT');
  });

  test('a well-signed access token whose sub is not a UUID → 401, and no SQL in the logs', async () => {
    const token = await server.app.elara.tokens.signAccess({ sub: "x' OR 1=1 --", orgId: 'o', role: 'owner' });
    const res = await server.app.inject({ method: 'GET', url: '/api/v2/auth/me', headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.statusCode, 401, res.body);
    assertShape(res.json(), 401, 'E_INVALID_TOKEN');
    assertNoSecrets(server.logs, [token]);
  });

  test('tokens in query strings never reach the logs', async () => {
    const secret = 'query-secret-0123456789abcdef0123456789';
    for (const url of [`/sync?token=${secret}`, `/api/v2/sync/status?token=${secret}`, `/api/v2/auth/me?access_token=${secret}`, `/nope?token=${secret}#x`]) {
      const res = await fetch(`${server.url}${url}`);
      assert.ok(res.status < 500, `${url}: ${res.status}`);
    }
    await new Promise<void>((r) => server.logger.flush(() => r()));
    assert.ok(server.logs.lines.some((l) => l.includes('"url":"/sync"')), 'requests are logged, by path');
    assertNoSecrets(server.logs, [secret]);
  });
});

describe('shutdown: requests arriving while the server closes', () => {
  test('503 E_UNAVAILABLE with Retry-After and Connection: close', async () => {
    const prod = await createTestDatabase('backend_hard_close');
    await migrateDatabase(prod.url, { outbox: true });
    const { logger } = captureLogs('warn');
    // Holds the shutdown in its first step (preClose), while the server still accepts connections.
    let closingStarted!: () => void;
    const started = new Promise<void>((r) => { closingStarted = r; });
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const hold: FastifyPluginAsync = async (app) => { app.addHook('preClose', async () => { closingStarted(); await held; }); };
    const server = await startServer({ env: { ...FAST_ENV, DATABASE_URL: prod.url }, logger, handleSignals: false, plugins: [hold] });
    try {
      const closing = server.close();
      await started;
      const res = await fetch(`${server.url}/health`);
      assert.equal(res.status, 503);
      assertShape(await res.json(), 503, 'E_UNAVAILABLE');
      assert.equal(res.headers.get('retry-after'), '2');
      assert.equal(res.headers.get('connection'), 'close');
      release();
      await closing;
    } finally {
      release();
      await server.close();
      await prod.drop();
    }
  });
});

describe('production unavailable, and a lock timeout inside a registration', () => {
  let dbs: Databases;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let server: Server;
  before(async () => {
    dbs = await createDatabases('backend_hard_prod');
    const port = Number(new URL(dbs.prod.url).port || 5432);
    proxy = await startProxy(port);
    await sql(dbs.prod.url, `ALTER DATABASE "${dbs.prod.name}" SET lock_timeout = '300ms'`);
    server = await startTestServer({ DATABASE_URL: proxy.url(dbs.prod.name), STAGING_DATABASE_URL: dbs.staging.url }, 'trace');
  });
  after(async () => {
    await server?.close();
    await proxy?.stop();
    await dbs?.drop();
  });

  test('a lock timeout while registering → 503 E_UNAVAILABLE, nothing committed, no email, password, hash or SQL in any log line', async () => {
    const holder = new pg.Client({ connectionString: dbs.prod.url });
    await holder.connect();
    const body = registration();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE');
      const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body });
      assert.equal(res.statusCode, 503, res.body);
      assertShape(res.json(), 503, 'E_UNAVAILABLE');
      assert.equal(res.headers['retry-after'], '2');
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
    assert.equal((await sql(dbs.prod.url, 'SELECT count(*)::int AS n FROM "Organization" WHERE name = $1', [body.organizationName])).rows[0].n, 0);
    await new Promise<void>((r) => server.logger.flush(() => r()));
    assert.ok(server.logs.lines.some((l) => l.includes('"code":"55P03"')), 'the lock timeout is logged, by SQLSTATE');
    assertNoSecrets(server.logs, [...secretsOf(body), body.email]);
  });

  test('production unreachable → 503 E_UNAVAILABLE with Retry-After (register and login)', async () => {
    await proxy.stop();
    try {
      for (const [url, payload] of [[REGISTER, registration()], ['/api/v2/auth/login', { email: 'a@example.com', password: 'whatever-long-enough' }]] as const) {
        const res = await server.app.inject({ method: 'POST', url, headers: json, payload });
        assert.equal(res.statusCode, 503, `${url}: ${res.body}`);
        assertShape(res.json(), 503, 'E_UNAVAILABLE');
        assert.equal(res.headers['retry-after'], '2');
      }
    } finally {
      await proxy.start();
    }
  });
});

describe('staging rejecting every row', () => {
  test('the failures are logged and counted without the password, its hash, or the rejected row', async () => {
    const dbs = await createDatabases('backend_hard_stg');
    // Staging refuses every user row (as a diverged schema would); its error's DETAIL holds the row.
    await sql(dbs.staging.url, `ALTER TABLE "User" ADD CONSTRAINT staging_refuses CHECK (email = '')`);
    const stagingPassword = 'stg-password-never-logged-42';
    const u = new URL(dbs.staging.url);
    u.password = stagingPassword; // trust auth ignores it; it must not be printed anyway
    const server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: u.toString() }, 'trace');
    try {
      const body = registration();
      const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body });
      assert.equal(res.statusCode, 201, res.body);
      await waitFor(async () => server.logs.text().includes('Registration sync failed'), 15_000, 50);
      await new Promise<void>((r) => server.logger.flush(() => r()));
      assertNoSecrets(server.logs, [...secretsOf(body), stagingPassword, res.json().apiSecret, res.json().refreshToken]);
      assert.ok(!server.logs.text().includes('Failing row contains'), 'no DETAIL with the row');
    } finally {
      await server.close();
      await dbs.drop();
    }
  });
});
