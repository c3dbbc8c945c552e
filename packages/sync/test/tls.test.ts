// elara-sync over TLS against a throwaway PostgreSQL with ssl = on and a certificate from a CA made
// by the test (testkit/tls): verify-full with the right CA works end to end (run, verify, status,
// doctor, as processes), every connection the CLI makes is encrypted (the server's log of each
// connection), and each way TLS can be wrong fails with a message that names the side and the fix.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTlsServer, type TlsServer } from '@elara/testkit/tls';
import { ADMIN_URL } from '@elara/testkit';
import { connect } from '../src/engine/connect.ts';
import { SyncError } from '../src/errors.ts';
import { createPool, tlsStatus } from '../src/tls/client.ts';
import { runCli } from './helpers.ts';

const SCHEMA = `
CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, "organizationId" uuid NOT NULL REFERENCES "Organization"(id));
CREATE SCHEMA drizzle;
CREATE TABLE drizzle.__drizzle_migrations (id serial PRIMARY KEY, hash text NOT NULL, created_at bigint);
INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('m1', 1);`;
const ROWS = `INSERT INTO "Organization" SELECT gen_random_uuid(), 'Org ' || g FROM generate_series(1, 20) g;
  INSERT INTO "User" SELECT gen_random_uuid(), 'u' || g || '@x.test', (SELECT id FROM "Organization" ORDER BY id OFFSET g % 20 LIMIT 1) FROM generate_series(1, 60) g;`;

let server: TlsServer;
let src: string;
let dst: string;
/** TLS only (pg_hba: hostnossl … reject): sslmode=disable must fail here. */
let strict: string;
/** Client-certificate authentication (pg_hba: hostssl … cert). */
let certDb: string;

before(async () => {
  server = await startTlsServer('sync');
  [src, dst, strict, certDb] = await Promise.all([server.createDatabase('tls_src'), server.createDatabase('tls_dst'), server.createDatabase('tls_strict'), server.createDatabase('tls_cert')]);
  await server.sql(src, SCHEMA + ROWS);
  await server.sql(dst, SCHEMA);
  // Plaintext is allowed on src and dst on purpose: the log then proves each connection chose TLS.
  await server.setHba([
    `hostnossl ${strict} all 127.0.0.1/32 reject`,
    `hostssl ${certDb} all 127.0.0.1/32 cert`,
    `hostnossl ${certDb} all 127.0.0.1/32 reject`,
    'hostssl all all 127.0.0.1/32 trust',
    'host all all 127.0.0.1/32 trust',
  ]);
});

after(async () => {
  await server?.stop();
});

const sslOf = async (c: { query: (q: string) => Promise<{ rows: Array<{ ssl: boolean; version: string | null }> }> }) =>
  (await c.query('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0]!;

async function connectError(url: string, side: 'source' | 'target'): Promise<SyncError> {
  const err = await connect(url, side, 'elara-sync-test').then((c) => c.end().then(() => null), (e: unknown) => e);
  assert.ok(err instanceof SyncError, `expected a SyncError, got ${String(err)}`);
  return err;
}

/** The connect error is about TLS, names the side and the setting, and does not send you to check uptime. */
function assertTlsError(e: SyncError, side: 'source' | 'target', message: RegExp, hint: RegExp): void {
  assert.equal(e.code, side === 'source' ? 'E_CONNECT_SOURCE' : 'E_CONNECT_TARGET');
  assert.match(e.message, side === 'source' ? /^cannot connect to production \(source\)/ : /^cannot connect to staging \(target\)/);
  assert.match(e.message, message);
  assert.match(e.hint, hint);
  assert.match(e.hint, side === 'source' ? /--from \/ DATABASE_URL/ : /--to \/ STAGING_DATABASE_URL/);
  assert.doesNotMatch(e.hint, /database is up/);
}

describe('each sslmode against a TLS server, as libpq behaves', () => {
  test('verify-full with the right CA: encrypted, chain and host name verified', async () => {
    const c = await connect(server.verifiedUrl(src), 'source', 'elara-sync-test');
    try {
      assert.deepEqual(await sslOf(c), { ssl: true, version: 'TLSv1.3' });
      const st = tlsStatus(c);
      assert.equal(st.verify, 'full');
      assert.equal(st.server?.subject, 'localhost');
      assert.equal(st.server?.issuer, 'Elara Test CA');
    } finally {
      await c.end();
    }
  });

  test('verify-full with a wrong CA fails, naming the side, the CA file and the fix', async () => {
    const e = await connectError(server.url(dst, { sslmode: 'verify-full', sslrootcert: server.files.wrongCa }), 'target');
    assertTlsError(e, 'target', /the server's certificate is not signed by the CA in sslrootcert=.*wrong-ca\.crt/, /set sslrootcert in .* to the CA certificate \(PEM\) that signed this server's certificate/);
  });

  test('verify-full with a wrong host name fails and says which names the certificate has; verify-ca accepts it', async () => {
    const url = (mode: string) => server.url(src, { sslmode: mode, sslrootcert: server.files.ca }, '127.0.0.1');
    const e = await connectError(url('verify-full'), 'source');
    assertTlsError(e, 'source', /the server's certificate is for localhost, not for 127\.0\.0\.1/, /connect with a host name the certificate lists \(localhost\)/);
    const c = await connect(url('verify-ca'), 'source', 'elara-sync-test');
    try {
      assert.equal((await sslOf(c)).ssl, true);
      assert.equal(tlsStatus(c).verify, 'ca');
    } finally {
      await c.end();
    }
  });

  test('require encrypts without verifying (a CA nobody gave us is accepted); with sslrootcert it verifies the chain', async () => {
    const c = await connect(server.url(src, { sslmode: 'require' }, '127.0.0.1'), 'source', 'elara-sync-test');
    try {
      assert.deepEqual(await sslOf(c), { ssl: true, version: 'TLSv1.3' });
      assert.equal(tlsStatus(c).verify, 'none');
    } finally {
      await c.end();
    }
    const e = await connectError(server.url(src, { sslmode: 'require', sslrootcert: server.files.wrongCa }), 'source');
    assertTlsError(e, 'source', /not signed by the CA in sslrootcert/, /sslrootcert/);
  });

  test('sslmode=disable against a TLS-only database fails clearly; prefer (the default) uses TLS there', async () => {
    const e = await connectError(server.url(strict, { sslmode: 'disable' }), 'target');
    assertTlsError(e, 'target', /refused a connection without TLS: the server accepts only TLS connections \(pg_hba\.conf hostssl\), and sslmode=disable did not use TLS/, /use sslmode=verify-full with sslrootcert/);
    const c = await connect(server.url(strict), 'target', 'elara-sync-test');
    try {
      assert.equal((await sslOf(c)).ssl, true);
    } finally {
      await c.end();
    }
  });

  test('prefer falls back to plaintext when the server has no TLS (the local test server)', async () => {
    const c = await connect(ADMIN_URL, 'source', 'elara-sync-test');
    try {
      assert.equal((await sslOf(c)).ssl, false);
    } finally {
      await c.end();
    }
    const e = await connectError(`${ADMIN_URL}?sslmode=require`, 'source');
    assertTlsError(e, 'source', /the server does not accept TLS \(ssl = off on the server\), and sslmode=require requires it/, /turn TLS on on the server/);
  });

  test('a client certificate (sslcert, sslkey) logs in where pg_hba says cert; without one the fix is named', async () => {
    const c = await connect(server.verifiedUrl(certDb, { sslcert: server.files.clientCert, sslkey: server.files.clientKey }), 'target', 'elara-sync-test');
    await c.end();
    const e = await connectError(server.verifiedUrl(certDb), 'target');
    assertTlsError(e, 'target', /rejected the client certificate/, /set sslcert and sslkey/);
  });

  test('the CA file is read again for each new connection: replacing it (certificate rotation) needs no restart', async () => {
    const ca = join(server.files.dir, 'rotating-ca.crt');
    copyFileSync(server.files.wrongCa, ca);
    const pool = createPool(server.url(src, { sslmode: 'verify-full', sslrootcert: ca }), { max: 1, idleTimeoutMillis: 1 });
    try {
      await assert.rejects(pool.query('SELECT 1'), /not signed by the CA in sslrootcert/);
      copyFileSync(server.files.ca, ca);
      assert.deepEqual((await pool.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows, [{ ssl: true }]);
    } finally {
      await pool.end();
    }
  });
});

describe('elara-sync over TLS, as a process', () => {
  const from = () => ['--from', server.verifiedUrl(src), '--to', server.verifiedUrl(dst)];

  test('run, verify and status with verify-full: every connection the CLI makes is encrypted', async () => {
    const mark = server.logMark();
    const run = await runCli(['run', ...from()]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /Sync completed successfully!/);
    // The same through PGSSLMODE / PGSSLROOTCERT instead of URL parameters.
    const verify = await runCli(['verify', '--from', server.url(src), '--to', server.url(dst)], { PGSSLMODE: 'verify-full', PGSSLROOTCERT: server.files.ca });
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /Staging equals production on every synced table/);
    const status = await runCli(['status', '--to', server.verifiedUrl(dst)]);
    assert.equal(status.code, 0, status.stderr);

    const conns = server.connectionsSince(mark).filter((x) => x.database === src || x.database === dst);
    const names = new Set(conns.map((x) => x.applicationName));
    for (const n of ['elara-sync-reader', 'elara-sync-writer', 'elara-sync-verify', 'elara-sync-status']) assert.ok(names.has(n), `${n} connected: ${[...names].join(', ')}`);
    assert.deepEqual(conns.filter((x) => !x.ssl), [], 'every connection of the CLI used TLS');
    assert.ok(conns.every((x) => x.protocol === 'TLSv1.3'));
    process.stderr.write(`# CLI connections over TLS: ${conns.length} (${[...names].join(', ')}), plaintext: 0\n`);
  });

  test('doctor reports TLS per side: on, protocol, verified against the CA', async () => {
    const r = await runCli(['doctor', ...from(), '--tables', 'Organization,User']);
    process.stderr.write(`# doctor over TLS:\n${r.stdout.replace(/^/gm, '#   ')}\n`);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^PASS production tls: on, TLSv1\.3 TLS_\w+ \(\d+ bits\); server certificate verified against CA .*ca\.crt, host name localhost matches \(sslmode=verify-full\); certificate localhost from Elara Test CA, expires \d{4}-\d\d-\d\d \(in \d+ days\)$/m);
    assert.match(r.stdout, /^PASS staging tls: on, TLSv1\.3/m);
  });

  test('doctor with require: passes with a warning that the server is not authenticated', async () => {
    const r = await runCli(['doctor', '--from', server.verifiedUrl(src), '--to', server.url(dst, { sslmode: 'require' }), '--tables', 'Organization,User']);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /^WARN staging tls: on, TLSv1\.3 .*server certificate NOT verified \(sslmode=require\): encrypted, but the server is not authenticated/m);
    assert.match(r.stdout, /^ {5}fix: add sslrootcert=<the server's CA file> and sslmode=verify-full to STAGING_DATABASE_URL/m);
    // Two warnings: staging's unauthenticated TLS, and this test server's wal_level (only watch needs logical).
    assert.match(r.stdout, /all \d+ checks passed \(2 with a warning\)/);
    assert.deepEqual(r.stdout.split('\n').filter((l) => l.startsWith('WARN')).map((l) => l.split(':')[0]), ['WARN staging tls', 'WARN production wal_level']);
  });

  test('a server certificate renewed on the server (reload, no restart) is seen at once; one about to expire is a warning', async () => {
    await server.renewServerCert(10);
    try {
      const r = await runCli(['doctor', ...from(), '--tables', 'Organization,User']);
      assert.equal(r.code, 0, r.stdout);
      assert.match(r.stdout, /^WARN production tls: on, TLSv1\.3 .*expires \d{4}-\d\d-\d\d \(in 9 days\)$/m);
      assert.match(r.stdout, /^ {5}fix: the server's certificate expires in 9 days: renew it \(docs\/operations\.md#certificate-rotation\)$/m);
    } finally {
      await server.renewServerCert(90);
    }
  });

  test('a wrong CA: doctor fails the side with the fix, run exits 2 naming staging and sslrootcert; no stack trace', async () => {
    const bad = server.url(dst, { sslmode: 'verify-full', sslrootcert: server.files.wrongCa });
    const d = await runCli(['doctor', '--from', server.verifiedUrl(src), '--to', bad, '--tables', 'Organization,User']);
    assert.equal(d.code, 1);
    assert.match(d.stdout, /^PASS production reachable/m);
    assert.match(d.stdout, /^FAIL staging reachable: localhost:\d+\/\w+ as postgres: TLS to localhost:\d+ failed: the server's certificate is not signed by the CA in sslrootcert=.*wrong-ca\.crt/m);
    assert.match(d.stdout, /^ {5}fix: set sslrootcert in --to \/ STAGING_DATABASE_URL to the CA certificate/m);
    assert.match(d.stdout, /^FAIL staging tls: not checked: staging not reachable/m);
    const run = await runCli(['run', '--from', server.verifiedUrl(src), '--to', bad]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /elara-sync: cannot connect to staging \(target\) at .*: TLS to localhost:\d+ failed: the server's certificate is not signed by the CA in sslrootcert=/);
    assert.match(run.stderr, /code: E_CONNECT_TARGET/);
    assert.match(run.stderr, /what to do: set sslrootcert in --to \/ STAGING_DATABASE_URL/);
    for (const out of [d.stdout + d.stderr, run.stdout + run.stderr]) {
      assert.doesNotMatch(out, /\n\s+at .+:\d+:\d+/, 'no stack trace');
      assert.doesNotMatch(out, /database is up/);
      assert.doesNotMatch(out, /BEGIN CERTIFICATE/);
    }
  });

  test('NODE_ENV=production refuses plaintext to a host on the network, unless DB_ALLOW_PLAINTEXT=true', async () => {
    const remote = ['--from', 'postgresql://reader:pw@db.example.invalid:5432/app', '--to', server.verifiedUrl(dst)];
    const r = await runCli(['run', ...remote], { NODE_ENV: 'production' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /refusing to connect to production \(source\) at postgresql:\/\/reader:\*\*\*@db\.example\.invalid:5432\/app: it connects to a host on the network without TLS \(sslmode=prefer \(the default\)/);
    assert.match(r.stderr, /what to do: set sslmode=verify-full&sslrootcert=<the server's CA file> in --from \/ DATABASE_URL; on a network you trust, DB_ALLOW_PLAINTEXT=true allows it/);
    const allowed = await runCli(['run', ...remote], { NODE_ENV: 'production', DB_ALLOW_PLAINTEXT: 'true' });
    assert.equal(allowed.code, 2);
    assert.doesNotMatch(allowed.stderr, /refusing/);
    assert.match(allowed.stderr, /cannot connect to production \(source\).*ENOTFOUND|cannot connect to production \(source\).*EAI_AGAIN/);
  });
});
