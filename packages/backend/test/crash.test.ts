// SIGKILL right after the production commit, repeatedly: the outbox job was committed with the
// registration, so after a restart every committed registration still reaches staging (lost = 0).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createDatabases, registration, sql, waitFor, FAST_ENV, type Databases } from './helpers.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const KILLS = Number(process.env.CRASH_KILLS ?? 20);

interface Child { url: string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>; kill(): void; term(): void; output(): string }

function startChild(env: Record<string, string>): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: { ...process.env, ...FAST_ENV, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) resolve({ url: m[1]!, exited, kill: () => child.kill('SIGKILL'), term: () => child.kill('SIGTERM'), output: () => out });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then(({ code, signal }) => reject(new Error(`server exited before listening (code ${code}, signal ${signal}):\n${out}`)));
  });
}

let dbs: Databases;
before(async () => { dbs = await createDatabases('backend_crash'); });
after(async () => { await dbs?.drop(); });

test(`SIGKILL after the production commit ${KILLS} times → every committed registration reaches staging`, async () => {
  const env = {
    DATABASE_URL: dbs.prod.url,
    STAGING_DATABASE_URL: dbs.staging.url,
    SYNC_STALE_LOCK_SECONDS: '1',
  };
  const emails: string[] = [];
  for (let i = 0; i < KILLS; i++) {
    const child = await startChild({ ...env, ELARA_FAILPOINT: 'after_prod_commit' });
    const body = registration();
    emails.push(body.email);
    const res = await fetch(`${child.url}/api/v2/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
      .then((r) => r.status, () => 'no response');
    assert.equal(res, 'no response', 'the failpoint kills the process before it answers');
    const { signal } = await child.exited;
    assert.equal(signal, 'SIGKILL');
  }
  const committed = (await sql(dbs.prod.url, 'SELECT id FROM "User" WHERE email = ANY($1::text[])', [emails])).rows.map((r) => r.id as string);
  assert.equal(committed.length, KILLS, 'each killed request had committed');
  const lostBeforeRestart = KILLS - (await sql(dbs.staging.url, 'SELECT count(*)::int AS n FROM "User" WHERE id = ANY($1::uuid[])', [committed])).rows[0].n;

  const child = await startChild(env);
  try {
    let lost = KILLS;
    await waitFor(async () => {
      const n = (await sql(dbs.staging.url, 'SELECT count(*)::int AS n FROM "User" WHERE id = ANY($1::uuid[])', [committed])).rows[0].n;
      lost = committed.length - n;
      return lost === 0;
    }, 30_000, 50).catch(() => {});
    process.stderr.write(`# crash test: kills=${KILLS} committed=${committed.length} missing-before-restart=${lostBeforeRestart} lost=${lost}\n`);
    assert.equal(lost, 0);
    const orgsMissing = (await sql(dbs.prod.url, `SELECT array_agg("organizationId") AS ids FROM "User" WHERE id = ANY($1::uuid[])`, [committed])).rows[0].ids;
    const n = (await sql(dbs.staging.url, 'SELECT count(*)::int AS n FROM "Organization" WHERE id = ANY($1::uuid[])', [orgsMissing])).rows[0].n;
    assert.equal(n, KILLS);
  } finally {
    child.kill();
    await child.exited;
  }
});

test('SIGKILL while the worker holds a job → another process delivers it in seconds, not after SYNC_STALE_LOCK_SECONDS', async () => {
  // An hour of stale-lock timeout: only the dead-worker sweep (liveness locks) can release the job.
  const env = { DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, SYNC_STALE_LOCK_SECONDS: '3600' };
  const dying = await startChild({ ...env, ELARA_FAILPOINT: 'in_sync_job' });
  const body = registration();
  await fetch(`${dying.url}/api/v2/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).catch(() => {});
  assert.equal((await dying.exited).signal, 'SIGKILL');
  const locked = await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM graphile_worker.jobs WHERE locked_by IS NOT NULL`);
  assert.equal(locked.rows[0].n, 1, 'the dead process left its job locked');

  const child = await startChild(env);
  try {
    await waitFor(async () => (await sql(dbs.staging.url, 'SELECT 1 FROM "User" WHERE email = $1', [body.email])).rowCount, 30_000, 50);
    assert.match(child.output(), /released sync jobs locked by workers that stopped/);
  } finally {
    child.kill();
    await child.exited;
  }
});

test('SIGTERM with a client stuck mid-body: the connection is cut at SHUTDOWN_TIMEOUT_MS, the worker drained, exit 0, no error line', async () => {
  const child = await startChild({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, SHUTDOWN_TIMEOUT_MS: '500' });
  const { port } = new URL(child.url);
  const stuck = connect(Number(port), '127.0.0.1');
  await new Promise<void>((r) => stuck.once('connect', () => r()));
  // Content-Length 100, 10 bytes sent: the request stays in flight until the server gives up on it.
  stuck.write('POST /api/v2/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email":"');
  const closed = new Promise<void>((r) => stuck.once('close', () => r()));
  stuck.on('error', () => {});
  await new Promise((r) => setTimeout(r, 200));
  child.term();
  const { code } = await child.exited;
  await closed;
  assert.equal(code, 0, child.output());
  assert.match(child.output(), /"msg":"stopped"/);
  assert.match(child.output(), /closing their connections/);
  assert.doesNotMatch(child.output(), /"level":(50|60)/, 'no error-level line');
});

test('SIGTERM: stops accepting, drains the worker, closes the pools, exits 0; the registration is in staging', async () => {
  const child = await startChild({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url });
  const body = registration();
  const res = await fetch(`${child.url}/api/v2/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(res.status, 201);
  const { user } = (await res.json()) as { user: { id: string } };
  await waitFor(async () => (await sql(dbs.staging.url, 'SELECT 1 FROM "User" WHERE id = $1', [user.id])).rowCount, 10_000, 20);
  child.term();
  const { code } = await child.exited;
  assert.equal(code, 0, child.output());
  assert.match(child.output(), /"msg":"stopped"/);
  assert.doesNotMatch(child.output(), /"level":(50|60)/, 'no error-level line');
  assert.ok(!child.output().includes(body.password));
});
