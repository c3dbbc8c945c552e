// Per-organization subsets (real PostgreSQL): a target holds the root rows a filter selects,
// every synced row that depends on them through FK chains, and the parents those need; rows
// entering scope arrive and rows leaving it are deleted (QA rows excepted) on the next run; an
// erasure reaches it; FK cycles and self-references work; FK integrity holds. A fast-check
// property checks the target against the subset computed independently, in JavaScript.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { runSync, syncKeys, verifySync, type ResolvedTarget } from '../src/index.ts';
import { fkOrphans } from './cases.ts';
import pg from 'pg';

/** A pool whose idle clients may be ended by a forced DROP DATABASE at teardown (pool.end resolves before their sockets close). */
const quietPool = (config: pg.PoolConfig) => {
  const pool = new pg.Pool(config);
  pool.on('error', () => {});
  return pool;
};

const SCHEMA = `
CREATE TABLE "Organization" (id int PRIMARY KEY, tier text NOT NULL, "parentId" int REFERENCES "Organization"(id));
CREATE TABLE "User" (id int PRIMARY KEY, "organizationId" int NOT NULL REFERENCES "Organization"(id), "managerId" int REFERENCES "User"(id));
CREATE TABLE "AuditLog" (id int PRIMARY KEY, "userId" int REFERENCES "User"(id) ON DELETE SET NULL, "organizationId" int REFERENCES "Organization"(id) ON DELETE SET NULL);
CREATE INDEX ON "User" ("organizationId"); CREATE INDEX ON "User" ("managerId");
CREATE INDEX ON "AuditLog" ("userId"); CREATE INDEX ON "AuditLog" ("organizationId");`;
const TABLES = [{ name: 'Organization' }, { name: 'User' }, { name: 'AuditLog' }];
const subsetTarget = (url: string): ResolvedTarget => ({
  name: 'dev', url, anonymize: false, mask: null, testPassword: null, subset: { root: 'Organization', where: `tier = 'enterprise'` },
});

interface Db { orgs: Array<{ id: number; tier: string; parentId: number | null }>; users: Array<{ id: number; org: number; manager: number | null }>; logs: Array<{ id: number; user: number | null; org: number | null }> }

/** The subset, computed independently from the rows: roots, their dependants (downward, to a fixed point), then the parents those need. */
function expectedSubset(db: Db): { orgs: number[]; users: number[]; logs: number[] } {
  const orgs = new Set(db.orgs.filter((o) => o.tier === 'enterprise').map((o) => o.id));
  const users = new Set<number>();
  const logs = new Set<number>();
  for (let changed = true; changed;) {
    changed = false;
    const add = (s: Set<number>, v: number) => { if (!s.has(v)) { s.add(v); changed = true; } };
    for (const o of db.orgs) if (o.parentId !== null && orgs.has(o.parentId)) add(orgs, o.id);
    for (const u of db.users) if (orgs.has(u.org) || (u.manager !== null && users.has(u.manager))) add(users, u.id);
    for (const l of db.logs) if ((l.user !== null && users.has(l.user)) || (l.org !== null && orgs.has(l.org))) add(logs, l.id);
  }
  for (let changed = true; changed;) {
    changed = false;
    const add = (s: Set<number>, v: number) => { if (!s.has(v)) { s.add(v); changed = true; } };
    for (const l of db.logs) if (logs.has(l.id)) { if (l.user !== null) add(users, l.user); if (l.org !== null) add(orgs, l.org); }
    for (const u of db.users) if (users.has(u.id)) { add(orgs, u.org); if (u.manager !== null) add(users, u.manager); }
    for (const o of db.orgs) if (orgs.has(o.id) && o.parentId !== null) add(orgs, o.parentId);
  }
  const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
  return { orgs: sorted(orgs), users: sorted(users), logs: sorted(logs) };
}

async function read(url: string): Promise<Db> {
  const [o, u, l] = await Promise.all([
    sql(url, `SELECT id, tier, "parentId" FROM "Organization" ORDER BY id`),
    sql(url, `SELECT id, "organizationId" AS org, "managerId" AS manager FROM "User" ORDER BY id`),
    sql(url, `SELECT id, "userId" AS user, "organizationId" AS org FROM "AuditLog" ORDER BY id`),
  ]);
  return { orgs: o.rows, users: u.rows, logs: l.rows };
}
const ids = (db: Db) => ({ orgs: db.orgs.map((x) => x.id), users: db.users.map((x) => x.id), logs: db.logs.map((x) => x.id) });

let prod: TestDatabase;
let dev: TestDatabase;
before(async () => {
  prod = await createTestDatabase('subset_prod');
  dev = await createTestDatabase('subset_dev');
  await sql(prod.url, SCHEMA);
  await sql(dev.url, SCHEMA);
});
after(async () => {
  await prod.drop();
  await dev.drop();
});
const reset = async () => {
  await sql(prod.url, `TRUNCATE "AuditLog", "User", "Organization"`);
  await sql(dev.url, `TRUNCATE "AuditLog", "User", "Organization"; DROP SCHEMA IF EXISTS elara_sync CASCADE`);
};
const sync = async () => {
  const r = await runSync({ sourceUrl: prod.url, targetUrl: dev.url, target: subsetTarget(dev.url), tables: TABLES });
  assert.equal(r.error, undefined, r.error?.message);
  return r;
};

test('a subset holds the roots, their dependants and the parents those need; scope entering and leaving over time; erasure', async () => {
  await reset();
  await sql(prod.url, `INSERT INTO "Organization" VALUES (1, 'enterprise', NULL), (2, 'free', NULL), (3, 'free', NULL), (4, 'free', 1);
    INSERT INTO "User" VALUES (10, 1, NULL), (11, 2, NULL), (12, 2, 10), (13, 3, NULL), (14, 4, NULL);
    INSERT INTO "AuditLog" VALUES (100, 10, 1), (101, 11, 2), (102, 12, NULL), (103, NULL, 3)`);
  await sync();
  // Org 1 (root), org 4 (a child org of 1) and its user 14, user 10, user 12 (managed by 10),
  // org 2 (user 12's organization: a parent it needs), logs 100 and 102.
  assert.deepEqual(ids(await read(dev.url)), { orgs: [1, 2, 4], users: [10, 12, 14], logs: [100, 102] });
  assert.deepEqual(ids(await read(dev.url)), expectedSubset(await read(prod.url)));
  assert.deepEqual(await fkOrphans(dev.url), []);

  // Org 3 upgraded: its user and log arrive. Org 1 downgraded: what only it brought leaves.
  await sql(prod.url, `UPDATE "Organization" SET tier = 'enterprise' WHERE id = 3; UPDATE "Organization" SET tier = 'free' WHERE id = 1`);
  await sync();
  assert.deepEqual(ids(await read(dev.url)), expectedSubset(await read(prod.url)));
  assert.deepEqual(ids(await read(dev.url)), { orgs: [3], users: [13], logs: [103] });

  // A user moved into scope arrives; QA rows in the target stay; an erasure leaves.
  await sql(prod.url, `UPDATE "User" SET "organizationId" = 3 WHERE id = 11`);
  await sql(dev.url, `INSERT INTO "User" VALUES (900, 3, NULL)`);
  await sync();
  assert.deepEqual(ids(await read(dev.url)).users, [11, 13, 900]);
  await sql(prod.url, `DELETE FROM "AuditLog" WHERE "userId" = 11; DELETE FROM "User" WHERE id = 11`);
  await sync();
  assert.deepEqual(ids(await read(dev.url)).users, [13, 900]);
  assert.deepEqual(await fkOrphans(dev.url), []);
  assert.equal((await verifySync({ sourceUrl: prod.url, targetUrl: dev.url, target: subsetTarget(dev.url), tables: TABLES })).equal, true);
});

test('the immediate sync honours the subset: a registration outside the scope never reaches the target', async () => {
  await reset();
  await sql(prod.url, `INSERT INTO "Organization" VALUES (1, 'enterprise', NULL), (2, 'free', NULL); INSERT INTO "User" VALUES (10, 1, NULL)`);
  await sync();
  await sql(prod.url, `INSERT INTO "User" VALUES (20, 2, NULL), (21, 1, NULL)`);
  const source = quietPool({ connectionString: prod.url });
  const target = quietPool({ connectionString: dev.url });
  try {
    await syncKeys(source, target, [{ table: 'Organization', keys: [{ id: 2 }] }, { table: 'User', keys: [{ id: 20 }, { id: 21 }] }], { tables: TABLES, target: subsetTarget(dev.url) });
  } finally {
    await source.end();
    await target.end();
  }
  assert.deepEqual(ids(await read(dev.url)), { orgs: [1], users: [10, 21], logs: [] });
});

test('subset property: after random changes and runs, the target is exactly the subset computed independently', async () => {
  const op = fc.oneof(
    fc.record({ k: fc.constant('org' as const), tier: fc.boolean(), parent: fc.option(fc.nat(20), { nil: null }) }),
    fc.record({ k: fc.constant('user' as const), org: fc.nat(20), manager: fc.option(fc.nat(40), { nil: null }) }),
    fc.record({ k: fc.constant('log' as const), user: fc.option(fc.nat(40), { nil: null }), org: fc.option(fc.nat(20), { nil: null }) }),
    fc.record({ k: fc.constant('tier' as const), org: fc.nat(20), tier: fc.boolean() }),
    fc.record({ k: fc.constant('move' as const), user: fc.nat(40), org: fc.nat(20) }),
    fc.record({ k: fc.constant('erase' as const), user: fc.nat(40) }),
    fc.constant({ k: 'sync' as const }),
  );
  let runs = 0;
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 30 }), async (ops) => {
    await reset();
    let n = 0;
    const pickId = async (table: string, i: number) => {
      const r = (await sql(prod.url, `SELECT id FROM "${table}" ORDER BY id`)).rows;
      return r.length ? r[i % r.length].id as number : null;
    };
    for (const o of ops) {
      if (o.k === 'org') await sql(prod.url, `INSERT INTO "Organization" VALUES ($1, $2, $3)`, [++n, o.tier ? 'enterprise' : 'free', o.parent === null ? null : await pickId('Organization', o.parent)]);
      if (o.k === 'user') {
        const org = await pickId('Organization', o.org);
        if (org !== null) await sql(prod.url, `INSERT INTO "User" VALUES ($1, $2, $3)`, [++n, org, o.manager === null ? null : await pickId('User', o.manager)]);
      }
      if (o.k === 'log') await sql(prod.url, `INSERT INTO "AuditLog" VALUES ($1, $2, $3)`, [++n, o.user === null ? null : await pickId('User', o.user), o.org === null ? null : await pickId('Organization', o.org)]);
      if (o.k === 'tier') {
        const org = await pickId('Organization', o.org);
        if (org !== null) await sql(prod.url, `UPDATE "Organization" SET tier = $2 WHERE id = $1`, [org, o.tier ? 'enterprise' : 'free']);
      }
      if (o.k === 'move') {
        const [u, org] = [await pickId('User', o.user), await pickId('Organization', o.org)];
        if (u !== null && org !== null) await sql(prod.url, `UPDATE "User" SET "organizationId" = $2 WHERE id = $1`, [u, org]);
      }
      if (o.k === 'erase') {
        const u = await pickId('User', o.user);
        if (u !== null) await sql(prod.url, `UPDATE "User" SET "managerId" = NULL WHERE "managerId" = $1; DELETE FROM "User" WHERE id = $1`.replace(/\$1/g, String(u)));
      }
      if (o.k === 'sync') {
        await sync();
        runs++;
      }
    }
    await sync();
    runs++;
    assert.deepEqual(ids(await read(dev.url)), expectedSubset(await read(prod.url)));
    assert.deepEqual(await fkOrphans(dev.url), []);
  }), { numRuns: Number(process.env.SUBSET_RUNS ?? 40), interruptAfterTimeLimit: 120_000, markInterruptAsFailure: false });
  console.log(`# subset property: ${runs} runs compared with the independent computation, counterexamples=0`);
});

test('an FK cycle under a subset: both tables follow the scope', async () => {
  const a = await createTestDatabase('subset_cyc_src');
  const b = await createTestDatabase('subset_cyc_dst');
  try {
    const ddl = `CREATE TABLE t1 (id int PRIMARY KEY, flag bool NOT NULL, t2 int); CREATE TABLE t2 (id int PRIMARY KEY, t1 int REFERENCES t1(id));
      ALTER TABLE t1 ADD FOREIGN KEY (t2) REFERENCES t2(id);`;
    await sql(a.url, ddl);
    await sql(b.url, ddl);
    await sql(a.url, `INSERT INTO t1 VALUES (1, true, NULL), (2, false, NULL), (3, false, NULL); INSERT INTO t2 VALUES (10, 1), (20, 2);
      UPDATE t1 SET t2 = 20 WHERE id = 1; UPDATE t1 SET t2 = 10 WHERE id = 3`);
    const target: ResolvedTarget = { name: 'dev', url: b.url, anonymize: false, mask: null, testPassword: null, subset: { root: 't1', where: 'flag' } };
    const r = await runSync({ sourceUrl: a.url, targetUrl: b.url, target, tables: [{ name: 't1' }, { name: 't2' }] });
    assert.equal(r.error, undefined, r.error?.message);
    // t1 1 (root) → t2 10 (references it) → t1 3 (references t2 10); t1 1 needs t2 20 → which needs t1 2.
    assert.deepEqual((await sql(b.url, `SELECT id FROM t1 ORDER BY id`)).rows.map((x) => x.id), [1, 2, 3]);
    assert.deepEqual((await sql(b.url, `SELECT id FROM t2 ORDER BY id`)).rows.map((x) => x.id), [10, 20]);
    assert.deepEqual(await fkOrphans(b.url), []);
  } finally {
    await a.drop();
    await b.drop();
  }
});
