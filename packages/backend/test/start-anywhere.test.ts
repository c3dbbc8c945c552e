// The README's `npm start` (its command) from a fresh git clone inside a private (0700) directory, as the user
// running the tests (root in CI: then PostgreSQL runs as user postgres, who cannot reach the clone).
// A registration reaches staging; Ctrl-C (SIGINT to the whole process group, as a terminal sends
// it) shuts down in order: exit 0, no error-level line, PostgreSQL stopped.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { registration, waitFor } from './helpers.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const isRoot = process.getuid?.() === 0;
const cleanups: Array<() => void> = [];
after(() => { for (const c of cleanups.reverse()) c(); });

function sh(cmd: string, args: string[], cwd?: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

test(`npm start from a clone in a 0700 directory (as ${isRoot ? 'root' : 'a normal user'}), then Ctrl-C`, async () => {
  const home = mkdtempSync(join(tmpdir(), 'elara-private-'));
  chmodSync(home, 0o700);
  cleanups.push(() => rmSync(home, { recursive: true, force: true }));
  const clone = join(home, 'elara');
  sh('git', ['clone', '--quiet', REPO, clone]);
  // node_modules as `npm install` would leave it, without the network: hard links to this
  // checkout's files (same file system), else a full offline install from npm's cache.
  const linked = spawnSync('cp', ['-al', join(REPO, 'node_modules'), join(clone, 'node_modules')]);
  if (linked.status !== 0) sh('npm', ['ci', '--offline', '--no-audit', '--no-fund'], clone);

  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', LOG_LEVEL: 'info' };
  for (const k of ['DATABASE_URL', 'STAGING_DATABASE_URL', 'RECONCILE_INTERVAL', 'OPS_TOKEN', 'npm_config_prefix']) delete env[k];
  // The command `npm start` runs, started directly: under npm, a Ctrl-C also reaches npm's `sh -c`,
  // which then reports the signal (exit 130) whatever the server's own exit code; this test checks
  // the server's. Its own process group, so SIGINT goes to the group the way a terminal sends it.
  const [cmd, ...args] = (JSON.parse(readFileSync(join(clone, 'package.json'), 'utf8')).scripts.start as string).split(' ');
  assert.equal(cmd, 'node');
  const child = spawn(process.execPath, args, { cwd: clone, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let running = true;
  void exited.then(() => { running = false; });
  cleanups.push(() => { if (running) try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } });

  await waitFor(async () => !running || out.includes('Stop with Ctrl-C.'), 120_000, 100);
  assert.ok(running, `npm start exited early:\n${out}`);
  const url = /Elara API ready on (http:\/\/\S+)/.exec(out)?.[1];
  const pgPort = /psql -h 127\.0\.0\.1 -p (\d+)/.exec(out)?.[1];
  assert.ok(url && pgPort, out);
  const dataDir = /embedded data directory: (\S+)/.exec(out)?.[1];
  assert.ok(dataDir, out);
  if (isRoot) {
    assert.match(out, /user postgres cannot reach .* kept in \/var\/tmp\/elara-\w+ instead/);
    assert.ok(!dataDir.startsWith(home), 'the data is not inside the private directory');
    const base = join(dataDir, '..');
    cleanups.push(() => rmSync(base, { recursive: true, force: true }));
  } else {
    assert.equal(dataDir, join(clone, '.elara', 'pg'));
  }

  const body = registration();
  const res = await fetch(`${url}/api/v2/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(res.status, 201, await res.text());
  const staging = new pg.Client({ host: '127.0.0.1', port: Number(pgPort), user: 'postgres', database: 'elara_staging' });
  await staging.connect();
  try {
    await waitFor(async () => (await staging.query('SELECT 1 FROM "User" WHERE email = $1', [body.email])).rowCount, 15_000, 50);
  } finally {
    await staging.end();
  }

  process.kill(-child.pid!, 'SIGINT');
  const code = await exited;
  assert.equal(code, 0, out);
  assert.match(out, /"msg":"stopped"/);
  const errors = out.split('\n').filter((l) => /"level":(50|60)/.test(l));
  assert.deepEqual(errors, [], 'no error-level line (PostgreSQL stopped after the pools, not before them)');
  assert.ok(!existsSync(join(dataDir, 'postmaster.pid')), 'the embedded PostgreSQL was stopped');
});
