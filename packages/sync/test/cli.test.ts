// The CLI as a process: exit codes, stdout, stderr; guards before any write; plan writes nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { sql, fingerprint, ADMIN_URL } from '@elara/testkit';
import { createPair, runCli, type Pair } from './helpers.ts';

const SCHEMA = `
CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL, "apiKey" text NOT NULL UNIQUE);
CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, "organizationId" uuid NOT NULL REFERENCES "Organization"(id));`;
const ROWS = `INSERT INTO "Organization" SELECT gen_random_uuid(), 'Org ' || g, 'key' || g FROM generate_series(1, 30) g;
  INSERT INTO "User" SELECT gen_random_uuid(), 'u' || g || '@x.test', (SELECT id FROM "Organization" ORDER BY id OFFSET g % 30 LIMIT 1) FROM generate_series(1, 90) g;`;

let pair: Pair;
let from: string[];
before(async () => {
  pair = await createPair('cli', SCHEMA);
  await sql(pair.source.url, ROWS);
  from = ['--from', pair.source.url, '--to', pair.target.url];
});
after(async () => {
  await pair.drop();
});

const targetState = async () => ({
  org: await fingerprint(pair.target.url, '"Organization"', 'id'),
  user: await fingerprint(pair.target.url, '"User"', 'id'),
  schema: (await sql(pair.target.url, `SELECT to_regnamespace('elara_sync') IS NOT NULL AS e`)).rows[0].e,
});

test('help and unknown commands', async () => {
  const h = await runCli(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /Usage: elara-sync <command>/);
  const u = await runCli(['frobnicate']);
  assert.equal(u.code, 2);
  assert.match(u.stderr, /unknown command "frobnicate"/);
});

test('missing URLs are an error that says which flag or variable to set', async () => {
  const r = await runCli(['run'], { DATABASE_URL: '', STAGING_DATABASE_URL: '' });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /missing --from \(or DATABASE_URL\) and --to \(or STAGING_DATABASE_URL\)/);
});

test('plan shows order and counts and writes nothing, not even the engine schema', async () => {
  const beforeState = await targetState();
  const r = await runCli(['plan', ...from]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Order \(parents first\): Organization → User/);
  assert.match(r.stdout, /Organization: would insert 30/);
  assert.match(r.stdout, /User: would insert 90/);
  assert.match(r.stdout, /nothing was written/);
  assert.deepEqual(await targetState(), beforeState);
});

test('verify exits 1 with per-table counts while staging differs', async () => {
  const r = await runCli(['verify', ...from, '--json']);
  assert.equal(r.code, 1, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.equal, false);
  assert.deepEqual(j.tables.map((t: { table: string; missing: number }) => [t.table, t.missing]), [['Organization', 30], ['User', 90]]);
});

test('run --json prints the documented shape; the human form ends with the seed summary lines', async () => {
  const r = await runCli(['run', ...from, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.ok, true);
  assert.equal(typeof j.durationMs, 'number');
  for (const t of j.tables) {
    for (const k of ['table', 'sourceRows', 'targetRows', 'inserted', 'updated', 'deleted', 'unchanged', 'conflicts', 'durationMs']) assert.ok(k in t, k);
  }
  assert.deepEqual(j.tables.map((t: { inserted: number }) => t.inserted), [30, 90]);
  await sql(pair.source.url, `UPDATE "User" SET email = 'changed@x.test' WHERE email = 'u5@x.test'`);
  const h = await runCli(['run', ...from]);
  assert.equal(h.code, 0, h.stderr);
  assert.match(h.stdout, /User: inserted 0, updated 1, deleted 0, unchanged 89/);
  assert.match(h.stdout, /Sync completed successfully!\n/);
  assert.match(h.stdout, /Production users: 90\nStaging users: 90/);
  const v = await runCli(['verify', ...from]);
  assert.equal(v.code, 0, v.stdout);
  assert.match(v.stdout, /Staging equals production/);
});

test('status lists the recorded runs', async () => {
  const r = await runCli(['status', '--to', pair.target.url, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.ok(j.runs.length >= 2);
  assert.equal(j.runs[0].status, 'ok');
  const h = await runCli(['status', '--to', pair.target.url]);
  assert.match(h.stdout, /User: last equal to production \d+ s ago/);
});

test('refuses the same database as source and target before any write', async () => {
  const r = await runCli(['run', '--from', pair.source.url, '--to', pair.source.url]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /source and target are the same database/);
  assert.match(r.stderr, /E_SAME_DATABASE/);
  assert.equal((await sql(pair.source.url, `SELECT to_regnamespace('elara_sync') IS NULL AS e`)).rows[0].e, true);
});

test('refuses a target marked as production, says how to override, and the override works', async () => {
  await sql(ADMIN_URL, `ALTER DATABASE "${pair.target.name}" SET elara.environment = 'production'`);
  try {
    await sql(pair.source.url, `INSERT INTO "Organization" VALUES (gen_random_uuid(), 'marker test', 'marker')`);
    const r = await runCli(['run', ...from]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /marked as production/);
    assert.match(r.stderr, /--allow-production-target/);
    assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "Organization" WHERE name = 'marker test'`)).rows[0].n, 0);
    const o = await runCli(['run', ...from, '--allow-production-target', '--json']);
    assert.equal(o.code, 0, o.stdout);
  } finally {
    await sql(ADMIN_URL, `ALTER DATABASE "${pair.target.name}" RESET elara.environment`);
  }
});

test('an unreachable database is exit 2 with a message that names it and hides the password', async () => {
  const r = await runCli(['run', '--from', 'postgresql://elara:s3cret-pass@127.0.0.1:1/prod', '--to', pair.target.url]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /cannot connect to production \(source\)/);
  assert.doesNotMatch(r.stderr + r.stdout, /s3cret-pass/);
  assert.match(r.stderr, /\*\*\*/);
});

test('a bad config file is named with every problem', async () => {
  const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(`${tmpdir()}/elara-cli-`);
  writeFileSync(`${dir}/bad.yml`, 'tables: []\nevery: 5m\n');
  const r = await runCli(['run', ...from, '--config', `${dir}/bad.yml`]).finally(() => rmSync(dir, { recursive: true, force: true }));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /bad\.yml has 2 problem/);
});

test('run --every repeats until SIGTERM, then stops after the run in progress', async () => {
  const { spawn } = await import('node:child_process');
  const { CLI } = await import('./helpers.ts');
  const child = spawn(process.execPath, [CLI, 'run', ...from, '--every', '300ms', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no second run within 60 s: ${stderr}`)), 60_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.split('\n').filter(Boolean).length >= 2) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, stderr);
  const runs = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.ok(runs.length >= 2);
  for (const r of runs) assert.equal(r.ok, true);
  assert.match(stderr, /stopping after the run in progress/);
});

test('doctor prints one line per check and exits 0/1; --json lists the checks', async () => {
  const r = await runCli(['doctor', ...from, '--json']);
  assert.ok(r.code === 0 || r.code === 1, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.ok(Array.isArray(j.checks) && j.checks.length > 5);
  assert.equal(j.checks.find((c: { name: string }) => c.name === 'fk order').ok, true);
  const bad = await runCli(['doctor', '--from', 'postgresql://u:hunter2secret@127.0.0.1:1/x', '--to', pair.target.url]);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /FAIL/);
  assert.doesNotMatch(bad.stdout + bad.stderr, /hunter2secret/);
});
