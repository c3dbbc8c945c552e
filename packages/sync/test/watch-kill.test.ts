// `elara-sync watch` SIGKILLed at random moments while production keeps writing (black-box, the
// CLI as a child process, a throwaway wal_level = logical cluster). A concurrent writer runs small
// transactions: an Organization with its Users in one transaction, updates (an unchanged TOASTed
// column included), email changes, deletes (cascading), key updates (cascading to the FK columns).
// The writer keeps nothing in memory: the truth is production at the end. watch is killed at least
// KILLS times, each time after it applied something (an `applied` line on stdout), plus a few kills
// during start-up or the initial snapshot; it is restarted each time. Then the writer stops, watch
// starts one last time, the target must become equal to production (lost = 0, extra = 0), SIGTERM
// must end it with exit 0 and leave the slot inactive.
//
// Knobs: WATCH_KILL_KILLS (default 20), WATCH_KILL_SEED (printed at start).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { CLI, prng } from './helpers.ts';

const KILLS = Number(process.env.WATCH_KILL_KILLS ?? 20);
const SEED = Number(process.env.WATCH_KILL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SLOT = 'elara_sync_staging';

const SCHEMA = `
CREATE SEQUENCE ids START 100000;
CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL, tier text NOT NULL DEFAULT 'free', notes text,
  "updatedAt" timestamptz(3) NOT NULL DEFAULT now());
ALTER TABLE "Organization" ALTER COLUMN notes SET STORAGE EXTERNAL;
CREATE TABLE "User" (id int PRIMARY KEY, email text NOT NULL UNIQUE,
  "organizationId" int NOT NULL REFERENCES "Organization"(id) ON DELETE CASCADE ON UPDATE CASCADE,
  "managerId" int REFERENCES "User"(id) ON DELETE SET NULL ON UPDATE CASCADE,
  profile jsonb, bio text, "lastLoginAt" timestamptz(3));
CREATE INDEX ON "User" ("organizationId");
CREATE INDEX ON "User" ("managerId");`;

/** mulberry32, so a failing run can be replayed with WATCH_KILL_SEED (the kill moments; the writer's choices too). */
const rand = prng(SEED);
const wrand = prng(SEED ^ 0x5bd1e995);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: LogicalServer;
let srcDb = '';
let dstDb = '';
let work = '';
before(async () => {
  console.log(`# watch kill test seed: WATCH_KILL_SEED=${SEED}`);
  server = await startLogicalServer();
  srcDb = await server.createDatabase('watchkill_src');
  dstDb = await server.createDatabase('watchkill_dst');
  await server.sql(srcDb, SCHEMA);
  await server.sql(dstDb, SCHEMA);
  await server.sql(srcDb, `
    INSERT INTO "Organization" (id, name, tier, notes) SELECT g, 'org ' || g, (ARRAY['free','pro','enterprise'])[1 + g % 3],
      CASE WHEN g % 10 = 0 THEN repeat('toasted notes ' || g || ' ', 400) END FROM generate_series(1, 300) g;
    INSERT INTO "User" (id, email, "organizationId", profile, bio)
      SELECT g, 'user' || g || '@x.test', 1 + g % 300, CASE WHEN g % 3 = 0 THEN jsonb_build_object('n', g, 't', E'a\\tb') END,
             CASE WHEN g % 4 = 0 THEN E'line\\nbreak ' || g END FROM generate_series(1, 3000) g;
    UPDATE "User" SET "managerId" = id - 1 WHERE id % 5 = 0;`);
  // A directory without an elara-sync.yml: the CLI uses its defaults plus the flags.
  work = mkdtempSync(join(tmpdir(), 'watch-kill-'));
});
after(async () => {
  if (work) rmSync(work, { recursive: true, force: true });
  await server?.stop();
});

// ---------- production writes ----------

/** One small random production transaction; ids come from production's sequence, so nothing is tracked here. */
async function writeOnce(c: pg.Client): Promise<void> {
  const r = wrand();
  const pick = (t: string) => `(SELECT id FROM "${t}" ORDER BY random() LIMIT 1)`;
  await c.query('BEGIN');
  try {
    if (r < 0.3) {
      // An organization and its users, in one transaction.
      await c.query(`WITH o AS (INSERT INTO "Organization" (id, name, notes) VALUES (nextval('ids'), 'new org ' || currval('ids'),
          CASE WHEN random() < 0.3 THEN repeat('big ', 3000) END) RETURNING id)
        INSERT INTO "User" (id, email, "organizationId", profile) SELECT nextval('ids'), 'new' || currval('ids') || '@x.test', o.id,
          jsonb_build_object('g', g) FROM o, generate_series(1, 1 + floor(random() * 3)::int) g`);
    } else if (r < 0.5) {
      await c.query(`UPDATE "User" SET "lastLoginAt" = now(), bio = CASE WHEN random() < 0.5 THEN NULL ELSE md5(random()::text) END
        WHERE id IN (SELECT id FROM "User" ORDER BY random() LIMIT 1 + floor(random() * 5)::int)`);
    } else if (r < 0.6) {
      // An update that leaves the TOASTed notes as they are (pgoutput sends them as "unchanged").
      await c.query(`UPDATE "Organization" SET name = 'renamed ' || md5(random()::text), "updatedAt" = now() WHERE id = ${pick('Organization')}`);
    } else if (r < 0.68) {
      await c.query(`UPDATE "User" SET email = 'changed' || nextval('ids') || '@x.test' WHERE id = ${pick('User')}`);
    } else if (r < 0.76) {
      await c.query(`DELETE FROM "User" WHERE id IN (SELECT id FROM "User" ORDER BY random() LIMIT 1 + floor(random() * 3)::int)`);
    } else if (r < 0.8) {
      // Cascades to its users (and SET NULL on their reports).
      await c.query(`DELETE FROM "Organization" WHERE id = ${pick('Organization')}`);
    } else if (r < 0.88) {
      // Key update of a user: managerId of its reports follows (ON UPDATE CASCADE).
      await c.query(`UPDATE "User" SET id = nextval('ids') WHERE id = ${pick('User')}`);
    } else if (r < 0.93) {
      // Key update of an organization: every user's organizationId follows.
      await c.query(`UPDATE "Organization" SET id = nextval('ids') WHERE id = ${pick('Organization')}`);
    } else {
      // Two changes of one row and a move to another organization, in one transaction.
      await c.query(`CREATE TEMP TABLE one ON COMMIT DROP AS SELECT id FROM "User" ORDER BY random() LIMIT 1`);
      await c.query(`UPDATE "User" SET bio = 'first' WHERE id IN (SELECT id FROM one)`);
      await c.query(`UPDATE "User" SET bio = 'second', "organizationId" = ${pick('Organization')} WHERE id IN (SELECT id FROM one)`);
    }
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    // A random pick racing nothing (the writer is alone) should not fail; a failure is a test bug.
    throw e;
  }
}

function startWriter() {
  let running = true;
  let transactions = 0;
  const done = (async () => {
    const c = new pg.Client({ connectionString: server.url(srcDb) });
    await c.connect();
    try {
      while (running) {
        await writeOnce(c);
        transactions++;
        await sleep(Math.floor(wrand() * 8));
      }
    } finally {
      await c.end();
    }
  })();
  return {
    get transactions() { return transactions; },
    async stop() {
      running = false;
      await done;
    },
  };
}

// ---------- the watch process ----------

interface Watch {
  pid: number;
  /** JSON event lines from stdout, as they arrive. */
  events: Array<Record<string, unknown>>;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isExited: () => boolean;
}

function spawnWatch(ends = { DATABASE_URL: server.url(srcDb), STAGING_DATABASE_URL: server.url(dstDb) }): Watch {
  const child = spawn(process.execPath, [CLI, 'watch', '--json', '--tables', 'Organization,User'], {
    cwd: work,
    env: { ...process.env, ...ends, ELARA_SYNC_CONFIG: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: Array<Record<string, unknown>> = [];
  let buf = '';
  let stderr = '';
  let exited = false;
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) events.push(JSON.parse(line));
    }
  });
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      exited = true;
      resolve({ code, signal });
    });
  });
  return { pid: child.pid!, events, stderr: () => stderr, exited: done, isExited: () => exited };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number, w?: Watch): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${w ? `; events ${JSON.stringify(w.events.slice(-5))} stderr ${w.stderr()}` : ''}`);
    await sleep(20);
  }
}

// ---------- the oracle ----------

async function table(db: string, t: string): Promise<Map<number, string>> {
  const r = await server.sql(db, `SELECT id, row_to_json(x)::text AS j FROM "${t}" x`);
  return new Map(r.rows.map((x) => [x.id as number, x.j as string]));
}

/** lost: production rows missing from the target or different there; extra: target rows production does not have. */
async function diff(): Promise<{ lost: number; extra: number; examples: string[] }> {
  let lost = 0;
  let extra = 0;
  const examples: string[] = [];
  for (const t of ['Organization', 'User']) {
    const [s, d] = await Promise.all([table(srcDb, t), table(dstDb, t)]);
    for (const [id, j] of s) {
      if (d.get(id) !== j) {
        lost++;
        if (examples.length < 5) examples.push(`${t} ${id}: production ${j.slice(0, 200)} target ${d.get(id)?.slice(0, 200) ?? '(missing)'}`);
      }
    }
    for (const id of d.keys()) {
      if (!s.has(id)) {
        extra++;
        if (examples.length < 5) examples.push(`${t} ${id}: only in the target`);
      }
    }
  }
  return { lost, extra, examples };
}

async function slotActive(): Promise<boolean | null> {
  const r = await server.sql(srcDb, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [SLOT]);
  return r.rows[0]?.active ?? null;
}

test('watch SIGKILLed ≥ 20 times under a concurrent writer: after a last clean start the target equals production (lost = 0, extra = 0); SIGTERM exits 0 and frees the slot', async () => {
  const t0 = Date.now();
  const writer = startWriter();
  const stats = { kills: 0, afterApplied: 0, early: 0, snapshots: 0, applied: 0, maxStartToAppliedMs: 0, exitedBeforeKill: 0 };
  const problems: string[] = [];
  const reasons = new Map<string, number>();
  const held: string[] = [];
  try {
    while (stats.afterApplied < KILLS) {
      const w = spawnWatch();
      const started = Date.now();
      // 1 in 5: a kill at a random moment of start-up (connecting, setup, the snapshot of the first start).
      const early = stats.kills > 0 && rand() < 0.2;
      if (early) {
        await sleep(Math.floor(rand() * 1500));
      } else {
        try {
          await until('an applied event', () => w.isExited() || w.events.some((e) => e.kind === 'applied'), 60_000, w);
        } catch (e) {
          process.kill(w.pid, 'SIGKILL');
          await w.exited;
          throw e;
        }
        stats.maxStartToAppliedMs = Math.max(stats.maxStartToAppliedMs, Date.now() - started);
        await sleep(Math.floor(rand() * 600));
      }
      if (w.isExited()) {
        stats.exitedBeforeKill++;
        problems.push(`watch exited by itself: ${JSON.stringify(await w.exited)} stderr=${w.stderr()} events=${JSON.stringify(w.events.slice(-3))}`);
        break;
      }
      process.kill(w.pid, 'SIGKILL');
      const ex = await w.exited;
      assert.equal(ex.signal, 'SIGKILL');
      stats.kills++;
      if (early) stats.early++;
      else stats.afterApplied++;
      for (const e of w.events) if (e.kind === 'snapshot-start') count(reasons, String(e.reason).replace(/[0-9A-F]+\/[0-9A-F]+/g, '<lsn>'));
      stats.snapshots += w.events.filter((e) => e.kind === 'snapshot-start').length;
      stats.applied += w.events.filter((e) => e.kind === 'applied').length;
      for (const e of w.events) if (e.kind === 'held' || e.kind === 'resync') held.push(JSON.stringify(e));
      const fatal = w.events.find((e) => e.kind === 'reconnecting' && (e.error as { code?: string }).code !== 'E_STREAM');
      if (fatal) problems.push(`unexpected error before kill ${stats.kills}: ${JSON.stringify(fatal)}`);
    }
  } finally {
    await writer.stop();
  }
  assert.deepEqual(problems, []);
  const killPhaseMs = Date.now() - t0;

  // The last start: no writer, so the target must reach production exactly.
  const w = spawnWatch();
  let last: Awaited<ReturnType<typeof diff>> = { lost: -1, extra: -1, examples: [] };
  try {
    await until('the target to equal production', async () => {
      if (w.isExited()) return true;
      last = await diff();
      return last.lost === 0 && last.extra === 0;
    }, 30_000).catch(async (e) => {
      last = await diff();
      const local = (await server.sql(dstDb, `SELECT table_name, key::text FROM elara_sync.local_keys ORDER BY 1, 2`)).rows.map((r) => `${r.table_name} ${r.key}`);
      console.log(`# kills=${stats.kills} lost=${last.lost} extra=${last.extra} (not converged) examples:\n#   ${last.examples.join('\n#   ')}`
        + `\n# local keys on the target: ${JSON.stringify(local)}\n# held/resync events (first 20): ${[...held, ...w.events.filter((e) => e.kind === 'held').map((e) => JSON.stringify(e))].slice(0, 20).join('\n#   ')}`);
      throw e;
    });
    assert.equal(w.isExited(), false, `the last watch exited: ${w.stderr()}`);
    assert.equal(await slotActive(), true, 'the last watch holds the slot while streaming');
  } finally {
    process.kill(w.pid, 'SIGTERM');
  }
  const ex = await w.exited;
  const final = await diff();
  for (const e of w.events) if (e.kind === 'snapshot-start') count(reasons, String(e.reason).replace(/[0-9A-F]+\/[0-9A-F]+/g, '<lsn>'));
  stats.snapshots += w.events.filter((e) => e.kind === 'snapshot-start').length;
  const stopMs = Date.now();
  await until('the slot to be inactive', async () => (await slotActive()) === false, 5_000).catch(() => {});
  const inactiveAfterMs = Date.now() - stopMs;
  const state = (await server.sql(dstDb, `SELECT lsn::text, transactions::int FROM elara_sync.stream_state WHERE slot_name = $1`, [SLOT])).rows[0];
  console.log(`# kills=${stats.kills} lost=${final.lost} extra=${final.extra} (after applied ${stats.afterApplied}, early ${stats.early}; `
    + `writer ${writer.transactions} transactions; ${stats.applied} applied events seen; snapshots ${stats.snapshots}; max start→applied ${stats.maxStartToAppliedMs} ms; `
    + `kill phase ${killPhaseMs} ms, total ${Date.now() - t0} ms; slot inactive ${inactiveAfterMs} ms after exit; position ${state?.lsn})`);
  console.log(`# snapshot reasons: ${JSON.stringify([...reasons])}`);
  if (final.examples.length) console.log(`#   ${final.examples.join('\n#   ')}`);
  assert.equal(ex.code, 0, `SIGTERM must end watch with exit 0: ${JSON.stringify(ex)} stderr=${w.stderr()}`);
  assert.ok(w.events.some((e) => e.kind === 'stopped'), 'a stopped event was printed');
  assert.ok(stats.kills >= KILLS);
  assert.equal(final.lost, 0, final.examples.join('\n'));
  assert.equal(final.extra, 0, final.examples.join('\n'));
  assert.equal(await slotActive(), false, 'the slot is not left active after SIGTERM');
  assert.ok(state, 'the position is recorded on the target');
  // A kill costs at most the transactions in hand, not a new snapshot: only a start before the
  // first snapshot completed (no position on the target yet) may snapshot again.
  const unexpected = [...reasons.keys()].filter((r) => !FIRST_SNAPSHOT.test(r));
  assert.deepEqual(unexpected, [], 'a restart after a kill resumes from the recorded position');
});

const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
const FIRST_SNAPSHOT = /^the target has no stream position (yet|for this slot)$/;

test('a restart after SIGTERM resumes from the recorded position: no second snapshot, the change made while stopped arrives', async () => {
  const t0 = Date.now();
  const src = await server.createDatabase('watchresume_src');
  const dst = await server.createDatabase('watchresume_dst');
  const schema = `CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE "User" (id int PRIMARY KEY, email text NOT NULL UNIQUE, "organizationId" int NOT NULL REFERENCES "Organization"(id));`;
  await server.sql(src, schema);
  await server.sql(dst, schema);
  await server.sql(src, `INSERT INTO "Organization" VALUES (1, 'one')`);
  // Slot names are per server: the kill test's slot (another database) would make this start
  // refuse, rightly, to take it over.
  await server.sql('postgres', `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, [SLOT]);
  const env = { DATABASE_URL: server.url(src), STAGING_DATABASE_URL: server.url(dst) };
  const first = spawnWatch(env);
  await until('streaming', () => first.isExited() || first.events.some((e) => e.kind === 'streaming'), 30_000, first);
  await server.sql(src, `INSERT INTO "Organization" VALUES (2, 'two')`);
  await until('an applied event', () => first.isExited() || first.events.some((e) => e.kind === 'applied'), 30_000, first);
  process.kill(first.pid, 'SIGTERM');
  assert.equal((await first.exited).code, 0, first.stderr());
  const positions = async () => ({
    slot: (await server.sql(src, `SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1`, [SLOT])).rows[0]?.l,
    target: (await server.sql(dst, `SELECT lsn::text AS l FROM elara_sync.stream_state WHERE slot_name = $1`, [SLOT])).rows[0]?.l,
  });
  const stopped = await positions();
  await server.sql(src, `INSERT INTO "Organization" VALUES (3, 'three'); UPDATE "Organization" SET name = 'uno' WHERE id = 1`);
  const second = spawnWatch(env);
  try {
    await until('the change made while stopped', async () => second.isExited()
      || (await server.sql(dst, `SELECT string_agg(id || name, ',' ORDER BY id) AS s FROM "Organization"`)).rows[0].s === '1uno,2two,3three', 30_000, second);
  } finally {
    if (!second.isExited()) process.kill(second.pid, 'SIGTERM');
  }
  assert.equal((await second.exited).code, 0, second.stderr());
  const snapshots = second.events.filter((e) => e.kind === 'snapshot-start').map((e) => e.reason);
  console.log(`# resume: after the first stop slot confirmed_flush ${stopped.slot}, target position ${stopped.target}; second start snapshots ${JSON.stringify(snapshots)} (${Date.now() - t0} ms)`);
  assert.equal(stopped.slot, stopped.target, 'the slot confirms exactly the position the target recorded');
  assert.deepEqual(snapshots, [], 'the second start streams from the recorded position');
  assert.ok(second.events.some((e) => e.kind === 'streaming' && e.from === stopped.target), JSON.stringify(second.events));
});
