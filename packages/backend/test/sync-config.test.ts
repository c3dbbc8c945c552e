// One elara-sync.yml for the engine and the API: the immediate (registration) sync applies its
// transforms and row filters, the same way a reconcile run does, and a bad file stops start-up
// with a message naming the field.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { verify as argon2Verify } from '@node-rs/argon2';
import { parseConfig, resolveTarget, runSync, verifySync } from '@elara/sync';
import { createTestDatabase } from '@elara/testkit';
import { migrateDatabase } from '../src/db/migrate.ts';
import { loadConfig } from '../src/config.ts';
import { createDatabases, json, registration, sql, startTestServer, waitFor, type Databases } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';

const CONFIG = `tables:
  - Organization
  - name: User
    transforms:
      email: "'user_' || left(md5(email), 12) || '@example.invalid'"
      passwordHash: "'redacted'"
`;

describe('elara-sync.yml in the backend', () => {
  let dbs: Databases;
  let server: RunningServer;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'elara-sync-config-'));
    writeFileSync(join(dir, 'elara-sync.yml'), CONFIG);
    dbs = await createDatabases('backend_cfg');
    server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, ELARA_SYNC_CONFIG: join(dir, 'elara-sync.yml') }, 'warn');
  });
  after(async () => {
    await server?.close();
    await dbs?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a registration reaches staging through the configured transforms; a reconcile with the same file finds nothing to change', async () => {
    const res = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: registration() });
    assert.equal(res.statusCode, 201, res.body);
    const { user } = res.json();
    const staged = await waitFor(async () => (await sql(dbs.staging.url, 'SELECT email, "passwordHash" FROM "User" WHERE id = $1', [user.id])).rows[0], 10_000, 20);
    assert.match(staged.email, /^user_[0-9a-f]{12}@example\.invalid$/);
    assert.equal(staged.passwordHash, 'redacted');
    assert.equal((await sql(dbs.staging.url, `SELECT count(*)::int AS n FROM "User" WHERE email = $1`, [user.email])).rows[0].n, 0, 'the raw email never reached staging');
    const cfg = loadConfig({ DATABASE_URL: dbs.prod.url, ELARA_SYNC_CONFIG: join(dir, 'elara-sync.yml') }).syncConfig;
    const opts = { sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: [...cfg.tables] };
    const run = await runSync(opts);
    assert.equal(run.error, undefined, run.error?.message);
    for (const t of run.tables) assert.equal(t.inserted + t.updated + t.deleted, 0, `${t.table}: the immediate sync already wrote what the reconcile would`);
    assert.equal((await verifySync(opts)).equal, true);
  });

  test('a config with a bad expression stops start-up naming the field', () => {
    const bad = join(dir, 'bad.yml');
    writeFileSync(bad, `tables:\n  - name: User\n    where: "true; DELETE FROM \\"User\\""\n`);
    assert.throws(() => loadConfig({ DATABASE_URL: 'postgresql://x@127.0.0.1/db', ELARA_SYNC_CONFIG: bad }), /ELARA_SYNC_CONFIG [^]*tables\.0 \(User\)\.where has a ";"/);
    assert.throws(() => loadConfig({ DATABASE_URL: 'postgresql://x@127.0.0.1/db', ELARA_SYNC_CONFIG: join(dir, 'missing.yml') }), /does not exist/);
  });
});

describe('the shipped elara-sync.yml and anonymized targets in the backend', () => {
  const SHIPPED = readFileSync(fileURLToPath(new URL('../../../elara-sync.yml', import.meta.url)), 'utf8');
  const KEY = 'backend-test-mask-key-0123456789';
  let dbs: Databases;
  before(async () => {
    dbs = await createDatabases('backend_anon');
  });
  after(async () => {
    await dbs?.drop();
  });

  test('the shipped config has a rule for every column of the migrated Organization and User tables (dev plans compile)', async () => {
    const cfg = parseConfig(SHIPPED, 'elara-sync.yml');
    assert.deepEqual(cfg.targets.map((t) => [t.name, t.anonymize]), [['staging', false], ['dev', true]]);
    const target = resolveTarget(cfg.targets, 'dev', { env: { DEV_DATABASE_URL: dbs.staging.url, ELARA_SYNC_MASK_KEY: KEY, ELARA_TEST_PASSWORD: 'pw for qa' } });
    const plan = await runSync({ sourceUrl: dbs.prod.url, targetUrl: target.url, target, tables: [...cfg.tables], dryRun: true });
    assert.equal(plan.error, undefined, plan.error?.message);
  });

  test('a registration into an anonymized staging arrives masked; QA logs in there with ELARA_TEST_PASSWORD', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'elara-anon-'));
    const file = join(dir, 'elara-sync.yml');
    writeFileSync(file, SHIPPED.replace('  staging:\n    url: ${STAGING_DATABASE_URL}', '  staging:\n    url: ${STAGING_DATABASE_URL}\n    anonymize: true'));
    const server = await startTestServer({
      DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, ELARA_SYNC_CONFIG: file, ELARA_SYNC_MASK_KEY: KEY, ELARA_TEST_PASSWORD: 'pw for qa',
    }, 'warn');
    try {
      const body = registration();
      const res = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: body });
      assert.equal(res.statusCode, 201, res.body);
      const { user, organization } = res.json();
      const staged = await waitFor(async () => (await sql(dbs.staging.url, 'SELECT * FROM "User" WHERE id = $1', [user.id])).rows[0], 10_000, 20);
      assert.match(staged.email, /^user_[0-9a-f]{20}@example\.com$/);
      assert.notEqual(staged.firstName, body.firstName);
      assert.equal(await argon2Verify(staged.passwordHash, 'pw for qa'), true);
      const org = (await sql(dbs.staging.url, 'SELECT name, "apiKey" FROM "Organization" WHERE id = $1', [organization.id])).rows[0];
      assert.notEqual(org.name, body.organizationName);
      assert.match(org.apiKey, /^elara_pk_[0-9a-f]+$/);
      assert.equal(org.apiKey.length, organization.apiKey.length, 'the masked API key keeps its shape');
      const raw = JSON.stringify((await sql(dbs.staging.url, 'SELECT * FROM "User" u JOIN "Organization" o ON o.id = u."organizationId"')).rows);
      for (const v of [body.email, body.firstName, body.lastName, body.organizationName, organization.apiKey]) assert.ok(!raw.includes(v), `${v} reached staging`);
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('each target has its own runs and metrics: the in-process loop reconciles dev too, and /metrics labels it', async () => {
  const dbs = await createDatabases('backend_targets');
  const dev = await createTestDatabase('backend_targets_dev');
  await migrateDatabase(dev.url);
  const server = await startTestServer({
    DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, DEV_DATABASE_URL: dev.url, RECONCILE_INTERVAL: '1h',
    ELARA_SYNC_MASK_KEY: 'backend-test-mask-key-0123456789', ELARA_TEST_PASSWORD: 'pw for qa',
  }, 'warn');
  try {
    const res = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: registration() });
    assert.equal(res.statusCode, 201);
    // The loops' first runs (1 s after start) write each target's own run record.
    const text = await waitFor(async () => {
      const t = await server.metrics.registry.metrics();
      return /elara_sync_runs_total\{target="dev",result="ok"\} 1/.test(t) && /elara_sync_runs_total\{target="staging",result="ok"\} 1/.test(t) ? t : null;
    }, 20_000, 200);
    assert.match(text, /elara_sync_staging_up\{target="dev"\} 1/);
    assert.match(text, /elara_sync_lag_seconds\{target="dev",table="User"\}/);
    assert.equal((await sql(dev.url, `SELECT count(*)::int AS n FROM elara_sync.runs`)).rows[0].n, 1, 'dev keeps its own run records');
  } finally {
    await server.close();
    await dbs.drop();
    await dev.drop();
  }
});
