// watch into an anonymized target (a throwaway wal_level = logical cluster): the initial snapshot
// and then streamed inserts and updates (an email change, a name change, a new API key and password
// hash) reach the target masked; no raw production value of a masked column, old or new, is in any
// text of any row of any table of the target (pii_matches = 0); verify (masked production against
// the target) finds them equal. A column production adds to a table of the anonymized target
// stops the stream (fail closed) with an error naming User.phone, and the phone value never
// reaches the target; the CLI refuses to start on it too (exit 2, the name on stderr).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verify as argon2Verify } from '@node-rs/argon2';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { parseConfig, resolveTarget, startWatch, SyncError, verifySync, type WatchEvent } from '../src/index.ts';
import { CLI, PRIVACY_SCHEMA, PRIVACY_TABLE_RULES } from './helpers.ts';

const SCHEMA = PRIVACY_SCHEMA;

const CONFIG = `${PRIVACY_TABLE_RULES}targets:
  dev: { url: "\${DEV_URL}", anonymize: true }
`;
const KEY = 'a-mask-key-of-32-characters-long!';
const PASSWORD = 'qa test password 123';
const MASKED = `SELECT name AS v FROM "Organization" UNION SELECT "apiKey" FROM "Organization" UNION SELECT "apiSecret" FROM "Organization"
  UNION SELECT email FROM "User" UNION SELECT lower(email) FROM "User" UNION SELECT "passwordHash" FROM "User"
  UNION SELECT "firstName" FROM "User" UNION SELECT "lastName" FROM "User"`;
const NEW_USER = '00000000-0000-4000-9000-000000009999';
const NEW_ORG = '00000000-0000-4000-8000-000000009999';

let server: LogicalServer;
let prodDb = '';
let devDb = '';
let work = '';
before(async () => {
  server = await startLogicalServer();
  prodDb = await server.createDatabase('watchpriv_prod');
  devDb = await server.createDatabase('watchpriv_dev');
  await server.sql(prodDb, SCHEMA);
  await server.sql(devDb, SCHEMA);
  await server.sql(prodDb, `
    INSERT INTO "Organization" (id, name, tier, "apiKey", "apiSecret")
      SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'Real Company ' || g || ' GmbH', CASE WHEN g % 3 = 0 THEN 'enterprise' ELSE 'free' END,
             'elara_pk_' || md5('key' || g), md5('secret' || g) FROM generate_series(1, 30) g;
    INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", "organizationId")
      SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid, 'Person.' || g || '@RealMail.example.org', '$argon2id$v=19$m=19456,t=2,p=1$' || md5('pw' || g),
             'Firstname' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'Surname' || g END,
             ('00000000-0000-4000-8000-' || lpad((1 + g % 30)::text, 12, '0'))::uuid FROM generate_series(1, 120) g;
    UPDATE "User" SET "managerId" = ('00000000-0000-4000-9000-' || lpad((1 + (substring(id::text, 25)::int % 20))::text, 12, '0'))::uuid
      WHERE substring(id::text, 25)::int > 20;`);
  work = mkdtempSync(join(tmpdir(), 'watch-privacy-'));
  writeFileSync(join(work, 'elara-sync.yml'), CONFIG);
});
after(async () => {
  if (work) rmSync(work, { recursive: true, force: true });
  await server?.stop();
});

const env = () => ({ DEV_URL: server.url(devDb), ELARA_SYNC_MASK_KEY: KEY, ELARA_TEST_PASSWORD: PASSWORD });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what: string, cond: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Every text value of every row of every table of the target that is one of `raw` (or contains a longer one). */
async function piiMatches(raw: Set<string>): Promise<string[]> {
  const tables = await server.sql(devDb, `SELECT format('%I.%I', table_schema, table_name) AS t FROM information_schema.tables
    WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'`);
  const found: string[] = [];
  for (const { t } of tables.rows) {
    const rows = await server.sql(devDb, `SELECT row_to_json(x)::text AS j FROM ${t} x`);
    for (const { j } of rows.rows) {
      for (const v of Object.values(JSON.parse(j))) if (typeof v === 'string' && raw.has(v)) found.push(`${t}: ${v}`);
      for (const v of raw) if (v.length > 6 && j.includes(JSON.stringify(v).slice(1, -1))) found.push(`${t} (inside a value): ${v}`);
    }
  }
  return [...new Set(found)];
}

const prodValues = async (into: Set<string>) => {
  for (const r of (await server.sql(prodDb, MASKED)).rows) if (r.v !== null) into.add(r.v);
  return into;
};

test('watch into an anonymized target: the snapshot and streamed inserts and updates arrive masked; pii_matches = 0; a column added in production stops the stream naming User.phone, before its value reaches the target', async () => {
  const t0 = Date.now();
  const config = parseConfig(CONFIG, 'watch-privacy.yml');
  const target = resolveTarget(config.targets, 'dev', { env: env() });
  const raw = await prodValues(new Set());
  const events: WatchEvent[] = [];
  const w = startWatch({
    sourceUrl: server.url(prodDb), targetUrl: target.url, target, tables: [...config.tables], onFatal: 'stop', heartbeatMs: 500,
    backoffMs: { initial: 100, max: 1000 }, onEvent: (e) => events.push(e),
  });
  // Read through a function: assert.equal(x, null) would narrow a variable to null for the rest of the test.
  let fatalError: unknown = null;
  const failure = (): unknown => fatalError;
  w.done.catch((e) => { fatalError = e; });
  try {
    await waitFor('streaming', () => w.status().phase === 'streaming' || failure() !== null);
    assert.equal(failure(), null, String(failure()));
    assert.equal(events.filter((e) => e.kind === 'snapshot-done').length, 1);
    const count = async () => (await server.sql(devDb, `SELECT count(*)::int AS n FROM "User"`)).rows[0].n as number;
    assert.equal(await count(), 120, 'the snapshot copied every user');
    const snapshotMs = Date.now() - t0;
    const before = (await server.sql(devDb, `SELECT email, "firstName", "lastName", "passwordHash" FROM "User" WHERE id = '00000000-0000-4000-9000-000000000005'`)).rows[0];
    const orgBefore = (await server.sql(devDb, `SELECT name, "apiKey" FROM "Organization" WHERE id = '00000000-0000-4000-8000-000000000003'`)).rows[0];

    // Streamed: a new organization with a user in one transaction; an email change; a name change;
    // a new API key and organization name; a new password hash.
    await server.sql(prodDb, `BEGIN;
      INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES ('${NEW_ORG}', 'Brand New Corp Ltd', 'elara_pk_${'f'.repeat(32)}', 'topsecret-value-1');
      INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", "organizationId")
        VALUES ('${NEW_USER}', 'Fresh.Person@RealMail.example.org', '$argon2id$v=19$m=19456,t=2,p=1$freshhash', 'Freshfirst', 'Freshlast', '${NEW_ORG}');
      COMMIT`);
    await server.sql(prodDb, `UPDATE "User" SET email = 'Changed.Email5@RealMail.example.org' WHERE id = '00000000-0000-4000-9000-000000000005'`);
    await server.sql(prodDb, `UPDATE "User" SET "firstName" = 'Renamedfirst', "lastName" = 'Renamedlast' WHERE id = '00000000-0000-4000-9000-000000000005'`);
    await server.sql(prodDb, `UPDATE "Organization" SET name = 'Renamed Company Three AG', "apiKey" = 'elara_pk_${'a'.repeat(32)}' WHERE id = '00000000-0000-4000-8000-000000000003'`);
    await server.sql(prodDb, `UPDATE "User" SET "passwordHash" = '$argon2id$v=19$m=19456,t=2,p=1$rotatedhash', "lastLoginAt" = now() WHERE id = '00000000-0000-4000-9000-000000000007'`);
    await prodValues(raw);
    await waitFor('the streamed changes', async () => failure() !== null || (await count()) === 121
      && (await server.sql(devDb, `SELECT email FROM "User" WHERE id = '00000000-0000-4000-9000-000000000005'`)).rows[0].email !== before.email
      && (await server.sql(devDb, `SELECT "lastLoginAt" FROM "User" WHERE id = '00000000-0000-4000-9000-000000000007'`)).rows[0].lastLoginAt !== null);
    assert.equal(failure(), null, String(failure()));
    // Let the last transactions land, then compare masked production with the target.
    await waitFor('verify equal', async () => (await verifySync({ sourceUrl: server.url(prodDb), targetUrl: target.url, target, tables: [...config.tables] })).equal);
    assert.equal(events.filter((e) => e.kind === 'snapshot-start').length, 1, 'the changes were streamed, not re-snapshotted');
    assert.ok(events.some((e) => e.kind === 'applied'), 'the changes were applied from the stream');

    const u5 = (await server.sql(devDb, `SELECT email, "firstName", "lastName", "passwordHash" FROM "User" WHERE id = '00000000-0000-4000-9000-000000000005'`)).rows[0];
    assert.match(u5.email, /^user_[0-9a-f]{20}@example\.com$/);
    assert.notEqual(u5.email, before.email, 'the email change arrived (masked)');
    assert.notEqual(u5.firstName, before.firstName, 'the name change arrived (masked)');
    assert.notEqual(u5.firstName, 'Renamedfirst');
    assert.match(u5.firstName, /^[A-Z][a-z]+$/);
    assert.notEqual(u5.lastName, 'Renamedlast');
    assert.equal(u5.passwordHash, before.passwordHash, 'every account has the hash of ELARA_TEST_PASSWORD');
    const fresh = (await server.sql(devDb, `SELECT u.email, u."passwordHash", o.name, o."apiKey", o."apiSecret" FROM "User" u JOIN "Organization" o ON o.id = u."organizationId" WHERE u.id = '${NEW_USER}'`)).rows[0];
    assert.match(fresh.email, /^user_[0-9a-f]{20}@example\.com$/);
    assert.match(fresh.apiKey, /^elara_pk_[0-9a-f]{32}$/);
    assert.notEqual(fresh.apiSecret, 'topsecret-value-1');
    assert.equal(await argon2Verify(fresh.passwordHash, PASSWORD), true, 'QA logs in to the streamed user with ELARA_TEST_PASSWORD');
    const org3 = (await server.sql(devDb, `SELECT name, "apiKey" FROM "Organization" WHERE id = '00000000-0000-4000-8000-000000000003'`)).rows[0];
    assert.notEqual(org3.name, orgBefore.name, 'the organization rename arrived (masked)');
    assert.notEqual(org3.apiKey, orgBefore.apiKey, 'the new API key arrived (masked)');

    const pii = await piiMatches(raw);
    console.log(`# pii_matches=${pii.length} (${raw.size} raw values of masked columns, before and after the streamed changes; snapshot ${snapshotMs} ms, streamed changes verified at ${Date.now() - t0} ms)`);
    assert.deepEqual(pii, []);

    // Fail closed: production adds a column the rules do not cover, then fills it.
    const failStarted = Date.now();
    await server.sql(devDb, `ALTER TABLE "User" ADD COLUMN phone text`);
    await server.sql(prodDb, `ALTER TABLE "User" ADD COLUMN phone text`);
    await server.sql(prodDb, `UPDATE "User" SET phone = '+49 170 555' || substring(id::text, 31) WHERE substring(id::text, 25)::int <= 50`);
    await waitFor('the stream to stop', () => failure() !== null, 20_000);
    assert.ok(failure() instanceof SyncError, String(failure()));
    const err = failure() as SyncError;
    console.log(`# fail closed in ${Date.now() - failStarted} ms: ${err.code}: ${err.message}`);
    assert.equal(err.code, 'E_CONFIG');
    assert.match(err.message, /User\.phone/);
    assert.match(err.message, /no rule for the anonymized target dev/);
    assert.equal(w.status().phase, 'failed');
    await assert.rejects(w.done, (e: unknown) => e === failure());
  } finally {
    await w.stop();
  }
  const phones = (await server.sql(prodDb, `SELECT phone FROM "User" WHERE phone IS NOT NULL`)).rows.map((r) => r.phone as string);
  assert.equal(phones.length, 50);
  assert.equal((await server.sql(devDb, `SELECT count(*)::int AS n FROM "User" WHERE phone IS NOT NULL`)).rows[0].n, 0, 'no phone value reached the target');
  assert.deepEqual(await piiMatches(new Set(phones)), [], 'no phone value anywhere in the target');

  // The CLI refuses to start on it as well: exit 2, the column named on stderr; still nothing written.
  const cli = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'watch', '--target', 'dev', '--from', server.url(prodDb)], {
      cwd: work, env: { ...process.env, ...env(), ELARA_SYNC_CONFIG: join(work, 'elara-sync.yml') }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
  assert.equal(cli.code, 2, cli.stderr);
  assert.match(cli.stderr, /User\.phone/);
  assert.equal((await server.sql(devDb, `SELECT count(*)::int AS n FROM "User" WHERE phone IS NOT NULL`)).rows[0].n, 0);
  const all = await prodValues(new Set(phones));
  const pii = await piiMatches(all);
  console.log(`# pii_matches=${pii.length} after the stop (${all.size} raw values incl. phones; CLI exit ${cli.code}; total ${Date.now() - t0} ms)`);
  assert.deepEqual(pii, []);
});
