// GET /api/v2/sync/status, the reconcile metrics on /metrics and the /sync page's files, against a
// real production and staging database: who may read the status, what it reports after a
// registration and a reconcile, and what it reports (without a 5xx) when staging is unreachable.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runSync } from '@elara/sync';
import { closedPort, createDatabases, json, registration, sql, startTestServer, waitFor, type Databases } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';
import type { SyncStatus } from '../src/ops/status.ts';

const STATUS = '/api/v2/sync/status';
const OPS_TOKEN = 'ops-token-for-tests-0123456789abcdef-0123456789';
const TABLES = [{ name: 'Organization' }, { name: 'User' }];
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/**
 * The worker warms the engine at start-up, which installs staging's write-tracking triggers. A
 * registration's sync that starts before that has finished installs them concurrently and, on a
 * fresh staging, can fail once with a duplicate pg_proc entry (retried, then fine; a race in
 * @elara/sync's ensureTracking). Wait for the warm-up so the failure counter below means something.
 */
async function waitForTracking(stagingUrl: string): Promise<void> {
  await waitFor(async () => (await sql(stagingUrl, `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'elara_sync_track'`)).rows[0].n === 2, 15_000, 50);
}

describe('sync status API, reconcile metrics and /sync files', () => {
  let dbs: Databases;
  let server: RunningServer;
  let owner: { id: string; organizationId: string; accessToken: string };

  before(async () => {
    dbs = await createDatabases('backend_status');
    server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, OPS_TOKEN }, 'warn');
    await waitForTracking(dbs.staging.url);
    const res = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: registration() });
    assert.equal(res.statusCode, 201, res.body);
    const body = res.json();
    owner = { id: body.user.id, organizationId: body.organization.id, accessToken: body.accessToken };
    // The immediate sync has delivered the registration (its success counter is what we check below).
    await waitFor(async () => {
      const s = (await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(OPS_TOKEN) })).json() as SyncStatus;
      return s.immediate.successes >= 1 && s.immediate.backlog === 0;
    }, 15_000, 50);
    const run = await runSync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: TABLES });
    assert.equal(run.ok, true, JSON.stringify(run.error));
  });
  after(async () => {
    await server?.close();
    await dbs?.drop();
  });

  describe('authorisation', () => {
    test('no token → 401 with the error shape', async () => {
      const res = await server.app.inject({ method: 'GET', url: STATUS });
      assert.equal(res.statusCode, 401);
      const body = res.json();
      assert.deepEqual(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode']);
      assert.equal(body.statusCode, 401);
      assert.equal(body.code, 'E_UNAUTHORIZED');
      assert.equal(typeof body.error, 'string');
      assert.match(body.message, /OPS_TOKEN|admin/);
    });

    test('the operations token → 200, no-store', async () => {
      const res = await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(OPS_TOKEN) });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.headers['cache-control'], 'no-store');
    });

    test('a wrong token, and a token differing only in its last character → 401', async () => {
      for (const token of ['nope', OPS_TOKEN.slice(0, -1) + 'X', `${OPS_TOKEN}x`]) {
        const res = await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(token) });
        assert.equal(res.statusCode, 401, token);
      }
    });

    test("a registered owner's access token → 401", async () => {
      const res = await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(owner.accessToken) });
      assert.equal(res.statusCode, 401);
      assert.equal(res.json().code, 'E_UNAUTHORIZED');
    });

    test('an access token with role admin → 200', async () => {
      const token = await server.app.elara.tokens.signAccess({ sub: owner.id, orgId: owner.organizationId, role: 'admin' });
      const res = await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(token) });
      assert.equal(res.statusCode, 200, res.body);
    });

    test('an admin token signed with another key → 401', async () => {
      const { createTokenSigner } = await import('../src/auth/tokens.ts');
      const other = createTokenSigner({ secret: 'another-secret-another-secret-0123456789', issuer: 'elara', audience: 'elara-api' });
      const token = await other.signAccess({ sub: owner.id, orgId: owner.organizationId, role: 'admin' });
      const res = await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(token) });
      assert.equal(res.statusCode, 401);
    });

    test('loopback is not open unless STATUS_OPEN_ON_LOOPBACK=1 (over real HTTP from 127.0.0.1)', async () => {
      const res = await fetch(`${server.url}${STATUS}`);
      assert.equal(res.status, 401);
    });
  });

  test('after a registration and a reconcile: tables equal and green, the run, the immediate counters', async () => {
    const s = (await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(OPS_TOKEN) })).json() as SyncStatus;
    assert.ok(!Number.isNaN(Date.parse(s.generatedAt)));
    assert.equal(s.intervalSeconds, 300);
    assert.deepEqual(s.staging, { configured: true, reachable: true, error: null });
    assert.deepEqual(s.tables.map((t) => t.table), ['Organization', 'User']);
    for (const t of s.tables) {
      assert.deepEqual(Object.keys(t).sort(), ['lagRows', 'lagSeconds', 'lastEqualAt', 'lastImmediateAt', 'productionRows', 'stagingRows', 'state', 'table']);
      assert.equal(t.productionRows, 1, t.table);
      assert.equal(t.stagingRows, 1, t.table);
      assert.equal(t.lagRows, 0, t.table);
      assert.equal(typeof t.lagSeconds, 'number', t.table);
      assert.ok(t.lagSeconds! >= 0 && t.lagSeconds! < 300, `${t.table} lag ${t.lagSeconds}`);
      assert.ok(!Number.isNaN(Date.parse(t.lastEqualAt!)), t.table);
      assert.equal(t.state, 'green', t.table);
    }
    const runs = s.runs.filter((r) => r.mode === 'run');
    assert.equal(runs.length, 1);
    const run = runs[0]!;
    assert.equal(run.status, 'ok');
    assert.ok(run.finishedAt && run.durationMs !== null);
    assert.equal(run.error, null);
    assert.deepEqual(run.tables.map((t) => t.table).sort(), ['Organization', 'User']);
    // The immediate sync had already delivered both rows: the reconcile found nothing to change.
    for (const t of run.tables) assert.equal(t.inserted + t.updated + t.deleted, 0, t.table);
    assert.equal(s.immediate.enabled, true);
    assert.ok(s.immediate.successes >= 1);
    assert.equal(s.immediate.failures, 0);
    assert.equal(s.immediate.backlog, 0);
    assert.equal(s.immediate.oldestAgeSeconds, 0);
    assert.deepEqual(s.immediate.recentFailures, []);
  });

  test('lag counts immediate syncs: a registration delivered after the reconcile moves the tables\' "in step" time to its sync', async () => {
    const before = (await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(OPS_TOKEN) })).json() as SyncStatus;
    const res = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: registration() });
    assert.equal(res.statusCode, 201, res.body);
    await waitFor(async () => (await sql(dbs.staging.url, 'SELECT 1 FROM "User" WHERE id = $1', [res.json().user.id])).rowCount, 10_000, 20);
    const after = (await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(OPS_TOKEN) })).json() as SyncStatus;
    for (const t of after.tables) {
      const b = before.tables.find((x) => x.table === t.table)!;
      assert.ok(t.lastImmediateAt && Date.parse(t.lastImmediateAt) > Date.parse(t.lastEqualAt!), `${t.table}: the immediate sync is newer than the run`);
      // The same instant measured from an older point: the lag now counts from the immediate sync.
      const fromRun = (Date.parse(after.generatedAt) - Date.parse(t.lastEqualAt!)) / 1000;
      assert.ok(t.lagSeconds! < fromRun, `${t.table}: lag ${t.lagSeconds} counts from the immediate sync, not the run (${fromRun})`);
      assert.equal(t.lastEqualAt, b.lastEqualAt, 'the run\'s checked time is unchanged');
    }
  });

  test('GET /metrics after runs: runs by result, rows per table, lag, last success', async () => {
    // Staging loses the user (as if its immediate sync had never happened): the second run inserts it.
    await sql(dbs.staging.url, 'DELETE FROM "User" WHERE id = $1', [owner.id]);
    const run = await runSync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: TABLES });
    assert.equal(run.ok, true, JSON.stringify(run.error));
    const res = await server.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const lines = res.body.split('\n');
    const value = (prefix: string) => {
      const line = lines.find((l) => l.startsWith(`${prefix} `));
      assert.ok(line, `no ${prefix} in /metrics`);
      return Number(line.split(' ').pop());
    };
    assert.equal(value('elara_sync_runs_total{target="staging",result="ok"}'), 2);
    assert.equal(value('elara_sync_runs_total{target="staging",result="error"}'), 0);
    assert.equal(value('elara_sync_rows_total{target="staging",table="User",op="inserted"}'), 1);
    assert.equal(value('elara_sync_rows_total{target="staging",table="Organization",op="inserted"}'), 0);
    assert.equal(value('elara_sync_rows_total{target="staging",table="User",op="deleted"}'), 0);
    const lag = value('elara_sync_lag_seconds{target="staging",table="User"}');
    assert.ok(lag >= 0 && lag < 300, `lag ${lag}`);
    assert.equal(value('elara_sync_lag_rows{target="staging",table="User"}'), 0);
    assert.equal(value('elara_sync_lag_rows{target="staging",table="Organization"}'), 0);
    const lastSuccess = value('elara_sync_last_success_timestamp_seconds{target="staging"}');
    assert.ok(Math.abs(lastSuccess - Date.now() / 1000) < 300, `last success ${lastSuccess}`);
    assert.ok(value('elara_sync_last_run_duration_seconds{target="staging"}') >= 0);
    assert.ok(value('elara_immediate_sync_total{result="success"}') >= 1);
  });

  test('the /sync page and its assets: 200, content types, a CSP, no external resources', async () => {
    for (const [url, type] of [
      ['/sync', /^text\/html; charset=utf-8/],
      ['/sync/', /^text\/html; charset=utf-8/],
      ['/sync/dashboard.js', /^text\/javascript; charset=utf-8/],
      ['/sync/dashboard.css', /^text\/css; charset=utf-8/],
    ] as const) {
      const res = await server.app.inject({ method: 'GET', url });
      assert.equal(res.statusCode, 200, url);
      assert.match(String(res.headers['content-type']), type, url);
      assert.match(String(res.headers['content-security-policy']), /default-src 'self'/, url);
      assert.ok(res.body.length > 100, url);
    }
    const html = (await server.app.inject({ method: 'GET', url: '/sync' })).body;
    assert.match(html, /data-testid="status-banner"/);
    assert.match(html, /src="\/sync\/dashboard\.js"/);
    const missing = await server.app.inject({ method: 'GET', url: '/sync/nope.js' });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().code, 'E_NOT_FOUND');
  });
});

describe('sync status with staging unreachable', () => {
  let dbs: Databases;
  let server: RunningServer;

  before(async () => {
    dbs = await createDatabases('backend_status_down');
    const port = await closedPort();
    server = await startTestServer({
      DATABASE_URL: dbs.prod.url,
      STAGING_DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/nowhere`,
      OPS_TOKEN,
    }, 'silent');
  });
  after(async () => {
    await server?.close();
    await dbs?.drop();
  });

  test('staging.reachable=false with the error, every table red, immediate failures counted, no 5xx', async () => {
    const reg = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: registration() });
    assert.equal(reg.statusCode, 201, reg.body);
    const s = await waitFor(async () => {
      const res = await server.app.inject({ method: 'GET', url: STATUS, headers: bearer(OPS_TOKEN) });
      assert.equal(res.statusCode, 200, res.body);
      const body = res.json() as SyncStatus;
      return body.immediate.failures >= 1 && body.immediate.recentFailures.length >= 1 ? body : null;
    }, 15_000, 100);
    assert.equal(s.staging.configured, true);
    assert.equal(s.staging.reachable, false);
    assert.match(s.staging.error ?? '', /ECONNREFUSED|connect/i);
    assert.deepEqual(s.tables.map((t) => [t.table, t.state]), [['Organization', 'red'], ['User', 'red']]);
    for (const t of s.tables) {
      assert.equal(t.productionRows, 1, t.table);
      assert.equal(t.stagingRows, null, t.table);
      assert.equal(t.lagRows, null, t.table);
    }
    assert.deepEqual(s.runs, []);
    assert.equal(s.immediate.successes, 0);
    assert.ok(s.immediate.backlog >= 1);
    assert.match(s.immediate.recentFailures[0]!.message, /ECONNREFUSED|connect/i);
    assert.ok(!JSON.stringify(s).includes(reg.json().user.email), 'the status must not show an email in full');
  });

  test('/metrics still answers 200 without reconcile figures', async () => {
    const res = await server.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /elara_immediate_sync_total\{result="failure"\} [1-9]/);
    assert.doesNotMatch(res.body, /elara_sync_lag_seconds\{/);
  });
});
