// The doctor against real databases: a healthy pair passes every check, and each broken thing
// fails its own check with a hint, without throwing and without printing a password.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runMigrations } from 'graphile-worker';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { formatDoctorReport, runDoctor, type DoctorResult } from '../src/doctor/index.ts';
import { redactUrl, scrubSecrets } from '../src/redact.ts';

const SCHEMA = `
  CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL);
  CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL,
                       "organizationId" uuid NOT NULL REFERENCES "Organization"(id),
                       "invitedById" uuid REFERENCES "User"(id));
  CREATE SCHEMA drizzle;
  CREATE TABLE drizzle.__drizzle_migrations (id serial PRIMARY KEY, hash text NOT NULL, created_at bigint);
  INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('aaa111', 1), ('bbb222', 2);
  INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-000000000001', 'Acme');
  INSERT INTO "User" VALUES ('00000000-0000-0000-0000-0000000000a1', 'a@example.com', '00000000-0000-0000-0000-000000000001', NULL),
                            ('00000000-0000-0000-0000-0000000000a2', 'b@example.com', '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-0000000000a1');
`;

const RUNS = `
  CREATE SCHEMA elara_sync;
  CREATE TABLE elara_sync.runs (
    id bigserial PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'ok', 'conflicts', 'error')),
    mode text NOT NULL DEFAULT 'run', duration_ms int, error text, tables jsonb NOT NULL DEFAULT '[]');
`;

const dbs: TestDatabase[] = [];
async function database(prefix: string, ...setup: string[]): Promise<TestDatabase> {
  const db = await createTestDatabase(prefix);
  dbs.push(db);
  for (const s of setup) await sql(db.url, s);
  return db;
}

function check(result: DoctorResult, name: string) {
  const c = result.checks.find((x) => x.name === name);
  assert.ok(c, `no check named ${name}: ${result.checks.map((x) => x.name).join(', ')}`);
  return c;
}

function failedNames(result: DoctorResult): string[] {
  return result.checks.filter((c) => !c.ok).map((c) => c.name);
}

let prod: TestDatabase;
let staging: TestDatabase;

before(async () => {
  prod = await database('doctor_prod', SCHEMA);
  await runMigrations({ connectionString: prod.url });
  staging = await database('doctor_staging', SCHEMA, RUNS,
    `INSERT INTO elara_sync.runs (started_at, finished_at, status, duration_ms)
     VALUES (now() - interval '2 hours', now() - interval '2 hours', 'error', 10),
            (now() - interval '61 seconds', now() - interval '60 seconds', 'ok', 1000)`);
});

after(async () => {
  for (const db of dbs.reverse()) await db.drop();
});

describe('runDoctor', () => {
  test('a healthy pair passes every check', async () => {
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: staging.url });
    assert.deepEqual(failedNames(r), [], formatDoctorReport(r));
    assert.equal(r.ok, true);
    assert.deepEqual(r.checks.map((c) => c.name), [
      'production url set', 'staging url set', 'production reachable', 'staging reachable', 'production tls', 'staging tls',
      'distinct databases', 'migrations applied', 'tables present', 'fk order', 'table plans',
      'apply without staging triggers', 'last reconcile',
      'immediate sync failures (1h)',
      'production wal_level', 'production replication capacity', 'production replication role',
      'watch slot elara_sync_staging', 'production max_slot_wal_keep_size',
      'row count Organization', 'row count User',
    ]);
    // The local test server has ssl = off; plaintext to this machine passes (tls.test.ts covers TLS).
    assert.match(check(r, 'production tls').detail, /^off \(sslmode=prefer, the default, and the server does not offer TLS\); 127\.0\.0\.1 is this machine/);
    assert.match(check(r, 'fk order').detail, /Organization → User/);
    assert.match(check(r, 'fk order').detail, /self-references: User/);
    assert.match(check(r, 'last reconcile').detail, /last success #2 6\d s ago/);
    assert.match(check(r, 'row count User').detail, /production 2, staging 2/);
    // The local test server has wal_level = replica: watch's prerequisite is a warning, not a failure
    // (doctor-watch.test.ts covers a logical server).
    const wal = check(r, 'production wal_level');
    assert.equal(wal.warning, true);
    assert.match(wal.detail, /^replica: elara-sync watch needs logical/);
    assert.match(check(r, 'watch slot elara_sync_staging').detail, /^not present: elara-sync watch --target staging creates it/);
    assert.match(check(r, 'production max_slot_wal_keep_size').detail, /^-1 \(unbounded\); matters once watch runs/);
    assert.match(formatDoctorReport(r), /^all 21 checks passed \(1 with a warning\)$/m);
  });

  test('missing URLs fail with the variable to set, and nothing throws', async () => {
    const r = await runDoctor({});
    assert.equal(r.ok, false);
    assert.match(check(r, 'production url set').hint ?? '', /DATABASE_URL/);
    assert.match(check(r, 'staging url set').hint ?? '', /STAGING_DATABASE_URL/);
    assert.match(check(r, 'row count User').detail, /not checked/);
  });

  test('an unreachable staging fails with a hint and never prints the password', async () => {
    const secret = 'hunter2-s3cr3t';
    const bad = `postgresql://elara_app:${secret}@127.0.0.1:1/elara_staging`;
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: bad, tables: ['Organization', 'User'] });
    assert.equal(r.ok, false);
    const reach = check(r, 'staging reachable');
    assert.equal(reach.ok, false);
    assert.match(reach.detail, /127\.0\.0\.1:1\/elara_staging/);
    assert.match(reach.hint ?? '', /up and reachable/);
    assert.equal(check(r, 'production reachable').ok, true);
    assert.equal(check(r, 'immediate sync failures (1h)').ok, true, 'production-only checks still run');
    assert.match(check(r, 'last reconcile').detail, /not checked: staging not reachable/);
    const printed = JSON.stringify(r) + formatDoctorReport(r);
    assert.ok(!printed.includes(secret), 'password leaked');
    assert.match(check(r, 'staging url set').detail, /elara_app:\*\*\*@/);
  });

  test('a wrong password fails authentication without echoing it', async () => {
    const secret = 'N0t-the-p4ss';
    const u = new URL(staging.url);
    u.username = 'no_such_role_for_doctor';
    u.password = secret;
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: u.toString() });
    const reach = check(r, 'staging reachable');
    assert.equal(reach.ok, false);
    assert.ok(!(JSON.stringify(r)).includes(secret));
  });

  test('no runs table means no run yet, with the command to run', async () => {
    const bare = await database('doctor_bare', SCHEMA);
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: bare.url });
    const c = check(r, 'last reconcile');
    assert.equal(c.ok, false);
    assert.match(c.detail, /no run yet/);
    assert.match(c.hint ?? '', /npx elara-sync run/);
    assert.deepEqual(failedNames(r), ['last reconcile']);
  });

  test('an old last run, and a newest run that failed, both fail', async () => {
    const stale = await database('doctor_stale', SCHEMA, RUNS,
      `INSERT INTO elara_sync.runs (started_at, finished_at, status) VALUES (now() - interval '20 minutes', now() - interval '19 minutes', 'ok')`);
    const r1 = await runDoctor({ sourceUrl: prod.url, targetUrl: stale.url, intervalSeconds: 300 });
    assert.equal(check(r1, 'last reconcile').ok, false);
    assert.match(check(r1, 'last reconcile').detail, /limit 600 s/);
    const r2 = await runDoctor({ sourceUrl: prod.url, targetUrl: stale.url, intervalSeconds: 3600 });
    assert.equal(check(r2, 'last reconcile').ok, true);

    await sql(stale.url, `INSERT INTO elara_sync.runs (started_at, finished_at, status, error)
                          VALUES (now(), now(), 'error', 'E_CONNECT_SOURCE: cannot connect to postgresql://u:pw@h/db')`);
    const r3 = await runDoctor({ sourceUrl: prod.url, targetUrl: stale.url, intervalSeconds: 3600 });
    const c = check(r3, 'last reconcile');
    assert.equal(c.ok, false);
    assert.match(c.detail, /failed .*E_CONNECT_SOURCE/);
    assert.ok(!c.detail.includes(':pw@'), 'URL passwords inside stored errors are scrubbed');
  });

  test('a row-count mismatch fails for that table only', async () => {
    const behind = await database('doctor_behind', SCHEMA, RUNS,
      `INSERT INTO elara_sync.runs (started_at, finished_at, status) VALUES (now(), now(), 'ok')`,
      `DELETE FROM "User" WHERE "invitedById" IS NOT NULL`);
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: behind.url });
    assert.deepEqual(failedNames(r), ['row count User']);
    assert.match(check(r, 'row count User').detail, /production 2, staging 1 \(1 missing in staging\)/);
    assert.match(check(r, 'row count User').hint ?? '', /elara-sync verify/);
  });

  test('immediate-sync failures in the last hour fail; older ones do not', async () => {
    const p2 = await database('doctor_prod_jobs', SCHEMA);
    await runMigrations({ connectionString: p2.url });
    await sql(p2.url, `SELECT graphile_worker.add_job('sync_registration', '{"userId":"x"}'::json)`);
    await sql(p2.url, `SELECT graphile_worker.add_job('sync_registration', '{"userId":"y"}'::json)`);
    await sql(p2.url, `SELECT graphile_worker.add_job('other_task', '{}'::json)`);
    await sql(p2.url, `UPDATE graphile_worker._private_jobs SET attempts = 3, last_error = 'connect ECONNREFUSED 10.0.0.9:5432', updated_at = now() - interval '2 hours'`);
    const old = await runDoctor({ sourceUrl: p2.url, targetUrl: staging.url });
    assert.equal(check(old, 'immediate sync failures (1h)').ok, true);
    assert.match(check(old, 'immediate sync failures (1h)').detail, /2 jobs waiting/);

    await sql(p2.url, `UPDATE graphile_worker._private_jobs SET updated_at = now()`);
    const r = await runDoctor({ sourceUrl: p2.url, targetUrl: staging.url });
    const c = check(r, 'immediate sync failures (1h)');
    assert.equal(c.ok, false);
    assert.match(c.detail, /^2 sync_registration jobs failed in the last hour \(2 waiting, up to 3 attempts\); latest: connect ECONNREFUSED/);
    assert.match(c.hint ?? '', /staging/);
  });

  test('migrations out of step fail and name the side behind', async () => {
    const old = await database('doctor_oldschema', SCHEMA, RUNS,
      `INSERT INTO elara_sync.runs (started_at, finished_at, status) VALUES (now(), now(), 'ok')`,
      `DELETE FROM drizzle.__drizzle_migrations WHERE hash = 'bbb222'`);
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: old.url });
    const c = check(r, 'migrations applied');
    assert.equal(c.ok, false);
    assert.match(c.detail, /production has 2 migrations .* staging 1/);
    assert.match(c.hint ?? '', /migrate staging/);
  });

  test('a synced table missing on staging, and an FK to an unsynced table, fail', async () => {
    const r = await runDoctor({ sourceUrl: prod.url, targetUrl: staging.url, tables: ['User', 'public.Nope'] });
    assert.match(check(r, 'tables present').detail, /Nope missing on production \(E_SCHEMA_MISMATCH\)/);
    const fk = check(r, 'fk order');
    assert.equal(fk.ok, false);
    assert.match(fk.detail, /User references Organization .* not synced/);
    assert.match(check(r, 'row count User').detail, /not checked/);
  });

  test('the same database on both sides is refused', async () => {
    const r = await runDoctor({ sourceUrl: staging.url, targetUrl: staging.url });
    const c = check(r, 'distinct databases');
    assert.equal(c.ok, false);
    assert.match(c.hint ?? '', /E_SAME_DATABASE/);
  });
});

describe('redaction', () => {
  test('redactUrl and scrubSecrets hide passwords, also URL-encoded ones', () => {
    assert.equal(redactUrl('postgresql://u:p%40ss@h:5432/db?sslmode=require'), 'postgresql://u:***@h:5432/db?sslmode=require');
    assert.equal(redactUrl('not a url'), '<unparseable connection string>');
    const url = 'postgresql://u:p%40ss@h/db';
    assert.equal(scrubSecrets('failed for p@ss and p%40ss', [url]), 'failed for *** and ***');
    assert.equal(scrubSecrets('see postgres://x:y@z/db', []), 'see postgres://x:***@z/db');
  });
});
