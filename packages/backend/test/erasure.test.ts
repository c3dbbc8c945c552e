// Erasure, DELETE /api/v2/auth/me, end to end on real production and staging databases: production
// rows gone (the organization only with its last member), tokens dead, an audit row without
// personal data, the staging copy gone within 1 s through the outbox (no reconcile); wrong
// passwords, bad tokens and bad bodies erase nothing; a QA row in staging holds the staging delete
// (reported, not retried forever); staging down → delivered when it returns; no personal data of
// the erased user in the logs of the flow.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { hash } from '@node-rs/argon2';
import { runSync, verifySync } from '@elara/sync';
import { createTestDatabase, type TestDatabase } from '@elara/testkit';
import { migrateDatabase } from '../src/db/migrate.ts';
import { createDatabases, dbName, json, registration, sql, startProxy, startTestServer, waitFor, type CapturedLogs, type Databases } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';

type Server = RunningServer & { logs: CapturedLogs };
const REGISTER = '/api/v2/auth/register';
const ME = '/api/v2/auth/me';
const TABLES = [{ name: 'Organization' }, { name: 'User' }];

interface Registered {
  body: ReturnType<typeof registration>;
  user: { id: string; email: string; organizationId: string };
  organization: { id: string; name: string; apiKey: string };
  apiSecret: string;
  accessToken: string;
  refreshToken: string;
}

async function register(server: Server, overrides: Record<string, unknown> = {}): Promise<Registered> {
  const body = registration(overrides);
  const res = await server.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: body });
  assert.equal(res.statusCode, 201, res.body);
  return { ...res.json(), body };
}

const erase = (server: Server, token: string | null, payload: unknown, remoteAddress?: string) => server.app.inject({
  method: 'DELETE', url: ME, remoteAddress,
  headers: { ...(payload === undefined ? {} : json), ...(token ? { authorization: `Bearer ${token}` } : {}) },
  ...(payload === undefined ? {} : { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) }),
});

function assertError(res: { statusCode: number; json(): any }, status: number, code: string) {
  assert.equal(res.statusCode, status, JSON.stringify(res.json()));
  const b = res.json();
  assert.equal(b.statusCode, status);
  assert.equal(b.code, code);
  assert.equal(typeof b.error, 'string');
  assert.equal(typeof b.message, 'string');
  return b;
}

async function metricValue(server: RunningServer, series: string): Promise<number> {
  const text = await server.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

const rowCount = async (url: string, table: string, id: string) =>
  (await sql(url, `SELECT count(*)::int AS n FROM "${table}" WHERE id = $1`, [id])).rows[0].n as number;

/** Every value of the person that must not survive the erasure, anywhere it is scanned for. */
const personalValues = (r: Registered) => [r.user.email, r.body.password, r.body.firstName, r.body.lastName, r.organization.name, r.organization.apiKey, r.apiSecret, r.refreshToken, r.accessToken];

describe('erasure with staging sync on', () => {
  let dbs: Databases;
  let server: Server;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  const erasureJobs = async () => (await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE task_identifier = 'sync_erasure'`)).rows[0].n as number;
  // Delivered, and its last log line written (later lines of the test then belong to the erasure).
  const inStaging = async (r: Registered) => {
    await waitFor(async () => (await rowCount(dbs.staging.url, 'User', r.user.id)) === 1, 10_000, 10);
    await waitFor(async () => server.logs.text().includes(`[DB Sync] ✓ Registration sync completed for: ${r.user.email}`), 5000, 10);
  };

  before(async () => {
    dbs = await createDatabases('backend_erasure');
    // QA data: a staging-only table whose rows point at users (the engine must not delete a user
    // that QA rows still reference; it holds the delete and reports it).
    await sql(dbs.staging.url, `CREATE TABLE qa_notes (id serial PRIMARY KEY, "userId" uuid NOT NULL REFERENCES "User"(id), note text NOT NULL)`);
    proxy = await startProxy(5432);
    server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: proxy.url(dbName(dbs.staging.url)) });
    // Steady state first: one registration delivered end to end (connections and catalog warm).
    await inStaging(await register(server));
  });
  after(async () => {
    await server?.close();
    await proxy?.stop();
    await dbs?.drop();
  });

  test('the last member erased → user, organization (API key), refresh tokens gone; tokens stop working; staging copy gone within 1 s', async () => {
    const r = await register(server);
    await inStaging(r);
    const successes = await metricValue(server, 'elara_erasure_sync_total{result="success"}');
    const res = await erase(server, r.accessToken, { password: r.body.password });
    assert.equal(res.statusCode, 204, res.body);
    assert.equal(res.body, '');
    assert.equal(res.headers['cache-control'], 'no-store');
    const t0 = Date.now();
    // Production, right after the response: the one transaction has committed.
    assert.equal(await rowCount(dbs.prod.url, 'User', r.user.id), 0);
    assert.equal(await rowCount(dbs.prod.url, 'Organization', r.organization.id), 0);
    assert.equal((await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM "Organization" WHERE "apiKey" = $1`, [r.organization.apiKey])).rows[0].n, 0);
    assert.equal((await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM "RefreshToken" WHERE "userId" = $1`, [r.user.id])).rows[0].n, 0);
    // Staging, through the outbox alone (no reconcile runs in this file's server).
    await waitFor(async () => (await rowCount(dbs.staging.url, 'User', r.user.id)) === 0, 1000, 5);
    process.stderr.write(`# erasure reached staging ${Date.now() - t0} ms after the response\n`);
    await waitFor(async () => (await rowCount(dbs.staging.url, 'Organization', r.organization.id)) === 0, 1000, 5);
    // Every token of the user is dead: the access token (its sub is gone), the refresh token, a second erase.
    assertError(await server.app.inject({ url: ME, headers: { authorization: `Bearer ${r.accessToken}` } }), 401, 'E_INVALID_TOKEN');
    assertError(await server.app.inject({ method: 'POST', url: '/api/v2/auth/refresh', headers: json, payload: { refreshToken: r.refreshToken } }), 401, 'E_INVALID_TOKEN');
    assertError(await erase(server, r.accessToken, { password: r.body.password }), 401, 'E_INVALID_TOKEN');
    assertError(await server.app.inject({ method: 'POST', url: '/api/v2/auth/login', headers: json, payload: { email: r.user.email, password: r.body.password } }), 401, 'E_INVALID_CREDENTIALS');
    await waitFor(async () => (await erasureJobs()) === 0, 5000, 20);
    await waitFor(async () => (await metricValue(server, 'elara_erasure_sync_total{result="success"}')) === successes + 1, 5000, 20);
    assert.ok(server.logs.text().includes(`[DB Sync] ✓ Erasure synced to staging: ${r.user.id}`));
  });

  test("an erased admin's access token stops opening the status API at once, not when it expires", async () => {
    const r = await register(server);
    const admin = await server.app.elara.tokens.signAccess({ sub: r.user.id, orgId: r.organization.id, role: 'admin' });
    const status = () => server.app.inject({ url: '/api/v2/sync/status', headers: { authorization: `Bearer ${admin}` } });
    assert.equal((await status()).statusCode, 200);
    assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
    assertError(await status(), 401, 'E_UNAUTHORIZED');
  });

  test('the audit row of the erasure has no personal data, and the earlier rows lose IP, user agent and user', async () => {
    const ip = '203.0.113.77';
    const ua = `erasure-test-agent/${Date.now()}`;
    const body = registration();
    const reg = await server.app.inject({ method: 'POST', url: REGISTER, remoteAddress: ip, headers: { ...json, 'user-agent': ua }, payload: body });
    assert.equal(reg.statusCode, 201, reg.body);
    const r: Registered = { ...reg.json(), body };
    const registered = (await sql(dbs.prod.url, `SELECT id, ip, "userAgent" FROM "AuditLog" WHERE "userId" = $1`, [r.user.id])).rows;
    assert.deepEqual(registered.map((x) => [x.ip, x.userAgent]), [[ip, ua]]);
    const res = await server.app.inject({
      method: 'DELETE', url: ME, remoteAddress: ip,
      headers: { ...json, authorization: `Bearer ${r.accessToken}`, 'user-agent': ua }, payload: { password: r.body.password },
    });
    assert.equal(res.statusCode, 204, res.body);
    const rows = (await sql(dbs.prod.url, `SELECT a.*, row_to_json(a)::text AS whole FROM "AuditLog" a WHERE action = 'user.erase' AND details->>'erasedUserId' = $1`, [r.user.id])).rows;
    assert.equal(rows.length, 1);
    const row = rows[0];
    assert.equal(row.outcome, 'success');
    assert.equal(row.userId, null);
    assert.equal(row.organizationId, null, 'the organization was erased with its last member');
    assert.equal(row.ip, null);
    assert.equal(row.userAgent, null);
    assert.equal(typeof row.requestId, 'string');
    assert.deepEqual(row.details, { erasedUserId: r.user.id, organizationId: r.organization.id, organizationErased: true, refreshTokensRevoked: 1 });
    for (const v of [...personalValues(r), ip, ua]) assert.ok(!row.whole.includes(v), `the audit row contains ${v.slice(0, 12)}…`);
    // The registration's audit row stays as a record of the event, unlinked from the person.
    const earlier = (await sql(dbs.prod.url, `SELECT action, "userId", "organizationId", ip, "userAgent" FROM "AuditLog" WHERE id = $1`, [registered[0].id])).rows[0];
    assert.deepEqual(earlier, { action: 'user.register', userId: null, organizationId: null, ip: null, userAgent: null });
    const whole = JSON.stringify((await sql(dbs.prod.url, `SELECT json_agg(a) AS j FROM "AuditLog" a`)).rows[0].j);
    for (const v of [...personalValues(r), ip, ua]) assert.ok(!whole.includes(v), `an audit row contains ${v.slice(0, 12)}…`);
  });

  test('a member who is not the last → only the user goes; the organization and the other member stay, in production and staging', async () => {
    const owner = await register(server);
    // A second member of the same organization (there is no invite endpoint yet), then staging in step.
    const member = (await sql(dbs.prod.url, `INSERT INTO "User" (email, "passwordHash", role, "organizationId") VALUES ($1, 'x', 'member', $2) RETURNING id`,
      [`member.${Date.now()}@example.com`, owner.organization.id])).rows[0].id as string;
    await runSync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: TABLES });
    assert.equal(await rowCount(dbs.staging.url, 'User', member), 1);
    const res = await erase(server, owner.accessToken, { password: owner.body.password });
    assert.equal(res.statusCode, 204, res.body);
    assert.equal(await rowCount(dbs.prod.url, 'User', owner.user.id), 0);
    assert.equal(await rowCount(dbs.prod.url, 'Organization', owner.organization.id), 1);
    assert.equal(await rowCount(dbs.prod.url, 'User', member), 1);
    await waitFor(async () => (await rowCount(dbs.staging.url, 'User', owner.user.id)) === 0, 1000, 5);
    assert.equal(await rowCount(dbs.staging.url, 'Organization', owner.organization.id), 1);
    assert.equal(await rowCount(dbs.staging.url, 'User', member), 1);
    const audit = (await sql(dbs.prod.url, `SELECT "organizationId", details FROM "AuditLog" WHERE action = 'user.erase' AND details->>'erasedUserId' = $1`, [owner.user.id])).rows[0];
    assert.equal(audit.organizationId, owner.organization.id);
    assert.equal(audit.details.organizationErased, false);
  });

  test('the last two members erasing at once → both erased, and the organization goes exactly once', async () => {
    const a = await register(server);
    const password = 'second-member-password-long';
    const b = (await sql(dbs.prod.url, `INSERT INTO "User" (email, "passwordHash", role, "organizationId") VALUES ($1, $2, 'member', $3) RETURNING id`,
      [`second.${Date.now()}@example.com`, await hash(password), a.organization.id])).rows[0].id as string;
    const bToken = await server.app.elara.tokens.signAccess({ sub: b, orgId: a.organization.id, role: 'member' });
    const [ra, rb] = await Promise.all([erase(server, a.accessToken, { password: a.body.password }), erase(server, bToken, { password })]);
    assert.deepEqual([ra.statusCode, rb.statusCode], [204, 204], `${ra.body} ${rb.body}`);
    assert.equal(await rowCount(dbs.prod.url, 'Organization', a.organization.id), 0);
    const audits = (await sql(dbs.prod.url, `SELECT details FROM "AuditLog" WHERE action = 'user.erase' AND details->>'organizationId' = $1`, [a.organization.id])).rows;
    assert.deepEqual(audits.map((x) => x.details.organizationErased).sort(), [false, true]);
    await waitFor(async () => (await rowCount(dbs.staging.url, 'Organization', a.organization.id)) === 0, 1000, 5);
  });

  test('wrong password → 401 E_INVALID_CREDENTIALS and nothing erased, in production or staging', async () => {
    const r = await register(server);
    await inStaging(r);
    const res = await erase(server, r.accessToken, { password: `${r.body.password}-wrong` });
    const b = assertError(res, 401, 'E_INVALID_CREDENTIALS');
    assert.ok(!b.message.includes(r.body.password));
    assert.equal(await rowCount(dbs.prod.url, 'User', r.user.id), 1);
    assert.equal(await rowCount(dbs.prod.url, 'Organization', r.organization.id), 1);
    assert.equal((await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM "RefreshToken" WHERE "userId" = $1`, [r.user.id])).rows[0].n, 1);
    assert.equal(await erasureJobs(), 0);
    assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 1);
    assert.equal((await server.app.inject({ url: ME, headers: { authorization: `Bearer ${r.accessToken}` } })).statusCode, 200, 'the token still works');
    const failed = (await sql(dbs.prod.url, `SELECT outcome FROM "AuditLog" WHERE action = 'user.erase' AND "userId" = $1`, [r.user.id])).rows;
    assert.deepEqual(failed.map((x) => x.outcome), ['failure']);
  });

  test('no token, a bad token, a refresh token as a bearer → 401; a bad body → 400 in our shape; nothing erased', async () => {
    const r = await register(server);
    const ok = { password: r.body.password };
    assertError(await erase(server, null, ok), 401, 'E_UNAUTHORIZED');
    assertError(await server.app.inject({ method: 'DELETE', url: ME, headers: { ...json, authorization: 'Basic abc' }, payload: ok }), 401, 'E_UNAUTHORIZED');
    assertError(await erase(server, 'not.a.jwt', ok), 401, 'E_INVALID_TOKEN');
    assertError(await erase(server, `${r.accessToken.slice(0, -4)}AAAA`, ok), 401, 'E_INVALID_TOKEN');
    assertError(await erase(server, r.refreshToken, ok), 401, 'E_INVALID_TOKEN');
    assertError(await erase(server, r.accessToken, undefined), 400, 'E_VALIDATION');
    assertError(await erase(server, r.accessToken, {}), 400, 'E_VALIDATION');
    assertError(await erase(server, r.accessToken, { password: 42 }), 400, 'E_VALIDATION');
    assertError(await erase(server, r.accessToken, { password: '' }), 400, 'E_VALIDATION');
    assertError(await erase(server, r.accessToken, { password: 'x'.repeat(129) }), 400, 'E_VALIDATION');
    assertError(await erase(server, r.accessToken, [r.body.password]), 400, 'E_VALIDATION');
    const unknown = assertError(await erase(server, r.accessToken, { ...ok, userId: r.user.id }), 400, 'E_UNKNOWN_FIELD');
    assert.deepEqual(unknown.details.map((d: { field: string }) => d.field), ['userId']);
    assertError(await erase(server, r.accessToken, '{"password": '), 400, 'E_INVALID_JSON');
    assertError(await server.app.inject({ method: 'DELETE', url: ME, headers: { 'content-type': 'text/plain', authorization: `Bearer ${r.accessToken}` }, payload: r.body.password }), 415, 'E_UNSUPPORTED_MEDIA_TYPE');
    assert.equal(await rowCount(dbs.prod.url, 'User', r.user.id), 1);
    assert.equal(await erasureJobs(), 0);
  });

  test('a QA row in staging still references the user → the staging delete is held and reported once (no retries); production is erased', async () => {
    const r = await register(server);
    await inStaging(r);
    await sql(dbs.staging.url, `INSERT INTO qa_notes ("userId", note) VALUES ($1, 'QA: test account for checkout')`, [r.user.id]);
    const held = await metricValue(server, 'elara_erasure_sync_total{result="held"}');
    const failures = await metricValue(server, 'elara_erasure_sync_total{result="failure"}');
    assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
    assert.equal(await rowCount(dbs.prod.url, 'User', r.user.id), 0);
    assert.equal(await rowCount(dbs.prod.url, 'Organization', r.organization.id), 0);
    // The job finishes (it is not retried: retrying cannot help until QA removes their row)...
    await waitFor(async () => (await erasureJobs()) === 0 && (await metricValue(server, 'elara_erasure_sync_total{result="held"}')) === held + 1, 5000, 20);
    assert.equal(await metricValue(server, 'elara_erasure_sync_total{result="failure"}'), failures);
    // ...with a warning naming the held keys, and staging keeps the row the QA data needs.
    await new Promise<void>((resolve) => server.logger.flush(() => resolve()));
    const warning = server.logs.lines.find((l) => l.includes('[DB Sync] ⚠ Erasure held in staging') && l.includes(r.user.id));
    assert.ok(warning, 'a warning names the held user');
    assert.match(warning!, /"level":40/);
    assert.ok(warning!.includes(`User ${r.user.id}`) && warning!.includes(`Organization ${r.organization.id}`), warning);
    assert.ok(!server.logs.text().includes(`[DB Sync] ✓ Erasure synced to staging: ${r.user.id}`));
    assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 1);
    // The proof of docs/privacy.md sees it: verify counts the copy as extra in staging.
    const v = await verifySync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: TABLES });
    assert.equal(v.equal, false);
    assert.ok(v.tables.every((t) => t.extra >= 1), JSON.stringify(v.tables));
    await sql(dbs.staging.url, `DELETE FROM qa_notes WHERE "userId" = $1`, [r.user.id]);
  });

  // The person registered and erased within one reconcile interval: no run ever saw their rows, and
  // production's row versions are back to what the last run saw. The run still compares the buckets
  // the immediate syncs wrote (their target log), so it deletes the copy once QA's row is gone.
  test('a held erasure is completed by the next reconcile run once QA removes their row', async () => {
    const r = await register(server);
    await inStaging(r);
    await sql(dbs.staging.url, `INSERT INTO qa_notes ("userId", note) VALUES ($1, 'QA: held')`, [r.user.id]);
    assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
    await waitFor(async () => (await erasureJobs()) === 0, 5000, 20);
    assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 1, 'held');
    await sql(dbs.staging.url, `DELETE FROM qa_notes WHERE "userId" = $1`, [r.user.id]);
    const run = await runSync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: TABLES });
    assert.equal(run.ok, true, JSON.stringify(run.tables));
    assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 0);
    assert.equal(await rowCount(dbs.staging.url, 'Organization', r.organization.id), 0);
  });

  test('staging down during the erasure → production erased at once; the staging delete is retried and arrives when staging returns', async () => {
    const r = await register(server);
    await inStaging(r);
    const failures = await metricValue(server, 'elara_erasure_sync_total{result="failure"}');
    await proxy.stop();
    try {
      const t = performance.now();
      assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
      assert.ok(performance.now() - t < 2000, 'the erasure never waits for staging');
      assert.equal(await rowCount(dbs.prod.url, 'User', r.user.id), 0);
      await waitFor(async () => (await metricValue(server, 'elara_erasure_sync_total{result="failure"}')) > failures, 10_000, 20);
      assert.equal(await erasureJobs(), 1, 'the job waits to retry');
      assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 1);
    } finally {
      await proxy.start();
    }
    // The probe notices staging is back and runs the waiting job at once.
    await waitFor(async () => (await rowCount(dbs.staging.url, 'User', r.user.id)) === 0, 10_000, 20);
    await waitFor(async () => (await erasureJobs()) === 0, 5000, 20);
    assert.equal(await rowCount(dbs.staging.url, 'Organization', r.organization.id), 0);
  });

  test('a registration sync still waiting (staging down) is removed by the erasure: staging never gets the person', async () => {
    await proxy.stop();
    let r!: Registered;
    try {
      r = await register(server);
      await waitFor(async () => (await sql(dbs.prod.url, `SELECT attempts FROM graphile_worker.jobs WHERE task_identifier = 'sync_registration' AND attempts > 0 AND locked_at IS NULL`)).rowCount, 10_000, 20);
      assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
      // Its payload carried the email: gone with the erasure (in its transaction; or, had a worker
      // held the job just then, by the erasure job before it syncs).
      await waitFor(async () => (await sql(dbs.prod.url, `SELECT payload::text FROM graphile_worker._private_jobs`)).rows.every((x) => !x.payload.includes(r.user.email)), 10_000, 20);
    } finally {
      await proxy.start();
    }
    await waitFor(async () => (await erasureJobs()) === 0, 10_000, 20);
    assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 0);
    assert.equal(await rowCount(dbs.staging.url, 'Organization', r.organization.id), 0);
    assert.equal((await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM graphile_worker.jobs`)).rows[0].n, 0);
  });

  test('a registration job that runs after the erasure (e.g. released from a dead worker) delivers nothing and logs no email', async () => {
    const r = await register(server);
    await inStaging(r);
    assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
    await waitFor(async () => (await rowCount(dbs.staging.url, 'User', r.user.id)) === 0, 1000, 5);
    const from = server.logs.lines.length;
    // The same job a registration enqueues, as if a worker had held it through the erasure.
    await sql(dbs.prod.url, `SELECT graphile_worker.add_job('sync_registration', json_build_object('organizationId', $1::text, 'userId', $2::text, 'email', $3::text, 'organizationName', $4::text))`,
      [r.organization.id, r.user.id, r.user.email, r.organization.name]);
    await waitFor(async () => server.logs.lines.slice(from).some((l) => l.includes(`Registration sync skipped, the user was erased: ${r.user.id}`)), 5000, 10);
    await waitFor(async () => (await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM graphile_worker.jobs`)).rows[0].n === 0, 5000, 20);
    assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 0);
    assert.ok(server.logs.lines.slice(from).every((l) => !l.includes(r.user.email)));
  });

  test("one user's sync jobs take turns: the erasure job waits while another sync of that user holds the user's lock", async () => {
    const r = await register(server);
    await inStaging(r);
    // Stand in for a registration sync of the same user that is still applying.
    const holder = new pg.Client({ connectionString: dbs.prod.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(720301520, hashtext($1))', [r.user.id]);
      assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
      await waitFor(async () => (await holder.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = 720301520::oid AND objid = hashtext($1)::oid`, [r.user.id])).rowCount, 5000, 10);
      assert.equal(await rowCount(dbs.staging.url, 'User', r.user.id), 1, 'the erasure job has not applied while it waits');
      await holder.query('SELECT pg_advisory_unlock(720301520, hashtext($1))', [r.user.id]);
      await waitFor(async () => (await rowCount(dbs.staging.url, 'User', r.user.id)) === 0, 1000, 5);
    } finally {
      await holder.end();
    }
  });

  test('no personal data of the erased user and no password in any log line of the flow', async () => {
    const r = await register(server);
    await inStaging(r);
    await new Promise<void>((resolve) => server.logger.flush(() => resolve()));
    const from = server.logs.lines.length;
    assertError(await erase(server, r.accessToken, { password: 'a-wrong-password-for-the-log-scan' }), 401, 'E_INVALID_CREDENTIALS');
    assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
    await waitFor(async () => (await rowCount(dbs.staging.url, 'User', r.user.id)) === 0, 1000, 5);
    await waitFor(async () => (await erasureJobs()) === 0, 5000, 20);
    await new Promise<void>((resolve) => server.logger.flush(() => resolve()));
    const lines = server.logs.lines.slice(from);
    assert.ok(lines.some((l) => l.includes(`[DB Sync] ✓ Erasure synced to staging: ${r.user.id}`)), 'the flow was logged');
    assert.ok(lines.some((l) => l.includes('"account erased"')));
    for (const line of lines) {
      for (const v of [...personalValues(r), 'a-wrong-password-for-the-log-scan', '$argon2', 'eyJ']) {
        assert.ok(!line.includes(v!), `a log line contains ${v!.slice(0, 12)}…: ${line.slice(0, 300)}`);
      }
      assert.doesNotMatch(line, /insert into|delete from|select .* from|params:/i, `a log line contains SQL: ${line.slice(0, 300)}`);
    }
  });
});

describe('erasure with staging sync off, and its rate limit', () => {
  let prod: TestDatabase;
  let server: Server;
  before(async () => {
    prod = await createTestDatabase('backend_erasure_off');
    await migrateDatabase(prod.url, { outbox: true });
    server = await startTestServer({ DATABASE_URL: prod.url, STAGING_DATABASE_URL: undefined, RATE_LIMIT_EMAIL_PER_HOUR: '3' }, 'warn');
  });
  after(async () => {
    await server?.close();
    await prod?.drop();
  });

  test('erased in production; no outbox job (every target drops it on its next run)', async () => {
    const r = await register(server);
    assert.equal((await erase(server, r.accessToken, { password: r.body.password })).statusCode, 204);
    assert.equal(await rowCount(prod.url, 'User', r.user.id), 0);
    assert.equal(await rowCount(prod.url, 'Organization', r.organization.id), 0);
    assert.equal((await sql(prod.url, 'SELECT count(*)::int AS n FROM graphile_worker.jobs')).rows[0].n, 0);
  });

  test('wrong passwords count with failed logins, per email and address: then 429 with Retry-After, even with the right one', async () => {
    const r = await register(server);
    const codes: number[] = [];
    codes.push((await server.app.inject({ method: 'POST', url: '/api/v2/auth/login', headers: json, payload: { email: r.user.email, password: 'wrong-password-x' } })).statusCode);
    for (let i = 0; i < 3; i++) codes.push((await erase(server, r.accessToken, { password: 'wrong-password-x' })).statusCode);
    assert.deepEqual(codes, [401, 401, 401, 429]);
    const blocked = assertError(await erase(server, r.accessToken, { password: r.body.password }), 429, 'E_RATE_LIMITED');
    assert.ok(blocked.message.includes('retry after'));
    const res = await erase(server, r.accessToken, { password: r.body.password });
    assert.ok(Number(res.headers['retry-after']) > 0);
    assert.equal(await rowCount(prod.url, 'User', r.user.id), 1, 'nothing erased');
    // The owner, from another address, is not locked out.
    assert.equal((await erase(server, r.accessToken, { password: r.body.password }, '198.51.100.8')).statusCode, 204);
    assert.equal(await rowCount(prod.url, 'User', r.user.id), 0);
  });
});
