// The API over TLS: production and staging on a throwaway PostgreSQL with ssl = on and a CA made by
// the test (testkit/tls). With verify-full, `npm run db:migrate` migrates both, a registration
// reaches staging through the outbox, the in-process reconcile runs, and pg_stat_ssl (plus the
// server's log of every connection) shows each connection of the API encrypted. A wrong CA fails
// clearly: for production at start-up, for staging in the sync log, both naming sslrootcert.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startTlsServer, type TlsServer } from '@elara/testkit/tls';
import { isTlsError } from '@elara/sync';
import { json, registration, startTestServer, waitFor } from './helpers.ts';

const REGISTER = '/api/v2/auth/register';
const REPO = fileURLToPath(new URL('../../../', import.meta.url));

function dbMigrate(env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'packages/backend/src/db/migrate-cli.ts'], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('the API with both databases over verified TLS', () => {
  let server: TlsServer;
  let prod: string;
  let staging: string;
  let mark: number;

  before(async () => {
    server = await startTlsServer('backend');
    [prod, staging] = [await server.createDatabase('tls_prod'), await server.createDatabase('tls_stg')];
    // Plaintext is allowed too, so a path that ignored the URL's TLS settings would show up below.
    await server.setHba(['hostssl all all 127.0.0.1/32 trust', 'host all all 127.0.0.1/32 trust']);
    mark = server.logMark();
  });
  after(async () => {
    await server?.stop();
  });

  test('db:migrate over verify-full migrates production (with the outbox) and staging', async () => {
    const r = await dbMigrate({ DATABASE_URL: server.verifiedUrl(prod), STAGING_DATABASE_URL: server.verifiedUrl(staging), NODE_ENV: 'production' });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /migrated production .*sslmode=verify-full/);
    assert.match(r.out, /migrated staging/);
    assert.doesNotMatch(r.out, /SECURITY WARNING/);
    const tables = await server.sql(prod, `SELECT to_regclass('graphile_worker.jobs') IS NOT NULL AS outbox, to_regclass('"User"') IS NOT NULL AS users`);
    assert.deepEqual(tables.rows[0], { outbox: true, users: true });
  });

  test('a registration reaches staging through the outbox, the reconcile runs, every connection is encrypted', async () => {
    const api = await startTestServer({
      DATABASE_URL: server.verifiedUrl(prod),
      STAGING_DATABASE_URL: server.verifiedUrl(staging),
      // The in-process reconcile (engine connect()) runs one second after start.
      RECONCILE_INTERVAL: '1h',
    });
    try {
      assert.match(api.logs.text(), /production database TLS: sslmode=verify-full: server certificate and host name verified against .*ca\.crt/);
      const res = await api.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: registration() });
      assert.equal(res.statusCode, 201, res.body);
      const { user } = res.json();
      await waitFor(async () => (await server.sql(staging, 'SELECT 1 FROM "User" WHERE id = $1', [user.id])).rowCount, 15_000, 50);
      await waitFor(async () => (await server.sql(staging, `SELECT 1 FROM elara_sync.runs WHERE status = 'ok'`).catch(() => ({ rowCount: 0 }))).rowCount, 15_000, 100);

      // The server's own view of the API's open connections.
      const live = await server.sql('postgres', `
        SELECT a.datname, a.application_name, s.ssl, s.version
          FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = ANY($1) AND a.backend_type = 'client backend'`, [[prod, staging]]);
      const apps = new Set(live.rows.map((r) => r.application_name as string));
      for (const a of ['elara-backend', 'elara-sync-worker', 'elara-sync-worker-liveness', 'elara-backend-staging-sync']) {
        assert.ok(apps.has(a), `${a} has a connection open: ${[...apps].join(', ')}`);
      }
      assert.deepEqual(live.rows.filter((r) => !r.ssl), [], 'pg_stat_ssl: every open connection of the API is encrypted');
      assert.ok(live.rows.every((r) => r.version === 'TLSv1.3'));

      // Every connection made since the start, closed ones included (migrations, the reconcile's).
      const all = server.connectionsSince(mark).filter((c) => c.database === prod || c.database === staging);
      const names = new Set(all.map((c) => c.applicationName));
      for (const a of ['elara-sync-reader', 'elara-sync-writer']) assert.ok(names.has(a), `the reconcile connected as ${a}`);
      assert.deepEqual(all.filter((c) => !c.ssl), [], 'no plaintext connection to production or staging at any time');
      process.stderr.write(`# API connections over TLS: ${live.rows.length} open (${[...apps].sort().join(', ')}), ${all.length} since start, plaintext: 0\n`);
      assert.doesNotMatch(api.logs.text(), /SECURITY WARNING|BEGIN CERTIFICATE|PRIVATE KEY/);
    } finally {
      await api.close();
    }
  });

  test('staging with a wrong CA: the API still serves; the sync log names staging, sslrootcert and the fix', async () => {
    const api = await startTestServer({
      DATABASE_URL: server.verifiedUrl(prod),
      STAGING_DATABASE_URL: server.url(staging, { sslmode: 'verify-full', sslrootcert: server.files.wrongCa }),
    });
    try {
      const res = await api.app.inject({ method: 'POST', url: REGISTER, headers: json, payload: registration() });
      assert.equal(res.statusCode, 201, 'a registration never depends on staging');
      await waitFor(async () => /Registration sync failed/.test(api.logs.text()), 10_000, 50);
      const failure = api.logs.lines.map((l) => JSON.parse(l)).find((l) => /Registration sync failed/.test(l.msg));
      const text = JSON.stringify(failure.error);
      assert.match(text, /staging: TLS to localhost:\d+ failed: the server's certificate is not signed by the CA in sslrootcert=.*wrong-ca\.crt/);
      assert.match(text, /set sslrootcert in STAGING_DATABASE_URL to the CA certificate/);
      assert.doesNotMatch(api.logs.text(), /BEGIN CERTIFICATE|PRIVATE KEY/);
    } finally {
      await api.close();
    }
  });

  test('production with a wrong CA or a wrong host name: the start fails with the TLS error and its fix', async () => {
    const cases: Array<[string, RegExp, RegExp]> = [
      [server.url(prod, { sslmode: 'verify-full', sslrootcert: server.files.wrongCa }), /not signed by the CA in sslrootcert=.*wrong-ca\.crt/, /set sslrootcert in DATABASE_URL/],
      [server.url(prod, { sslmode: 'verify-full', sslrootcert: server.files.ca }, '127.0.0.1'), /the server's certificate is for localhost, not for 127\.0\.0\.1/, /connect with a host name the certificate lists \(localhost\) in DATABASE_URL/],
    ];
    for (const [url, message, hint] of cases) {
      const err = await startTestServer({ DATABASE_URL: url }).then(async (s) => { await s.close(); return null; }, (e: unknown) => e);
      assert.ok(isTlsError(err), `a TLS error, got ${String(err)}`);
      assert.match((err as Error).message, /^production: TLS to (localhost|127\.0\.0\.1):\d+ failed: /);
      assert.match((err as Error).message, message);
      assert.match((err as { hint: string }).hint, hint);
    }
  });

  test('db:migrate: sslmode=disable against a TLS-only server fails clearly; plaintext to the network is refused in production', async () => {
    await server.setHba(['hostssl all all 127.0.0.1/32 trust']);
    const r = await dbMigrate({ DATABASE_URL: server.url(prod, { sslmode: 'disable' }) });
    assert.equal(r.code, 1);
    assert.match(r.out, /db:migrate failed: production: localhost:\d+ refused a connection without TLS: the server accepts only TLS connections \(pg_hba\.conf hostssl\), and sslmode=disable did not use TLS/);
    assert.match(r.out, /what to do: use sslmode=verify-full with sslrootcert=<the server's CA file> in DATABASE_URL/);
    assert.doesNotMatch(r.out, /\n\s+at .+:\d+:\d+/, 'no stack trace');
    const refused = await dbMigrate({ DATABASE_URL: 'postgresql://app:pw@db.example.invalid/prod', NODE_ENV: 'production' });
    assert.equal(refused.code, 2);
    assert.match(refused.out, /DATABASE_URL connects to a host on the network without TLS .*DB_ALLOW_PLAINTEXT=true/);
  });
});
