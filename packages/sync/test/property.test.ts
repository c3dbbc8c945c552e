// T17 of notes/reliability-security.md: a random interleaving of production writes, QA writes in
// staging, library runs and SIGKILLed CLI runs always converges after one clean run: staging
// equals production on every production row, every QA row survives untouched, and verifySync
// reports equal. A second test pins down, deterministically, a case the property leaves out
// (production reusing a unique value): see the ENGINE BUG message there.
//
// Knobs: PROP_RUNS (default 35), PROP_SEED (printed; fast-check prints seed and path on failure),
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

const CLI = fileURLToPath(new URL('../bin/elara-sync.js', import.meta.url));
const RUNS = Number(process.env.PROP_RUNS ?? 35);
const SEED = Number(process.env.PROP_SEED ?? Math.floor(Math.random() * 2 ** 31));
const TABLES = [{ name: 'Organization' }, { name: 'User' }];



let source: TestDatabase;
let target: TestDatabase;
let src: pg.Client;
let dst: pg.Client;
let failed = false;

before(async () => {
  console.log(`# property test seed: PROP_SEED=${SEED}`);
  source = await createTestDatabase('sync_prop_src');
  target = await createTestDatabase('sync_prop_dst');
  await sql(source.url, SEED_LIKE_SCHEMA);
  await sql(target.url, SEED_LIKE_SCHEMA);
  src = new pg.Client({ connectionString: source.url });
  dst = new pg.Client({ connectionString: target.url, application_name: 'qa-session' });
  await src.connect();
  await dst.connect();
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
  { weight: 3, arbitrary: fc.constant({ k: 'Sync' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('SyncKilled' as const), delayMs: fc.nat({ max: 200 }) }) },
);

/** Per-case state the runner needs: id counter and the QA rows created in staging. */
interface World {
  n: number;
  prefix: string;
  qaOrgs: string[];
  qaUsers: string[];
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
  assert.equal(r.ok, true, `${label}: run not ok: ${JSON.stringify(r.tables)}`);
  return r;
}

/** The CLI as a process, SIGKILLed `delayMs` after its writer connected to staging (or left to finish). */
async function syncKilled(delayMs: number): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'run', '--json', '--from', source.url, '--to', target.url], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  assert.equal(res.code, 0, `a run that was not killed must exit 0: ${out}`);
  return 'finished';
}

async function orphanCount(): Promise<number> {
  const r = await dst.query(`SELECT
      (SELECT count(*) FROM "User" u WHERE NOT EXISTS (SELECT 1 FROM "Organization" o WHERE o.id = u."organizationId"))
    + (SELECT count(*) FROM "User" u WHERE u."managerId" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "User" m WHERE m.id = u."managerId")) AS n`);
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
        if (c.kind === 'org') return;
      }
      const id = uuid(w);
      const manager = c.manager && w.qaUsers.length ? w.qaUsers[w.qaUsers.length - 1] : null;
      await dst.query(`INSERT INTO "User" (id, email, "passwordHash", "lastName", bio, "organizationId", "managerId") VALUES ($1, $2, 'qa', $3, $3, $4, $5)`,
        [id, `qa${w.n}-${w.prefix}@qa.test`, c.name, w.qaOrgs[w.qaOrgs.length - 1], manager]);
      w.qaUsers.push(id);
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
      if (row) await dst.query(`DELETE FROM "User" WHERE id = $1`, [row]);
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
  await src.query(`TRUNCATE "User", "Organization" CASCADE`);
  await dst.query(`TRUNCATE "User", "Organization" CASCADE`);
  const hasState = (await dst.query(`SELECT to_regclass('elara_sync.table_state') IS NOT NULL AS e`)).rows[0].e;
  if (hasState) await dst.query(`TRUNCATE elara_sync.table_state, elara_sync.local_rows, elara_sync.edits`);
}

async function rowsById(c: pg.Client, table: string): Promise<Map<string, string>> {
  const r = await c.query(`SELECT id::text AS id, t::text AS row FROM "${table}" t ORDER BY id`);
  return new Map(r.rows.map((x) => [x.id, x.row]));
}

let caseNo = 0;
const stats = { cases: 0, commands: 0, syncs: 0, kills: 0, killedRunsFinished: 0, qaRows: 0, targetEdits: 0 };

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
          const w: World = { n: 0, prefix: (++caseNo).toString(16).padStart(8, '0'), qaOrgs: [], qaUsers: [], log: [] };
          for (let i = 0; i < initial.orgs; i++) await apply(w, { k: 'InsertOrg', name: `Org\t${i}\n`, settings: i % 2 ? null : '{"a":[1,"x\\ty"]}', users: 0 });
          for (let i = 0; i < initial.users; i++) await apply(w, { k: 'InsertUser', org: i, manager: i % 3 ? i - 1 : null, lastName: i % 4 ? `L\\${i}` : null, bio: 'b\nb', profile: null });

          // QA rows as they are right after creation: they must come out of every run untouched.
          const qa = new Map<string, string>();
          for (const [i, c] of cmds.entries()) {
            try {
              await apply(w, c);
            } catch (e) {
              throw new Error(`command ${i} ${JSON.stringify(c)} failed: ${(e as Error).message}`, { cause: e });
            }
            if (c.k === 'InsertLocal') {
              for (const table of ['Organization', 'User']) {
                const r = await rowsById(dst, table);
                for (const id of [...w.qaOrgs, ...w.qaUsers]) if (r.has(id) && !qa.has(id)) qa.set(id, r.get(id)!);
              }
            }
            if (c.k === 'Sync' || c.k === 'SyncKilled') assert.equal(await orphanCount(), 0, `FK orphans in staging after command ${i} ${c.k}`);
          }

          await syncOnce('final clean Sync');
          for (const table of ['Organization', 'User']) {
            const [s, d] = await Promise.all([rowsById(src, table), rowsById(dst, table)]);
            const qaIds = new Set(table === 'User' ? w.qaUsers : w.qaOrgs);
            const prodInTarget = [...d].filter(([id]) => !qaIds.has(id));
            assert.deepEqual(prodInTarget, [...s], `${table}: staging's production rows differ from production after a clean run`);
            for (const id of qaIds) assert.equal(d.get(id), qa.get(id), `${table}: QA row ${id} was deleted or overwritten`);
          }
          assert.equal(await orphanCount(), 0, 'FK orphans in staging after the final run');
          const v = await verifySync({ sourceUrl: source.url, targetUrl: target.url, tables: TABLES });
          assert.equal(v.equal, true, `verifySync: ${JSON.stringify(v.tables)}`);
          assert.equal(v.tables.find((t) => t.table === 'User')!.local, w.qaUsers.length, 'verify counts every QA user as staging-only');
          assert.equal(v.tables.find((t) => t.table === 'Organization')!.local, w.qaOrgs.length, 'verify counts every QA organization as staging-only');

          stats.cases++;
          stats.commands += cmds.length;
          stats.syncs += cmds.filter((c) => c.k === 'Sync').length + 1;
          stats.kills += w.log.filter((x) => x === 'killed').length;
          stats.killedRunsFinished += w.log.filter((x) => x === 'finished').length;
          stats.qaRows += w.qaOrgs.length + w.qaUsers.length;
          stats.targetEdits += cmds.filter((c) => c.k === 'EditTargetRow' || c.k === 'DeleteTargetRow').length;
        },
      ),
      { numRuns: RUNS, seed: SEED, interruptAfterTimeLimit: 200_000, markInterruptAsFailure: false, includeErrorInReport: true },
    );
  } catch (e) {
    failed = true;
    throw e;
  }
  console.log(`# runs=${stats.cases} commands=${stats.commands} syncs=${stats.syncs} kills=${stats.kills} (+${stats.killedRunsFinished} finished before the kill) `
    + `qa_rows=${stats.qaRows} staging_edits=${stats.targetEdits} counterexamples=0 seed=${SEED} (${Math.round((Date.now() - t0) / 1000)} s)`);
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
