// T17 of notes/reliability-security.md: a random interleaving of production writes, QA writes in
// staging, library runs and SIGKILLed CLI runs. After every run: no error, no FK orphan, and every
// held row is explained by QA data. After one clean run: every QA row is untouched and staging
// equals production on every row that is not held; once QA deletes its rows, one more run makes
// staging exactly production and verifySync agrees. The hazards generated include QA rows with
// settings-dependent keys inserted from non-UTC sessions, QA key updates, QA rows referencing
// production rows through ON DELETE CASCADE / SET NULL, trigger-bypassing staging edits, values
// that `=` calls equal but that differ, unique values reused (a lower(email) index) and swapped,
// and a trigger on both sides that would rewrite updatedAt. A second test pins down, one by one,
// production reusing a unique value.
//
// Knobs: PROP_RUNS (default 35), PROP_SEED (printed; fast-check prints seed and path on failure), PROP_PATH (replays that path),
// KEEP_TEST_DB=1.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import pg from 'pg';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { runSync } from '@elara/sync';
import { verifySync } from '../src/verify/verify.ts';
import { SEED_LIKE_SCHEMA } from './helpers.ts';

// The seed-like schema plus what the new hazards need: an expression unique index, a table with a
// settings-dependent composite key and ON DELETE CASCADE to User, and a trigger on both sides (the
// same migrations) that would rewrite updatedAt if it fired on the engine's writes.
const SCHEMA = `${SEED_LIKE_SCHEMA};
  CREATE UNIQUE INDEX user_email_lower ON "User" (lower(email));
  CREATE TABLE "Event" (at timestamptz(3), seq int, "userId" uuid NOT NULL REFERENCES "User"(id) ON DELETE CASCADE, amount numeric, note text, PRIMARY KEY (at, seq));
  CREATE INDEX ON "Event" ("userId");
  CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW."updatedAt" := clock_timestamp(); RETURN NEW; END $$;
  CREATE TRIGGER bump BEFORE UPDATE ON "User" FOR EACH ROW EXECUTE FUNCTION bump();`;
const KEY: Record<string, string> = { Organization: 'id::text', User: 'id::text', Event: 'ROW(at, seq)::text' };
const ZONES = ['Asia/Tokyo', 'America/Los_Angeles', 'Pacific/Chatham'];

const CLI = fileURLToPath(new URL('../bin/elara-sync.js', import.meta.url));
const RUNS = Number(process.env.PROP_RUNS ?? 35);
const SEED = Number(process.env.PROP_SEED ?? Math.floor(Math.random() * 2 ** 31));
const TABLES = [{ name: 'Organization' }, { name: 'User' }, { name: 'Event' }];



let source: TestDatabase;
let target: TestDatabase;
let src: pg.Client;
let dst: pg.Client;
let failed = false;

before(async () => {
  console.log(`# property test seed: PROP_SEED=${SEED}`);
  source = await createTestDatabase('sync_prop_src');
  target = await createTestDatabase('sync_prop_dst');
  await sql(source.url, SCHEMA);
  await sql(target.url, SCHEMA);
  src = new pg.Client({ connectionString: source.url });
  dst = new pg.Client({ connectionString: target.url, application_name: 'qa-session' });
  await src.connect();
  await dst.connect();
  // The test reads keys as text in UTC; QA commands that need other settings set them locally.
  await src.query(`SET TimeZone = 'UTC'`);
  await dst.query(`SET TimeZone = 'UTC'`);
});

after(async () => {
  await src?.end();
  await dst?.end();
  if (failed) console.error(`# kept for diagnosis: source ${source?.name}, target ${target?.name}`);
  else await Promise.all([source?.drop(), target?.drop()]);
});

// ---------- commands ----------

/** Free text with the characters that break naive COPY/CSV pipelines. */
const text = fc.string({ unit: fc.constantFrom('a', 'Z', ' ', '\t', '\n', '\r', '\\', '"', "'", ',', '|', '(', ')', 'é', '😀', 'N'), maxLength: 12 });
const maybeText = fc.option(text, { nil: null });
const json = fc.option(fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)), { nil: null });
const pick = fc.nat({ max: 1_000 });

type Cmd =
  | { k: 'InsertOrg'; name: string; settings: string | null; users: number }
  | { k: 'InsertUser'; org: number; manager: number | null; lastName: string | null; bio: string | null; profile: string | null }
  | { k: 'UpdateUser'; user: number; field: 'lastName' | 'bio' | 'profile' | 'organizationId' | 'managerId' | 'noop'; value: string | null; other: number }
  | { k: 'UpdateOrg'; org: number; name: string; settings: string | null }
  | { k: 'DeleteUser'; user: number }
  | { k: 'DeleteOrg'; org: number }
  | { k: 'InsertLocal'; kind: 'org' | 'user'; name: string; manager: boolean }
  | { k: 'EditTargetRow'; table: 'Organization' | 'User'; row: number; value: string | null }
  | { k: 'DeleteTargetRow'; user: number }
  | { k: 'InsertEvent'; user: number; amount: string }
  | { k: 'SameButDifferent'; row: number }
  | { k: 'ReRegister'; user: number }
  | { k: 'SwapEmails'; a: number; b: number }
  | { k: 'QaEvent'; user: number; zone: number; qaUser: boolean }
  | { k: 'QaKeyUpdate'; row: number }
  | { k: 'BypassEdit'; table: 'Organization' | 'User' | 'Event'; row: number; del: boolean }
  | { k: 'Sync' }
  | { k: 'SyncKilled'; delayMs: number };

const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('InsertOrg' as const), name: text, settings: json, users: fc.nat({ max: 4 }) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('InsertUser' as const), org: pick, manager: fc.option(pick, { nil: null }), lastName: maybeText, bio: maybeText, profile: json }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('UpdateUser' as const), user: pick, field: fc.constantFrom('lastName', 'bio', 'profile', 'organizationId', 'managerId', 'noop' as const), value: maybeText, other: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('UpdateOrg' as const), org: pick, name: text, settings: json }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('DeleteUser' as const), user: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('DeleteOrg' as const), org: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('InsertLocal' as const), kind: fc.constantFrom('org', 'user' as const), name: text, manager: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('EditTargetRow' as const), table: fc.constantFrom('Organization', 'User' as const), row: pick, value: maybeText }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('DeleteTargetRow' as const), user: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('InsertEvent' as const), user: pick, amount: fc.constantFrom('1.5', '2', '-0.25', '10.10') }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('SameButDifferent' as const), row: pick }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('ReRegister' as const), user: pick }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('SwapEmails' as const), a: pick, b: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('QaEvent' as const), user: pick, zone: fc.nat({ max: ZONES.length - 1 }), qaUser: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('QaKeyUpdate' as const), row: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('BypassEdit' as const), table: fc.constantFrom('Organization', 'User', 'Event' as const), row: pick, del: fc.boolean() }) },
  { weight: 3, arbitrary: fc.constant({ k: 'Sync' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('SyncKilled' as const), delayMs: fc.nat({ max: 200 }) }) },
);

/** Per-case state the runner needs: id counter and the QA rows created in staging. */
interface World {
  n: number;
  prefix: string;
  qaOrgs: string[];
  qaUsers: string[];
  /** QA events by key text (ROW(at, seq)::text in UTC). */
  qaEvents: string[];
  /** Every QA row as QA last wrote it ("Table key" → row text): runs must leave them so. */
  qa: Map<string, string>;
  log: string[];
}

const uuid = (w: World) => `${w.prefix}-0000-4000-8000-${(++w.n).toString(16).padStart(12, '0')}`;

async function ids(c: pg.Client, table: string, exclude: string[] = []): Promise<string[]> {
  const r = await c.query(`SELECT id::text AS id FROM "${table}" WHERE NOT (id::text = ANY($1)) ORDER BY id`, [exclude]);
  return r.rows.map((x) => x.id);
}
const at = <T>(xs: T[], i: number): T | undefined => (xs.length ? xs[i % xs.length] : undefined);

async function insertUser(w: World, org: string, manager: string | null, c: Pick<Extract<Cmd, { k: 'InsertUser' }>, 'lastName' | 'bio' | 'profile'>) {
  const id = uuid(w);
  await src.query(
    `INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", bio, profile, "organizationId", "managerId", "lastLoginAt")
     VALUES ($1::uuid, $2, md5($1::text), $3, $4, $5, $6::jsonb, $7, $8, CASE WHEN $9 THEN now() END)`,
    [id, `u${w.n}-${w.prefix}@prod.test`, w.n % 3 ? `First ${w.n}` : null, c.lastName, c.bio, c.profile, org, manager, w.n % 2 === 0],
  );
  return id;
}

async function sleep(ms: number) {
  await new Promise((r) => setTimeout(r, ms));
}

/** Waits (bounded) until no elara-sync session is left on staging: a killed run's backend may still be rolling back. */
async function waitForSyncBackendsGone(): Promise<void> {
  const started = Date.now();
  for (;;) {
    const r = await dst.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'elara-sync%'`);
    if (r.rows[0].n === 0) return;
    if (Date.now() - started > 20_000) throw new Error('an elara-sync backend was still on staging 20 s after its process died');
    await sleep(25);
  }
}

async function syncOnce(label: string) {
  const r = await runSync({ sourceUrl: source.url, targetUrl: target.url, tables: TABLES });
  assert.equal(r.skipped, false, `${label}: skipped although no other run exists`);
  assert.equal(r.error, undefined, `${label}: run failed: ${r.error?.code} ${r.error?.message}`);
  // Only QA data can hold a production change back here: QA events reference production users
  // (ON DELETE CASCADE), and QA rows use unique values production never uses. A production user
  // whose delete such a reference holds keeps its (older) email in staging, so a production user
  // that took that email since (SwapEmails) collides with it: held too, on either email index.
  const held = r.tables.flatMap((t) => (t.held ?? []).map((h) => `${t.table} ${h.key}: ${h.reason}`));
  for (const h of held) assert.match(h, /still referenced by rows of (User|Event)|needs a parent row|collides on unique index (user_email_lower|User_email_key) with a row that stays/, `${label}: unexpected hold: ${h}`);
  return r;
}

/** The CLI as a process, SIGKILLed `delayMs` after its writer connected to staging (or left to finish). */
async function syncKilled(delayMs: number): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'run', '--json', '--from', source.url, '--to', target.url, '--tables', TABLES.map((t) => t.name).join(',')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  const t0 = Date.now();
  while (!done && Date.now() - t0 < 15_000) {
    const r = await dst.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'elara-sync-writer'`);
    if (r.rowCount) break;
    await sleep(5);
  }
  await sleep(delayMs);
  if (!done) process.kill(child.pid!, 'SIGKILL');
  const res = await exited;
  await waitForSyncBackendsGone();
  if (res.signal === 'SIGKILL') return 'killed';
  // Not killed: exit 0, or 1 when it held rows back (QA data blocks them), never an error.
  assert.ok(res.code === 0 || (res.code === 1 && !/"error":/.test(out)), `a run that was not killed must exit 0, or 1 for held rows: ${out}`);
  return 'finished';
}

async function orphanCount(): Promise<number> {
  const r = await dst.query(`SELECT
      (SELECT count(*) FROM "User" u WHERE NOT EXISTS (SELECT 1 FROM "Organization" o WHERE o.id = u."organizationId"))
    + (SELECT count(*) FROM "User" u WHERE u."managerId" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "User" m WHERE m.id = u."managerId"))
    + (SELECT count(*) FROM "Event" e WHERE NOT EXISTS (SELECT 1 FROM "User" u WHERE u.id = e."userId")) AS n`);
  return Number(r.rows[0].n);
}

async function apply(w: World, c: Cmd): Promise<void> {
  switch (c.k) {
    case 'InsertOrg': {
      const id = uuid(w);
      await src.query(`INSERT INTO "Organization" (id, name, "apiKey", "apiSecret", settings) VALUES ($1::uuid, $2, $3, md5($1::text), $4::jsonb)`,
        [id, c.name, `key-${w.prefix}-${w.n}`, c.settings]);
      for (let i = 0; i < c.users; i++) await insertUser(w, id, null, { lastName: c.name, bio: null, profile: c.settings });
      return;
    }
    case 'InsertUser': {
      const org = at(await ids(src, 'Organization'), c.org);
      if (!org) return;
      const manager = c.manager === null ? null : at(await ids(src, 'User'), c.manager) ?? null;
      await insertUser(w, org, manager, c);
      return;
    }
    case 'UpdateUser': {
      const user = at(await ids(src, 'User'), c.user);
      if (!user) return;
      if (c.field === 'organizationId') {
        const org = at(await ids(src, 'Organization'), c.other);
        await src.query(`UPDATE "User" SET "organizationId" = $2, "updatedAt" = now() WHERE id = $1`, [user, org]);
      } else if (c.field === 'managerId') {
        const m = at(await ids(src, 'User'), c.other);
        await src.query(`UPDATE "User" SET "managerId" = $2 WHERE id = $1`, [user, m === user ? null : m]);
      } else if (c.field === 'noop') {
        // Same values, new row version: the engine sees a changed bucket but must write nothing wrong.
        await src.query(`UPDATE "User" SET email = email WHERE id = $1`, [user]);
      } else if (c.field === 'profile') {
        await src.query(`UPDATE "User" SET profile = $2::jsonb WHERE id = $1`, [user, c.value === null ? null : JSON.stringify({ v: c.value })]);
      } else {
        await src.query(`UPDATE "User" SET "${c.field}" = $2 WHERE id = $1`, [user, c.value]);
      }
      return;
    }
    case 'UpdateOrg': {
      const org = at(await ids(src, 'Organization'), c.org);
      if (org) await src.query(`UPDATE "Organization" SET name = $2, settings = $3::jsonb, "updatedAt" = now() WHERE id = $1`, [org, c.name, c.settings]);
      return;
    }
    case 'DeleteUser': {
      const user = at(await ids(src, 'User'), c.user);
      if (user) await src.query(`DELETE FROM "User" WHERE id = $1`, [user]);
      return;
    }
    case 'DeleteOrg': {
      const org = at(await ids(src, 'Organization'), c.org);
      if (!org) return;
      await src.query('BEGIN');
      await src.query(`DELETE FROM "User" WHERE "organizationId" = $1`, [org]);
      await src.query(`DELETE FROM "Organization" WHERE id = $1`, [org]);
      await src.query('COMMIT');
      return;
    }
    case 'InsertLocal': {
      // QA data created directly in staging: its own organization (never a production one, which
      // production could delete), unique values no production row uses.
      if (c.kind === 'org' || w.qaOrgs.length === 0) {
        const id = uuid(w);
        await dst.query(`INSERT INTO "Organization" (id, name, "apiKey", "apiSecret", settings) VALUES ($1, $2, $3, 'qa', '{"qa":true}')`,
          [id, `QA ${c.name}`, `qa-key-${w.prefix}-${w.n}`]);
        w.qaOrgs.push(id);
        w.qa.set(`Organization ${id}`, (await dst.query(`SELECT o::text AS row FROM "Organization" o WHERE id = $1`, [id])).rows[0].row);
        if (c.kind === 'org') return;
      }
      const id = uuid(w);
      const manager = c.manager && w.qaUsers.length ? w.qaUsers[w.qaUsers.length - 1] : null;
      await dst.query(`INSERT INTO "User" (id, email, "passwordHash", "lastName", bio, "organizationId", "managerId") VALUES ($1, $2, 'qa', $3, $3, $4, $5)`,
        [id, `qa${w.n}-${w.prefix}@qa.test`, c.name, w.qaOrgs[w.qaOrgs.length - 1], manager]);
      w.qaUsers.push(id);
      w.qa.set(`User ${id}`, (await dst.query(`SELECT u::text AS row FROM "User" u WHERE id = $1`, [id])).rows[0].row);
      return;
    }
    case 'EditTargetRow': {
      // A direct staging edit of a row that came from production: the next run must overwrite it.
      const row = at(await ids(dst, c.table, c.table === 'User' ? w.qaUsers : w.qaOrgs), c.row);
      if (!row) return;
      if (c.table === 'User') {
        await dst.query(`UPDATE "User" SET email = $2, "lastName" = $3, profile = '{"edited":true}' WHERE id = $1`, [row, `edited${++w.n}-${w.prefix}@qa.test`, c.value]);
      } else {
        await dst.query(`UPDATE "Organization" SET "apiKey" = $2, name = coalesce($3, 'edited'), settings = NULL WHERE id = $1`, [row, `edited-key-${w.prefix}-${++w.n}`, c.value]);
      }
      return;
    }
    case 'DeleteTargetRow': {
      // QA deletes a production user in staging (its reports get managerId NULL there): the next run restores it.
      const row = at(await ids(dst, 'User', w.qaUsers), c.user);
      if (!row) return;
      // Not one QA's events point at: the cascade would delete QA's own rows (QA's doing, not the engine's).
      const qaRefs = (await dst.query(`SELECT count(*)::int AS n FROM "Event" WHERE "userId" = $1 AND ROW(at, seq)::text = ANY($2)`, [row, w.qaEvents])).rows[0].n;
      if (qaRefs === 0) await dst.query(`DELETE FROM "User" WHERE id = $1`, [row]);
      return;
    }
    case 'InsertEvent': {
      const user = at(await ids(src, 'User'), c.user);
      if (user) await src.query(`INSERT INTO "Event" VALUES ('2026-01-01 00:00:00+00'::timestamptz + $1 * interval '1.001 second', $1, $2, $3::numeric, 'prod')`, [++w.n, user, c.amount]);
      return;
    }
    case 'SameButDifferent': {
      // Equal by `=`, different stored values: numeric scale, jsonb numerics.
      const ev = at((await src.query(`SELECT seq FROM "Event" ORDER BY seq`)).rows.map((x) => x.seq as number), c.row);
      if (ev !== undefined) await src.query(`UPDATE "Event" SET amount = round(amount, 3 + seq % 3) WHERE seq = $1`, [ev]);
      const org = at(await ids(src, 'Organization'), c.row);
      if (org) await src.query(`UPDATE "Organization" SET settings = ('{"n": 1.0' || repeat('0', ($2::int % 3)) || '}')::jsonb WHERE id = $1`, [org, c.row]);
      return;
    }
    case 'ReRegister': {
      // GDPR erasure, then the same person registers again with their email in other letter case
      // (the lower(email) index sees the same value) before the next run.
      const u = (await src.query(`SELECT id::text, email, "organizationId"::text AS org FROM "User" ORDER BY id`)).rows;
      const victim = at(u, c.user);
      if (!victim) return;
      await src.query('BEGIN');
      await src.query(`UPDATE "User" SET "managerId" = NULL WHERE "managerId" = $1`, [victim.id]);
      await src.query(`DELETE FROM "User" WHERE id = $1`, [victim.id]);
      await src.query(`INSERT INTO "User" (id, email, "passwordHash", "organizationId") VALUES ($1, $2, 'p', $3)`, [uuid(w), victim.email.toUpperCase(), victim.org]);
      await src.query('COMMIT');
      return;
    }
    case 'SwapEmails': {
      const u = (await src.query(`SELECT id::text, email FROM "User" ORDER BY id`)).rows;
      const a = at(u, c.a);
      const b = at(u, c.b);
      if (!a || !b || a.id === b.id) return;
      await src.query('BEGIN');
      await src.query(`UPDATE "User" SET email = 'swap-' || id WHERE id = $1`, [a.id]);
      await src.query(`UPDATE "User" SET email = $2 WHERE id = $1`, [b.id, a.email]);
      await src.query(`UPDATE "User" SET email = $2 WHERE id = $1`, [a.id, b.email]);
      await src.query('COMMIT');
      return;
    }
    case 'QaEvent': {
      // QA inserts an event in staging from a session in another time zone and date style,
      // pointing at a production user (which production may erase later) or a QA user.
      const users = c.qaUser ? w.qaUsers : await ids(dst, 'User', w.qaUsers);
      const user = at(users, c.user);
      if (!user) return;
      const seq = 1_000_000 + ++w.n;
      await dst.query('BEGIN');
      await dst.query(`SET LOCAL TimeZone = '${ZONES[c.zone]}'; SET LOCAL DateStyle = 'German, DMY'; SET LOCAL IntervalStyle = 'sql_standard'`);
      await dst.query(`INSERT INTO "Event" VALUES (now() - $1 * interval '1 minute', $1, $2, 1.10, 'qa')`, [seq, user]);
      await dst.query('COMMIT');
      const r = (await dst.query(`SELECT ROW(at, seq)::text AS k, e::text AS row FROM "Event" e WHERE seq = $1`, [seq])).rows[0];
      w.qaEvents.push(r.k);
      w.qa.set(`Event ${r.k}`, r.row);
      return;
    }
    case 'QaKeyUpdate': {
      // QA re-keys one of its own users; it must stay a QA row.
      const old = at(w.qaUsers, c.row);
      if (!old) return;
      const id = uuid(w);
      try {
        await dst.query(`UPDATE "User" SET id = $2 WHERE id = $1`, [old, id]);
      } catch {
        return; // still referenced by a QA event or a managed QA user (NO ACTION): QA cannot re-key it
      }
      w.qaUsers[w.qaUsers.indexOf(old)] = id;
      w.qa.delete(`User ${old}`);
      w.qa.set(`User ${id}`, (await dst.query(`SELECT u::text AS row FROM "User" u WHERE id = $1`, [id])).rows[0].row);
      return;
    }
    case 'BypassEdit': {
      // A write that bypasses the tracking trigger (session_replication_role = replica) on a
      // production row in staging: never recorded, so only staging's own row versions reveal it.
      const exclude = c.table === 'User' ? w.qaUsers : c.table === 'Organization' ? w.qaOrgs : [];
      const rows = c.table === 'Event'
        ? (await dst.query(`SELECT ROW(at, seq)::text AS k FROM "Event" WHERE NOT (ROW(at, seq)::text = ANY($1)) ORDER BY 1`, [w.qaEvents])).rows.map((x) => x.k as string)
        : await ids(dst, c.table, exclude);
      const row = at(rows, c.row);
      if (!row) return;
      const where = c.table === 'Event' ? `ROW(at, seq)::text = $1` : `id::text = $1`;
      const qaRefs = c.table === 'User'
        ? (await dst.query(`SELECT count(*)::int AS n FROM "Event" WHERE "userId" = $1 AND ROW(at, seq)::text = ANY($2)`, [row, w.qaEvents])).rows[0].n : 0;
      if (c.del && qaRefs > 0) return; // QA's own events would be orphaned by QA's bypass, not by the engine
      await dst.query('BEGIN');
      await dst.query(`SET LOCAL session_replication_role = replica`);
      // A deleted user takes its events along (replica mode runs no FK action); QA's events on it stay.
      if (c.del && c.table === 'User') await dst.query(`DELETE FROM "Event" WHERE "userId" = $1 AND NOT (ROW(at, seq)::text = ANY($2))`, [row, w.qaEvents]);
      if (c.del && c.table !== 'Organization') await dst.query(`DELETE FROM "${c.table}" WHERE ${where}`, [row]);
      else if (c.table === 'Event') await dst.query(`UPDATE "Event" SET note = 'bypassed' WHERE ${where}`, [row]);
      else await dst.query(`UPDATE "${c.table}" SET name = 'bypassed' WHERE ${where}`.replace('name', c.table === 'User' ? '"lastName"' : 'name'), [row]);
      await dst.query('COMMIT');
      return;
    }
    case 'Sync': {
      await syncOnce('Sync');
      return;
    }
    case 'SyncKilled': {
      w.log.push(await syncKilled(c.delayMs));
      return;
    }
  }
}

async function reset(): Promise<void> {
  await src.query(`TRUNCATE "Event", "User", "Organization" CASCADE`);
  await dst.query(`TRUNCATE "Event", "User", "Organization" CASCADE`);
  const hasState = (await dst.query(`SELECT to_regclass('elara_sync.table_state') IS NOT NULL AS e`)).rows[0].e;
  if (hasState) {
    await dst.query(`TRUNCATE elara_sync.table_state, elara_sync.local_keys, elara_sync.tombstones, elara_sync.vacated, elara_sync.target_log,
      elara_sync.local_rows, elara_sync.edits`);
  }
}

async function rowsById(c: pg.Client, table: string): Promise<Map<string, string>> {
  const r = await c.query(`SELECT ${KEY[table]} AS id, t::text AS row FROM "${table}" t ORDER BY 1`);
  return new Map(r.rows.map((x) => [x.id, x.row]));
}

let caseNo = 0;
const stats = { cases: 0, commands: 0, syncs: 0, kills: 0, killedRunsFinished: 0, qaRows: 0, targetEdits: 0, held: 0, hazards: 0 };

test('convergence property: random production writes, QA writes, runs and killed runs, then one clean run', async () => {
  const t0 = Date.now();
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ orgs: fc.integer({ min: 1, max: 6 }), users: fc.nat({ max: 20 }) }),
        fc.array(cmd, { minLength: 10, maxLength: 25 }),
        async (initial, cmds) => {
          await waitForSyncBackendsGone();
          await reset();
          const w: World = { n: 0, prefix: (++caseNo).toString(16).padStart(8, '0'), qaOrgs: [], qaUsers: [], qaEvents: [], qa: new Map(), log: [] };
          for (let i = 0; i < initial.orgs; i++) await apply(w, { k: 'InsertOrg', name: `Org\t${i}\n`, settings: i % 2 ? null : '{"a":[1,"x\\ty"]}', users: 0 });
          for (let i = 0; i < initial.users; i++) await apply(w, { k: 'InsertUser', org: i, manager: i % 3 ? i - 1 : null, lastName: i % 4 ? `L\\${i}` : null, bio: 'b\nb', profile: null });
          for (let i = 0; i < initial.users; i += 2) await apply(w, { k: 'InsertEvent', user: i, amount: '1.0' });

          for (const [i, c] of cmds.entries()) {
            // A trigger-bypassing delete can leave an orphan in staging (no FK action runs for a
            // replica session); the next run that finishes repairs it, a killed one changes nothing.
            const orphansBefore = c.k === 'SyncKilled' ? await orphanCount() : 0;
            try {
              await apply(w, c);
            } catch (e) {
              throw new Error(`command ${i} ${JSON.stringify(c)} failed: ${(e as Error).message}`, { cause: e });
            }
            if (c.k === 'Sync' || (c.k === 'SyncKilled' && w.log.at(-1) === 'finished')) assert.equal(await orphanCount(), 0, `FK orphans in staging after command ${i} ${c.k}`);
            if (c.k === 'SyncKilled' && w.log.at(-1) === 'killed') assert.equal(await orphanCount(), orphansBefore, `a killed run changed staging's orphans (command ${i})`);
          }

          // Phase 1: one clean run. QA rows are exactly as QA left them; every production row that
          // is not held back equals production.
          const last = await syncOnce('final clean Sync');
          const heldKeys = new Map(last.tables.map((t) => [t.table, new Set(t.conflictKeys ?? [])]));
          const qaIds: Record<string, Set<string>> = { Organization: new Set(w.qaOrgs), User: new Set(w.qaUsers), Event: new Set(w.qaEvents) };
          for (const table of ['Organization', 'User', 'Event']) {
            const [s, d] = await Promise.all([rowsById(src, table), rowsById(dst, table)]);
            const held = heldKeys.get(table) ?? new Set();
            const prodInTarget = [...d].filter(([id]) => !qaIds[table]!.has(id) && !held.has(id));
            assert.deepEqual(prodInTarget, [...s].filter(([id]) => !held.has(id)), `${table}: staging's production rows differ from production after a clean run`);
            for (const id of qaIds[table]!) assert.equal(d.get(id), w.qa.get(`${table} ${id}`), `${table}: QA row ${id} was deleted or overwritten`);
          }
          assert.equal(await orphanCount(), 0, 'FK orphans in staging after the final run');
          if (last.ok) {
            const v = await verifySync({ sourceUrl: source.url, targetUrl: target.url, tables: TABLES });
            assert.equal(v.equal, true, `verifySync: ${JSON.stringify(v.tables)}`);
            assert.equal(v.tables.find((t) => t.table === 'User')!.local, w.qaUsers.length, 'verify counts every QA user as staging-only');
            assert.equal(v.tables.find((t) => t.table === 'Organization')!.local, w.qaOrgs.length, 'verify counts every QA organization as staging-only');
          }

          // Phase 2: QA deletes its rows (triggers on, as QA would); one run makes staging exactly production.
          await dst.query(`DELETE FROM "Event" WHERE ROW(at, seq)::text = ANY($1)`, [w.qaEvents]);
          await dst.query(`DELETE FROM "User" WHERE id::text = ANY($1)`, [w.qaUsers]);
          await dst.query(`DELETE FROM "Organization" WHERE id::text = ANY($1)`, [w.qaOrgs]);
          const clean = await syncOnce('run after QA cleaned up');
          assert.equal(clean.ok, true, `nothing may stay held once QA's rows are gone: ${JSON.stringify(clean.tables.map((t) => t.held))}`);
          for (const table of ['Organization', 'User', 'Event']) {
            const [s, d] = await Promise.all([rowsById(src, table), rowsById(dst, table)]);
            assert.deepEqual([...d], [...s], `${table}: staging equals production once QA's rows are gone`);
          }
          assert.equal((await verifySync({ sourceUrl: source.url, targetUrl: target.url, tables: TABLES })).equal, true);

          stats.held += last.tables.reduce((n, t) => n + t.conflicts, 0);
          stats.cases++;
          stats.commands += cmds.length;
          stats.syncs += cmds.filter((c) => c.k === 'Sync').length + 1;
          stats.kills += w.log.filter((x) => x === 'killed').length;
          stats.killedRunsFinished += w.log.filter((x) => x === 'finished').length;
          stats.qaRows += w.qaOrgs.length + w.qaUsers.length + w.qaEvents.length;
          stats.targetEdits += cmds.filter((c) => c.k === 'EditTargetRow' || c.k === 'DeleteTargetRow' || c.k === 'BypassEdit').length;
          stats.hazards += cmds.filter((c) => ['QaEvent', 'QaKeyUpdate', 'BypassEdit', 'SameButDifferent', 'ReRegister', 'SwapEmails'].includes(c.k)).length;
        },
      ),
      { numRuns: RUNS, seed: SEED, ...(process.env.PROP_PATH ? { path: process.env.PROP_PATH } : {}), interruptAfterTimeLimit: 200_000, markInterruptAsFailure: false, includeErrorInReport: true },
    );
  } catch (e) {
    failed = true;
    throw e;
  }
  console.log(`# runs=${stats.cases} commands=${stats.commands} syncs=${stats.syncs} kills=${stats.kills} (+${stats.killedRunsFinished} finished before the kill) `
    + `qa_rows=${stats.qaRows} staging_edits=${stats.targetEdits} new_hazards=${stats.hazards} held_in_final_runs=${stats.held} counterexamples=0 seed=${SEED} (${Math.round((Date.now() - t0) / 1000)} s)`);
});

// Production legitimately frees a unique value and reuses it before the next run: a GDPR erasure
// followed by a re-registration with the same email, or two users swapping emails. The engine
// upserts (parents first) before it deletes (children first), and the unique index is checked per
// row, so staging's old row still holds the value when the new one arrives.
test('unique values reused in production (erase + re-register, swap) converge', async () => {
  const cases: Array<{ name: string; change: string }> = [
    { name: 're-registration with the email of an erased user', change: `DELETE FROM "User" WHERE id = '00000000-0000-4000-8000-0000000000a1';
      INSERT INTO "User" (id, email, "passwordHash", "organizationId") VALUES ('00000000-0000-4000-8000-0000000000a3', 'a@x.test', 'p', '00000000-0000-4000-8000-000000000001')` },
    { name: 'two users swap emails', change: `BEGIN; UPDATE "User" SET email = 'tmp@x.test' WHERE email = 'a@x.test';
      UPDATE "User" SET email = 'a@x.test' WHERE email = 'b@x.test'; UPDATE "User" SET email = 'b@x.test' WHERE email = 'tmp@x.test'; COMMIT` },
    { name: 'an organization re-created with the apiKey of a deleted one', change: `DELETE FROM "User" WHERE "organizationId" = '00000000-0000-4000-8000-000000000002';
      DELETE FROM "Organization" WHERE id = '00000000-0000-4000-8000-000000000002';
      INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES ('00000000-0000-4000-8000-000000000003', 'new', 'k2', 's')` },
  ];
  const failures: string[] = [];
  for (const c of cases) {
    await waitForSyncBackendsGone();
    await reset();
    await src.query(`INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES
        ('00000000-0000-4000-8000-000000000001', 'one', 'k1', 's'), ('00000000-0000-4000-8000-000000000002', 'two', 'k2', 's');
      INSERT INTO "User" (id, email, "passwordHash", "organizationId") VALUES
        ('00000000-0000-4000-8000-0000000000a1', 'a@x.test', 'p', '00000000-0000-4000-8000-000000000001'),
        ('00000000-0000-4000-8000-0000000000a2', 'b@x.test', 'p', '00000000-0000-4000-8000-000000000002')`);
    await syncOnce(`${c.name}: first run`);
    await src.query(c.change);
    const r = await runSync({ sourceUrl: source.url, targetUrl: target.url, tables: TABLES });
    const v = await verifySync({ sourceUrl: source.url, targetUrl: target.url, tables: TABLES });
    if (!r.ok || !v.equal) {
      failures.push(`${c.name}: run ok=${r.ok} (${r.tables.map((t) => t.error).filter(Boolean).join('; ') || r.error?.message || 'no error'}), verify equal=${v.equal}`);
    }
  }
  // The reproduction is in the message; the databases are dropped either way.
  assert.deepEqual(failures, [],
    'ENGINE BUG: production freed a unique value and reused it; the run upserts before it deletes and fails on the unique index, '
    + 'rolls the table back, and every later run fails the same way, so staging never converges:\n' + failures.join('\n'));
});
