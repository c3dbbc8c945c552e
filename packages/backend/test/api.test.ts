// Every error status of the auth API, health/ready/metrics, and the staging-unset mode.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { migrateDatabase } from '../src/db/migrate.ts';
import { registration, json, startTestServer } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';

type Server = RunningServer & { logs: { text(): string } };
const REGISTER = '/api/v2/auth/register';

function assertErrorShape(res: { statusCode: number; json(): any }, status: number, code?: string) {
  assert.equal(res.statusCode, status, JSON.stringify(res.json()));
  const b = res.json();
  assert.equal(b.statusCode, status);
  assert.equal(typeof b.code, 'string');
  assert.equal(typeof b.error, 'string');
  assert.equal(typeof b.message, 'string');
  if (code) assert.equal(b.code, code);
  return b;
}

describe('auth API without staging (STAGING_DATABASE_URL unset)', () => {
  let prod: TestDatabase;
  let server: Server;

  before(async () => {
    prod = await createTestDatabase('backend_api_prod');
    await migrateDatabase(prod.url, { outbox: true });
    server = await startTestServer({ DATABASE_URL: prod.url, STAGING_DATABASE_URL: undefined, RATE_LIMIT_IP_PER_MINUTE: '1000000', RATE_LIMIT_EMAIL_PER_HOUR: '3' });
  });
  after(async () => {
    await server?.close();
    await prod?.drop();
  });

  test('says once at start-up that staging sync is off', () => {
    const lines = server.logs.text().split('\n').filter((l) => l.includes('staging sync is off'));
    assert.equal(lines.length, 1);
  });

  test('register → 201 with user, organization, apiSecret and tokens; no hash leaves the API', async () => {
    const body = registration({ email: 'Mixed.Case@Example.COM' });
    const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.headers['cache-control'], 'no-store');
    const b = res.json();
    assert.equal(b.user.email, 'mixed.case@example.com');
    assert.equal(b.user.passwordHash, undefined);
    assert.equal(b.organization.apiSecret, undefined);
    assert.match(b.organization.apiKey, /^elara_pk_/);
    assert.match(b.apiSecret, /^elara_sk_/);
    assert.equal(b.expiresIn, 1800);
    assert.ok(b.accessToken && b.refreshToken);
    assert.ok(!res.body.includes('$argon2'));
    const org = (await sql(prod.url, 'SELECT "apiSecret" FROM "Organization" WHERE id = $1', [b.organization.id])).rows[0];
    assert.notEqual(org.apiSecret, b.apiSecret, 'the API secret is stored hashed');
    assert.match(org.apiSecret, /^[0-9a-f]{64}$/);
    const user = (await sql(prod.url, 'SELECT "passwordHash" FROM "User" WHERE id = $1', [b.user.id])).rows[0];
    assert.match(user.passwordHash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    const audit = await sql(prod.url, `SELECT action, details::text FROM "AuditLog" WHERE "userId" = $1`, [b.user.id]);
    assert.equal(audit.rowCount, 1);
    // staging off: no outbox job
    const jobs = await sql(prod.url, 'SELECT count(*)::int AS n FROM graphile_worker.jobs');
    assert.equal(jobs.rows[0].n, 0);
  });

  test('400 for invalid fields, with per-field details', async () => {
    const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: { email: 'nope', password: 'short', organizationName: '' } });
    const b = assertErrorShape(res, 400, 'E_VALIDATION');
    const fields = b.details.map((d: { field: string }) => d.field).sort();
    assert.deepEqual(fields, ['email', 'organizationName', 'password']);
  });

  test('400 for missing body, non-object body, invalid JSON, NUL in a name', async () => {
    assertErrorShape(await server.app.inject({ method: 'POST', url: REGISTER }), 400);
    assertErrorShape(await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: '[1,2]' }), 400, 'E_VALIDATION');
    assertErrorShape(await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: '{"email": ' }), 400, 'E_INVALID_JSON');
    assertErrorShape(await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: '{"__proto__": {"x": 1}}' }), 400, 'E_INVALID_JSON');
    assertErrorShape(await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: registration({ organizationName: 'a\u0000b' }) }), 400, 'E_VALIDATION');
  });

  test('400 for unknown fields (no mass assignment)', async () => {
    const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: registration({ role: 'admin', tier: 'enterprise' }) });
    const b = assertErrorShape(res, 400, 'E_UNKNOWN_FIELD');
    assert.deepEqual(b.details.map((d: { field: string }) => d.field).sort(), ['role', 'tier']);
  });

  test('409 for a duplicate email (any case), and nothing partial is left', async () => {
    const body = registration();
    assert.equal((await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body })).statusCode, 201);
    const before = (await sql(prod.url, 'SELECT count(*)::int AS n FROM "Organization"')).rows[0].n;
    const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: { ...body, email: body.email.toUpperCase(), organizationName: 'Other' } });
    assertErrorShape(res, 409, 'E_EMAIL_TAKEN');
    const afterCount = (await sql(prod.url, 'SELECT count(*)::int AS n FROM "Organization"')).rows[0].n;
    assert.equal(afterCount, before, 'the second organization was rolled back');
  });

  test('413 for a body over 16 KiB', async () => {
    const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: registration({ organizationName: 'x'.repeat(17 * 1024) }) });
    assertErrorShape(res, 413, 'E_BODY_TOO_LARGE');
  });

  test('415 for a non-JSON body', async () => {
    const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'email=a@b.c' });
    assertErrorShape(res, 415, 'E_UNSUPPORTED_MEDIA_TYPE');
    const res2 = await server.app.inject({ method: 'POST', url: REGISTER, headers: { 'content-type': 'text/plain' }, payload: 'hello' });
    assertErrorShape(res2, 415, 'E_UNSUPPORTED_MEDIA_TYPE');
  });

  test('429 with Retry-After when one email is tried too often', async () => {
    const body = registration();
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 5; i++) {
      last = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body });
      statuses.push(last.statusCode);
    }
    assert.deepEqual(statuses, [201, 409, 409, 429, 429]);
    assertErrorShape(last!, 429, 'E_RATE_LIMITED');
    assert.ok(Number(last!.headers['retry-after']) > 0);
  });

  test('per email, failed logins are limited and successful ones are not', async () => {
    const body = registration();
    assert.equal((await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body })).statusCode, 201);
    const login = (password: string) => server.app.inject({ method: 'POST', url: '/api/v2/auth/login', headers: json, payload: { email: body.email, password } });
    for (let i = 0; i < 5; i++) assert.equal((await login(body.password)).statusCode, 200);
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await login('wrong-password-x')).statusCode);
    assert.deepEqual(codes, [401, 401, 401, 429]);
    const blocked = await login(body.password);
    assertErrorShape(blocked, 429, 'E_RATE_LIMITED');
    assert.ok(Number(blocked.headers['retry-after']) > 0);
  });

  test("a stranger's failed logins lock out only the stranger's address, never the owner elsewhere", async () => {
    const body = registration();
    assert.equal((await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body })).statusCode, 201);
    const login = (password: string, remoteAddress: string) =>
      server.app.inject({ method: 'POST', url: '/api/v2/auth/login', headers: json, payload: { email: body.email, password }, remoteAddress });
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await login('wrong-password-x', '203.0.113.9')).statusCode);
    assert.deepEqual(codes, [401, 401, 401, 429, 429]);
    assert.equal((await login(body.password, '203.0.113.9')).statusCode, 429, 'the guessing address stays blocked, even with the right password');
    assert.equal((await login(body.password, '198.51.100.7')).statusCode, 200, 'the owner, from their own address, logs in');
  });

  test('404 in the same error shape', async () => {
    assertErrorShape(await server.app.inject({ url: '/api/v2/nope' }), 404, 'E_NOT_FOUND');
  });

  test('health, ready and metrics', async () => {
    assert.equal((await server.app.inject({ url: '/health' })).statusCode, 200);
    const ready = await server.app.inject({ url: '/ready' });
    assert.equal(ready.statusCode, 200);
    assert.equal(ready.json().stagingSync, 'off');
    const m = await server.app.inject({ url: '/metrics' });
    assert.equal(m.statusCode, 200);
    for (const name of ['elara_immediate_sync_total', 'elara_immediate_sync_duration_seconds', 'elara_outbox_backlog_jobs', 'elara_outbox_oldest_age_seconds', 'elara_http_requests_total']) {
      assert.ok(m.body.includes(name), name);
    }
  });
});

describe('per-IP rate limit', () => {
  test('429 with Retry-After after RATE_LIMIT_IP_PER_MINUTE requests', async () => {
    const prod = await createTestDatabase('backend_api_rl');
    try {
      await migrateDatabase(prod.url, { outbox: true });
      const server = await startTestServer({ DATABASE_URL: prod.url, RATE_LIMIT_IP_PER_MINUTE: '3' }, 'warn');
      try {
        const codes: number[] = [];
        for (let i = 0; i < 5; i++) {
          codes.push((await server.app.inject({ method: 'POST', url: '/api/v2/auth/login', headers: json, payload: { email: 'x@example.com', password: 'whatever-password' } })).statusCode);
        }
        assert.deepEqual(codes, [401, 401, 401, 429, 429]);
      } finally {
        await server.close();
      }
    } finally {
      await prod.drop();
    }
  });
});

describe('rate limits shared through Redis (REDIS_URL): two replicas, one limit', () => {
  test('requests spread over two servers count against the same per-IP limit', async () => {
    const prod = await createTestDatabase('backend_api_redis');
    await migrateDatabase(prod.url, { outbox: true });
    // A prefix of its own, so parallel test runs sharing this Redis never count each other's requests.
    const env = { DATABASE_URL: prod.url, RATE_LIMIT_IP_PER_MINUTE: '3', REDIS_URL: 'redis://127.0.0.1:6379', REDIS_KEY_PREFIX: `elara-test:${process.pid}:${Date.now()}:` };
    const a = await startTestServer(env);
    const b = await startTestServer(env);
    try {
      const statuses: number[] = [];
      for (const s of [a, b, a, b]) {
        statuses.push((await s.app.inject({ method: 'POST', url: '/api/v2/auth/login', headers: json, payload: { email: 'nobody@example.com', password: 'x' } })).statusCode);
      }
      assert.deepEqual(statuses, [401, 401, 401, 429]);
    } finally {
      await a.close();
      await b.close();
      await prod.drop();
    }
  });
});

describe('ready reports an unreachable production database', () => {
  test('503 in the error shape', async () => {
    const prod = await createTestDatabase('backend_api_ready');
    await migrateDatabase(prod.url, { outbox: true });
    const server = await startTestServer({ DATABASE_URL: prod.url }, 'silent');
    try {
      await prod.drop(); // WITH (FORCE) terminates the pool's connections
      const res = await server.app.inject({ url: '/ready' });
      assertErrorShape(res, 503, 'E_NOT_READY');
    } finally {
      await server.close();
    }
  });
});
