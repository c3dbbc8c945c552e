// T1/T2/T8 of notes/reliability-security.md, black-box: the elara-sync CLI is SIGKILLed at random
// moments while it reconciles a ~30k-user production into staging. A run applies everything in
// ONE staging transaction, so right after every kill each staging table must equal either its
// fingerprint from before the run or production's (and all tables the same side of that line),
// with no FK orphan; the next clean run converges. Then two runs started at once: one works, the
// other exits 0 "skipped", and nothing is written twice.
//
// Knobs: KILL_KILLS (kills to reach, default 20), KILL_SEED (printed at start), KEEP_TEST_DB=1.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { LOCK_APPLY } from '../src/state/schema.ts';
import { prng, SEED_LIKE_SCHEMA } from './helpers.ts';

const CLI = fileURLToPath(new URL('../bin/elara-sync.js', import.meta.url));
const KILLS = Number(process.env.KILL_KILLS ?? 20);
const MAX_ITERATIONS = 3 * KILLS;
const SEED = Number(process.env.KILL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const ORGS = 7_000;
const USERS = 21_000;
const TABLES = ['Organization', 'User'] as const;
type TableName = (typeof TABLES)[number];



/** mulberry32: a small seeded PRNG, so a failing run can be replayed with KILL_SEED. */
const rand = prng(SEED);
const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

let source: TestDatabase;
let target: TestDatabase;
let passedTests = 0;

before(async () => {
  console.log(`# kill test seed: KILL_SEED=${SEED}`);
  source = await createTestDatabase('sync_kill_src');
  target = await createTestDatabase('sync_kill_dst');
  await sql(source.url, SEED_LIKE_SCHEMA);
  await sql(target.url, SEED_LIKE_SCHEMA);
  await sql(source.url, `
    SELECT setseed(${(SEED % 1000) / 1000});
    INSERT INTO "Organization" (id, name, tier, "apiKey", "apiSecret", settings, "isActive")
    SELECT gen_random_uuid(), 'Org ' || g || E'\\twith a tab', (ARRAY['free','pro','enterprise'])[1 + g % 3],
           'key_' || md5(g::text || random()::text), md5('secret' || g),
           CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('seats', g % 50, 'note', E'multi\\nline "quoted"', 'tags', jsonb_build_array('a', g)) END,
           g % 7 <> 0
      FROM generate_series(1, ${ORGS}) g;
    CREATE TEMP TABLE o AS SELECT id, row_number() OVER (ORDER BY id) AS rn FROM "Organization";
    INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", bio, profile, role, "organizationId", "lastLoginAt")
    SELECT gen_random_uuid(), 'user' || g || '@example.com', '$argon2id$' || md5(g::text),
           CASE WHEN g % 11 = 0 THEN NULL ELSE 'First' || g END,
           CASE WHEN g % 13 = 0 THEN NULL ELSE E'Last\\t' || g END,
           CASE WHEN g % 3 = 0 THEN NULL ELSE E'line one\\nline two\\twith tab \\\\ backslash ' || g END,
           CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('theme', 'dark', 'n', g, 'text', E'a\\tb\\nc') END,
           (ARRAY['member','admin','owner'])[1 + g % 3], o.id,
           CASE WHEN g % 2 = 0 THEN NULL ELSE now() - g * interval '1 minute' END
      FROM generate_series(1, ${USERS}) g JOIN o ON o.rn = 1 + g % ${ORGS};
    CREATE TEMP TABLE u AS SELECT id, "organizationId", row_number() OVER (ORDER BY id) AS rn FROM "User";
    UPDATE "User" x SET "managerId" = m.id FROM u a JOIN u m ON m.rn = a.rn + 1 WHERE x.id = a.id AND a.rn % 3 = 0;
    ANALYZE;`);
});

after(async () => {
  if (passedTests === 2) {
    await Promise.all([source?.drop(), target?.drop()]);
  } else {
    console.error(`# kept for diagnosis: source ${source?.name}, target ${target?.name} (KILL_SEED=${SEED})`);
  }
});

// ---------- oracle ----------

type Fp = { count: number; md5: string };
type Fps = Record<TableName, Fp>;

/** Every table's fingerprint read in ONE snapshot, so a commit landing mid-read cannot fake a mix. */
async function fingerprints(url: string): Promise<Fps> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const out = {} as Fps;
    for (const t of TABLES) {
      const r = await c.query(`SELECT count(*)::int AS count, coalesce(md5(string_agg(t::text, '|' ORDER BY t.id)), '') AS md5 FROM "${t}" t`);
      out[t] = r.rows[0];
    }
    await c.query('COMMIT');
    return out;
  } finally {
    await c.end();
  }
}

const same = (a: Fp, b: Fp) => a.count === b.count && a.md5 === b.md5;

async function orphans(url: string): Promise<number> {
  const r = await sql(url, `SELECT
      (SELECT count(*) FROM "User" u WHERE NOT EXISTS (SELECT 1 FROM "Organization" o WHERE o.id = u."organizationId"))
    + (SELECT count(*) FROM "User" u WHERE u."managerId" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "User" m WHERE m.id = u."managerId")) AS n`);
  return Number(r.rows[0].n);
}

/**
 * Classifies staging against the two allowed states. 'before'/'after' when every table that
 * changed sits on the same side; 'mixed' when one table is before and another after (a second
 * transaction somewhere); 'partial' when a table matches neither.
 */
function classify(now: Fps, beforeRun: Fps, source: Fps): { state: 'before' | 'after' | 'mixed' | 'partial'; partial: TableName[] } {
  const partial = TABLES.filter((t) => !same(now[t], beforeRun[t]) && !same(now[t], source[t]));
  if (partial.length) return { state: 'partial', partial };
  const changed = TABLES.filter((t) => !same(beforeRun[t], source[t]));
  const atAfter = changed.filter((t) => same(now[t], source[t]));
  if (atAfter.length === 0) return { state: 'before', partial };
  if (atAfter.length === changed.length) return { state: 'after', partial };
  return { state: 'mixed', partial };
}

// ---------- processes ----------

interface Spawned {
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }>;
}

function spawnCli(args: string[]): Spawned {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - started }));
  });
  return { pid: child.pid!, exited };
}

const runArgs = () => ['run', '--json', '--from', source.url, '--to', target.url];

async function cleanRun(): Promise<{ ms: number; json: any }> {
  const r = await spawnCli(runArgs()).exited;
  assert.equal(r.code, 0, `a clean run must exit 0; stdout=${r.stdout} stderr=${r.stderr}`);
  const json = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(json.ok, true, r.stdout);
  assert.equal(json.skipped, false, r.stdout);
  return { ms: r.ms, json };
}

async function sleep(ms: number) {
  await new Promise((r) => setTimeout(r, ms));
}

/** Waits (bounded) until staging has no elara-sync backend left; returns how long that took and the longest idle-in-transaction sighting. */
async function waitForBackendsGone(limitMs: number): Promise<{ goneAfterMs: number; idleInTxMs: number }> {
  const started = Date.now();
  let idleSince: number | null = null;
  let idleInTxMs = 0;
  for (;;) {
    const r = await sql(target.url,
      `SELECT count(*) FILTER (WHERE application_name LIKE 'elara-sync%')::int AS sync,
              count(*) FILTER (WHERE state LIKE 'idle in transaction%')::int AS idle_tx
         FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [target.name]);
    const { sync, idle_tx } = r.rows[0];
    if (idle_tx > 0) {
      idleSince ??= Date.now();
      idleInTxMs = Math.max(idleInTxMs, Date.now() - idleSince);
    } else {
      idleSince = null;
    }
    if (sync === 0 && idle_tx === 0) return { goneAfterMs: Date.now() - started, idleInTxMs };
    if (Date.now() - started > limitMs) return { goneAfterMs: -1, idleInTxMs };
    await sleep(50);
  }
}

// ---------- production writes ----------

type Size = 'small' | 'medium' | 'large';

/** Random inserts, updates and deletes (including whole organizations with their users) in one production transaction. */
async function mutateSource(size: Size): Promise<string> {
  const k = size === 'small' ? () => int(1, 30) : size === 'medium' ? () => int(50, 400) : () => int(400, 1500);
  // Roughly balanced, so the tables stay near their seeded size over the whole loop.
  const newOrgs = Math.max(1, Math.floor(k() / 4));
  const newUsers = k();
  const updUsers = size === 'large' ? 0.65 : k() / USERS; // large: most buckets dirty → a full compare
  const updOrgs = k();
  const delUsers = Math.floor(k() / 2);
  const delOrgs = Math.max(1, Math.floor(k() / 6));
  const managers = k();
  const c = new pg.Client({ connectionString: source.url });
  await c.connect();
  try {
    await c.query('BEGIN');
    await c.query(`SELECT setseed(${rand() * 2 - 1})`);
    await c.query(`
      INSERT INTO "Organization" (id, name, tier, "apiKey", "apiSecret", settings)
      SELECT gen_random_uuid(), E'New org\\n' || g, 'free', 'key_' || gen_random_uuid(), md5(random()::text),
             CASE WHEN random() < 0.3 THEN NULL ELSE jsonb_build_object('new', true, 'g', g) END
        FROM generate_series(1, ${newOrgs}) g`);
    await c.query(`
      INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", bio, profile, "organizationId")
      SELECT gen_random_uuid(), 'new-' || gen_random_uuid() || '@example.com', md5(random()::text),
             CASE WHEN random() < 0.2 THEN NULL ELSE 'New' END, E'Tab\\tName', E'bio\\nwith newline',
             CASE WHEN random() < 0.5 THEN NULL ELSE jsonb_build_object('k', random()) END,
             o.a[1 + floor(random() * array_length(o.a, 1))::int]
        FROM generate_series(1, ${newUsers}) g, (SELECT array_agg(id) AS a FROM "Organization") o`);
    await c.query(`
      UPDATE "User" SET "lastName" = CASE WHEN random() < 0.2 THEN NULL ELSE E'Updated\\t' || md5(random()::text) END,
             profile = jsonb_build_object('v', random(), 's', E'x\\ny'), "updatedAt" = now()
       WHERE random() < ${updUsers}`);
    await c.query(`
      UPDATE "Organization" SET name = E'Renamed\\n' || md5(random()::text), settings = NULL, "updatedAt" = now()
       WHERE id IN (SELECT id FROM "Organization" ORDER BY random() LIMIT ${updOrgs})`);
    await c.query(`
      UPDATE "User" x SET "managerId" = m.id
        FROM (SELECT id, row_number() OVER () AS rn FROM (SELECT id FROM "User" ORDER BY random() LIMIT ${managers}) s) a
        JOIN (SELECT id, row_number() OVER () AS rn FROM (SELECT id FROM "User" ORDER BY random() LIMIT ${managers}) s) m ON m.rn = a.rn
       WHERE x.id = a.id AND a.id <> m.id`);
    await c.query(`DELETE FROM "User" WHERE id IN (SELECT id FROM "User" ORDER BY random() LIMIT ${delUsers})`);
    // An organization goes with its users (the FK is RESTRICT, as in the seed schema).
    await c.query(`CREATE TEMP TABLE gone ON COMMIT DROP AS SELECT id FROM "Organization" ORDER BY random() LIMIT ${delOrgs}`);
    await c.query(`DELETE FROM "User" WHERE "organizationId" IN (SELECT id FROM gone)`);
    await c.query(`DELETE FROM "Organization" WHERE id IN (SELECT id FROM gone)`);
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
  return `${size}: +${newOrgs} orgs +${newUsers} users ~${Math.round(updUsers * 100)}% users ~${updOrgs} orgs -${delUsers} users -${delOrgs} orgs`;
}

async function runCount(): Promise<number> {
  const r = await sql(target.url, `SELECT CASE WHEN to_regclass('elara_sync.runs') IS NULL THEN 0 ELSE (SELECT count(*) FROM elara_sync.runs) END::int AS n`);
  return r.rows[0].n;
}

// ---------- tests ----------

test('SIGKILL at random moments: staging is always before-or-after, never partial, never orphaned; then converges', async () => {
  const t0 = Date.now();
  // One clean full sync into the empty staging, then one typical incremental run, timed as whole processes.
  const full = await cleanRun();
  assert.deepEqual(await fingerprints(target.url), await fingerprints(source.url), 'the first full sync must make staging equal production');
  await mutateSource('medium');
  const inc = await cleanRun();
  await mutateSource('large');
  const big = await cleanRun();
  // A whole process is start-up (loading the CLI) plus the run itself (the engine's durationMs).
  const startupMs = Math.max(inc.ms - inc.json.durationMs, 100);
  const runMs = { small: inc.json.durationMs, medium: inc.json.durationMs, large: big.json.durationMs };
  console.log(`# clean runs (whole process / engine): full ${full.ms}/${full.json.durationMs} ms, medium change ${inc.ms}/${inc.json.durationMs} ms, `
    + `large change ${big.ms}/${big.json.durationMs} ms; kills: 1 in 4 at [0, ${startupMs}] ms after spawn, else at [0, run duration] after the writer connects`);
  const watcher = new pg.Client({ connectionString: target.url });
  await watcher.connect();

  const stats = { kills: 0, killedAfterRunStarted: 0, killedButCommitted: 0, finished: 0, partial_tables_seen: 0, mixed_seen: 0, orphans: 0, maxIdleInTxMs: 0, maxBackendGoneMs: 0 };
  const problems: string[] = [];
  let i = 0;
  for (; stats.kills < KILLS && i < MAX_ITERATIONS; i++) {
    const size: Size = rand() < 0.15 ? 'large' : rand() < 0.5 ? 'medium' : 'small';
    const what = await mutateSource(size);
    const [beforeRun, src] = await Promise.all([fingerprints(target.url), fingerprints(source.url)]);
    const runsBefore = await runCount();
    const letFinish = i % 6 === 5;
    const duringStartup = rand() < 0.25;
    const delay = Math.floor(rand() * (duringStartup ? startupMs : runMs[size]));
    const child = spawnCli(runArgs());
    let exitedYet = false;
    void child.exited.then(() => (exitedYet = true));
    let killed = false;
    if (!letFinish) {
      if (!duringStartup) {
        // The delay counts from the moment the run's writer session is on staging.
        const t = Date.now();
        while (!exitedYet && Date.now() - t < 20_000) {
          const r = await watcher.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND application_name = 'elara-sync-writer'`, [target.name]);
          if (r.rowCount) break;
          await sleep(5);
        }
      }
      await sleep(delay);
      if (!exitedYet) {
        process.kill(child.pid, 'SIGKILL');
        killed = true;
      }
    }
    const res = await child.exited;
    const wasKilled = killed && res.signal === 'SIGKILL';

    // Right after the process is gone, before the server has even noticed: one snapshot of staging.
    const now = await fingerprints(target.url);
    const c1 = classify(now, beforeRun, src);
    const o1 = await orphans(target.url);
    const gone = await waitForBackendsGone(20_000);
    // And again once the server has rolled back (or finished committing) the dead session's work.
    const settled = await fingerprints(target.url);
    const c2 = classify(settled, beforeRun, src);
    const o2 = await orphans(target.url);

    const label = `iteration ${i} (${what}; ${letFinish ? 'let finish' : `kill ${delay} ms after ${duringStartup ? 'spawn' : 'the writer connected'}`}; exit ${res.code ?? res.signal} after ${res.ms} ms)`;
    if (wasKilled) {
      stats.kills++;
      if ((await runCount()) > runsBefore) stats.killedAfterRunStarted++;
      if (c2.state === 'after') stats.killedButCommitted++;
    } else {
      stats.finished++;
      if (res.code !== 0) problems.push(`${label}: a run that was not killed exited ${res.code}: ${res.stdout}${res.stderr}`);
      else if (c2.state !== 'after' && TABLES.some((t) => !same(beforeRun[t], src[t]))) problems.push(`${label}: a finished run did not bring staging to production's fingerprint`);
    }
    for (const c of [c1, c2]) {
      if (c.state === 'partial') {
        stats.partial_tables_seen += c.partial.length;
        problems.push(`${label}: PARTIAL table(s) ${c.partial.join(', ')}: neither the pre-run nor production's fingerprint`);
      }
      if (c.state === 'mixed') {
        stats.mixed_seen++;
        problems.push(`${label}: tables MIXED: some at the pre-run state, some at production's (the run is meant to be one transaction)`);
      }
    }
    stats.orphans += o1 + o2;
    if (o1 + o2) problems.push(`${label}: ${o1 + o2} FK orphan rows in staging`);
    stats.maxIdleInTxMs = Math.max(stats.maxIdleInTxMs, gone.idleInTxMs);
    if (gone.goneAfterMs < 0) problems.push(`${label}: an elara-sync backend (or an idle-in-transaction session) was still on staging 20 s after the process died`);
    else stats.maxBackendGoneMs = Math.max(stats.maxBackendGoneMs, gone.goneAfterMs);
    if (gone.idleInTxMs > 5_000) problems.push(`${label}: a staging backend stayed idle in transaction for ${gone.idleInTxMs} ms after the kill`);
  }

  await watcher.end();
  // Recovery: one clean run converges; verify (the CLI, exit code) agrees.
  const last = await cleanRun();
  const finalSrc = await fingerprints(source.url);
  const finalDst = await fingerprints(target.url);
  const v = await spawnCli(['verify', '--from', source.url, '--to', target.url]).exited;
  const orphansEnd = await orphans(target.url);
  const converged = same(finalSrc.Organization, finalDst.Organization) && same(finalSrc.User, finalDst.User) && v.code === 0;
  console.log(`# iterations=${i} kills=${stats.kills} killed_after_run_started=${stats.killedAfterRunStarted} killed_but_committed=${stats.killedButCommitted} finished=${stats.finished} `
    + `partial_tables_seen=${stats.partial_tables_seen} mixed_seen=${stats.mixed_seen} orphans=${stats.orphans + orphansEnd} `
    + `max_idle_in_tx_ms=${stats.maxIdleInTxMs} max_backend_gone_ms=${stats.maxBackendGoneMs} recovery_run_ms=${last.ms} `
    + `${converged ? 'converged' : 'NOT converged'} (${Math.round((Date.now() - t0) / 1000)} s)`);

  assert.deepEqual(problems, [], `kill loop found problems (KILL_SEED=${SEED}):\n${problems.join('\n')}`);
  assert.ok(stats.kills >= KILLS, `expected ${KILLS} kills within ${MAX_ITERATIONS} iterations, got ${stats.kills}`);
  assert.equal(orphansEnd, 0, 'FK orphans after the recovery run');
  assert.deepEqual(finalDst, finalSrc, 'after one clean run staging must equal production (fingerprints)');
  assert.equal(v.code, 0, `elara-sync verify must exit 0 after the recovery run:\n${v.stdout}${v.stderr}`);
  passedTests++;
});

/** Keys of a table on one side, for exact expected insert/delete counts. */
async function keys(url: string, table: TableName): Promise<Set<string>> {
  const r = await sql(url, `SELECT id::text AS id FROM "${table}"`);
  return new Set(r.rows.map((x) => x.id));
}

async function expectedCounts(): Promise<Record<TableName, { inserted: number; deleted: number }>> {
  const out = {} as Record<TableName, { inserted: number; deleted: number }>;
  for (const t of TABLES) {
    const [s, d] = await Promise.all([keys(source.url, t), keys(target.url, t)]);
    out[t] = { inserted: [...s].filter((k) => !d.has(k)).length, deleted: [...d].filter((k) => !s.has(k)).length };
  }
  return out;
}

const lastJson = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!);

test('two runs started at once: one does the work, the other exits 0 quickly as skipped; nothing written twice', async () => {
  const t0 = Date.now();
  // Deterministic overlap: an immediate (keys) sync in flight holds the apply lock shared, so the
  // run that wins the run lock is still in progress when the other one checks it.
  for (let i = 0; i < 5; i++) {
    await mutateSource(i % 2 ? 'small' : 'medium');
    const want = await expectedCounts();
    const runsBefore = await runCount();
    const holder = new pg.Client({ connectionString: target.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock_shared($1)', [LOCK_APPLY]);
      const a = spawnCli(runArgs());
      const b = spawnCli(runArgs());
      const first = await Promise.race([a.exited.then((r) => ({ r, other: b })), b.exited.then((r) => ({ r, other: a }))]);
      assert.equal(first.r.code, 0, `the run that found another in progress must exit 0: ${first.r.stdout}${first.r.stderr}`);
      const skippedJson = lastJson(first.r.stdout);
      assert.equal(skippedJson.skipped, true, `the first to exit must be the skipped one: ${first.r.stdout}`);
      assert.deepEqual(skippedJson.tables, [], 'a skipped run reports no table work');
      await holder.query('SELECT pg_advisory_unlock_shared($1)', [LOCK_APPLY]);
      const second = await first.other.exited;
      assert.equal(second.code, 0, `the working run must exit 0: ${second.stdout}${second.stderr}`);
      const work = lastJson(second.stdout);
      assert.equal(work.skipped, false);
      for (const t of TABLES) {
        const r = work.tables.find((x: { table: string }) => x.table === t);
        assert.equal(r.inserted, want[t].inserted, `${t}: inserted once, by the one working run`);
        assert.equal(r.deleted, want[t].deleted, `${t}: deleted once, by the one working run`);
      }
      assert.equal(await runCount(), runsBefore + 1, 'exactly one run record per overlap (a skipped run records nothing)');
      assert.deepEqual(await fingerprints(target.url), await fingerprints(source.url));
    } finally {
      await holder.end();
    }
  }
  // Natural overlap, no lock held: who wins is timing, so assert only what must always hold:
  // both exit 0, at most one works at a time, and the rows are inserted/deleted exactly once in total.
  let skips = 0;
  for (let i = 0; i < 2; i++) {
    await mutateSource('medium');
    const want = await expectedCounts();
    const [ra, rb] = await Promise.all([spawnCli(runArgs()).exited, spawnCli(runArgs()).exited]);
    assert.equal(ra.code, 0, ra.stdout + ra.stderr);
    assert.equal(rb.code, 0, rb.stdout + rb.stderr);
    const ja = lastJson(ra.stdout);
    const jb = lastJson(rb.stdout);
    skips += Number(ja.skipped) + Number(jb.skipped);
    assert.ok(!(ja.skipped && jb.skipped), 'both runs skipped: nobody did the work');
    for (const t of TABLES) {
      const sum = (k: 'inserted' | 'deleted') => [ja, jb].reduce((n, j) => n + (j.tables.find((x: { table: string }) => x.table === t)?.[k] ?? 0), 0);
      assert.equal(sum('inserted'), want[t].inserted, `${t}: rows inserted twice or not at all across the two runs`);
      assert.equal(sum('deleted'), want[t].deleted, `${t}: rows deleted twice or not at all across the two runs`);
    }
    assert.deepEqual(await fingerprints(target.url), await fingerprints(source.url));
  }
  console.log(`# concurrent_runs=7 (5 forced overlaps + 2 natural, ${skips} natural skips) double_writers=0 (${Math.round((Date.now() - t0) / 1000)} s)`);
  passedTests++;
});
