// Table-driven behaviour of a reconcile run: production rows, staging before, staging expected
// after. Each case gets its own pair of databases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sql } from '@elara/testkit';
import { runSync, type RunResult } from '../src/index.ts';
import { verifySync } from '../src/verify/verify.ts';
import { createPair, rows } from './helpers.ts';

const SEED_SCHEMA = `
CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL, "apiKey" text NOT NULL UNIQUE, "updatedAt" timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, "firstName" text, "organizationId" uuid NOT NULL REFERENCES "Organization"(id));`;

const org = (n: number) => `('00000000-0000-0000-0000-00000000000${n}', 'Org ${n}', 'key${n}')`;
const user = (n: number, o: number, name = `U${n}`) => `('00000000-0000-0000-0000-0000000001${String(n).padStart(2, '0')}', 'u${n}@x.test', '${name}', '00000000-0000-0000-0000-00000000000${o}')`;
const SEED_ROWS = `INSERT INTO "Organization" (id, name, "apiKey") VALUES ${org(1)}, ${org(2)}, ${org(3)};
  INSERT INTO "User" (id, email, "firstName", "organizationId") VALUES ${user(1, 1)}, ${user(2, 1)}, ${user(3, 2)}, ${user(4, 3)};`;

interface Case {
  name: string;
  schema?: string;
  /** Production rows before the first run. */
  source: string;
  /** Staging rows before the first run (e.g. left by the seed's CronJob, or QA data). */
  targetBefore?: string;
  /** Changes after the first run, then a second run. */
  then?: { source?: string; target?: string };
  tables?: string[];
  /** Per table: the expected staging rows as SQL run on production plus staging-only rows. */
  expect: Record<string, { equalsSourceExcept?: string; query?: string; rows?: string[] }>;
  result?: (first: RunResult, last: RunResult) => void;
}

const cases: Case[] = [
  {
    name: 'inserts into an empty staging, parents first',
    source: SEED_ROWS,
    expect: { '"Organization"': {}, '"User"': {} },
    result: (r) => {
      assert.deepEqual(r.order, ['Organization', 'User']);
      assert.equal(r.tables[0]!.inserted, 3);
      assert.equal(r.tables[1]!.inserted, 4);
    },
  },
  {
    name: 'updates only the rows that changed; a re-run writes nothing',
    source: SEED_ROWS,
    then: { source: `UPDATE "User" SET "firstName" = 'Renamed' WHERE email = 'u2@x.test'; UPDATE "Organization" SET name = name WHERE "apiKey" = 'key3'` },
    expect: { '"Organization"': {}, '"User"': {} },
    result: (_f, r) => {
      assert.equal(r.tables.find((t) => t.table === 'User')!.updated, 1);
      // Touched in production but equal: compared, not written.
      assert.equal(r.tables.find((t) => t.table === 'Organization')!.updated, 0);
    },
  },
  {
    name: 'deletes reach staging (GDPR erasure), children before parents',
    source: SEED_ROWS,
    then: { source: `DELETE FROM "User" WHERE email = 'u1@x.test'; DELETE FROM "User" WHERE "organizationId" = '00000000-0000-0000-0000-000000000003'; DELETE FROM "Organization" WHERE "apiKey" = 'key3'` },
    expect: { '"Organization"': {}, '"User"': {} },
    result: (_f, r) => {
      assert.equal(r.tables.find((t) => t.table === 'User')!.deleted, 2);
      assert.equal(r.tables.find((t) => t.table === 'Organization')!.deleted, 1);
      assert.equal(r.ok, true);
    },
  },
  {
    name: 'staging-only rows survive: present before the first run, and created by QA later',
    source: SEED_ROWS,
    targetBefore: `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('00000000-0000-0000-0000-0000000000a1', 'QA before', 'qa-before')`,
    then: {
      target: `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('00000000-0000-0000-0000-0000000000a2', 'QA after', 'qa-after');
        INSERT INTO "User" (id, email, "firstName", "organizationId") VALUES ('00000000-0000-0000-0000-0000000000b1', 'qa@x.test', 'QA', '00000000-0000-0000-0000-0000000000a2')`,
      source: `DELETE FROM "User" WHERE email = 'u4@x.test'`,
    },
    expect: {
      '"Organization"': { equalsSourceExcept: `"apiKey" LIKE 'qa-%'` },
      '"User"': { equalsSourceExcept: `email = 'qa@x.test'` },
    },
    result: (_f, r) => assert.equal(r.tables.find((t) => t.table === 'User')!.deleted, 1),
  },
  {
    name: 'a production row whose key a QA row holds is reported by key; the rest is applied',
    source: SEED_ROWS,
    then: {
      target: `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('00000000-0000-0000-0000-0000000000c1', 'QA', 'qa-c1')`,
      source: `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('00000000-0000-0000-0000-0000000000c1', 'Prod', 'prod-c1'), ${org(4)};
        UPDATE "User" SET "firstName" = 'Changed' WHERE email = 'u1@x.test'`,
    },
    expect: {
      '"Organization"': { query: `SELECT name FROM "Organization" ORDER BY name`, rows: ['{"name":"Org 1"}', '{"name":"Org 2"}', '{"name":"Org 3"}', '{"name":"Org 4"}', '{"name":"QA"}'] },
      '"User"': {},
    },
    result: (_f, r) => {
      const o = r.tables.find((t) => t.table === 'Organization')!;
      assert.equal(r.ok, false);
      assert.equal(o.conflicts, 1);
      assert.deepEqual(o.conflictKeys, ['00000000-0000-0000-0000-0000000000c1']);
      assert.equal(o.inserted, 1);
      assert.equal(r.tables.find((t) => t.table === 'User')!.updated, 1);
    },
  },
  {
    name: 'a unique-value clash with a QA row is a conflict, not an abort',
    source: SEED_ROWS,
    then: {
      target: `INSERT INTO "User" (id, email, "firstName", "organizationId") VALUES ('00000000-0000-0000-0000-0000000000d1', 'new@x.test', 'QA', '00000000-0000-0000-0000-000000000001')`,
      source: `INSERT INTO "User" (id, email, "firstName", "organizationId") VALUES ('00000000-0000-0000-0000-0000000000d2', 'new@x.test', 'Prod', '00000000-0000-0000-0000-000000000001'), ${user(9, 2)}`,
    },
    expect: {
      '"User"': { query: `SELECT email, "firstName" FROM "User" WHERE email IN ('new@x.test', 'u9@x.test') ORDER BY email`, rows: ['{"email":"new@x.test","firstName":"QA"}', '{"email":"u9@x.test","firstName":"U9"}'] },
    },
    result: (_f, r) => {
      const u = r.tables.find((t) => t.table === 'User')!;
      assert.equal(u.conflicts, 1);
      assert.equal(u.inserted, 1);
      assert.equal(r.ok, false);
    },
  },
  {
    name: 'a staging edit of a production row is put back on the next run',
    source: SEED_ROWS,
    then: { target: `UPDATE "User" SET "firstName" = 'edited in staging' WHERE email = 'u3@x.test'; DELETE FROM "User" WHERE email = 'u4@x.test'` },
    expect: { '"Organization"': {}, '"User"': {} },
    result: (_f, r) => {
      const u = r.tables.find((t) => t.table === 'User')!;
      assert.equal(u.updated, 1);
      assert.equal(u.inserted, 1);
    },
  },
  {
    name: 'composite primary keys',
    schema: `CREATE TABLE "Membership" (org int, "userId" int, role text, PRIMARY KEY (org, "userId"));`,
    source: `INSERT INTO "Membership" VALUES (1, 1, 'admin'), (1, 2, 'member'), (2, 1, 'member')`,
    targetBefore: `INSERT INTO "Membership" VALUES (9, 9, 'qa')`,
    then: { source: `UPDATE "Membership" SET role = 'owner' WHERE org = 1 AND "userId" = 1; DELETE FROM "Membership" WHERE org = 2` },
    tables: ['Membership'],
    expect: { '"Membership"': { equalsSourceExcept: 'org = 9' } },
    result: (_f, r) => assert.deepEqual([r.tables[0]!.updated, r.tables[0]!.deleted], [1, 1]),
  },
  {
    name: 'self-referencing foreign key: new parent and child in one run, then both deleted',
    schema: `CREATE TABLE "Employee" (id int PRIMARY KEY, "managerId" int REFERENCES "Employee"(id), name text);`,
    source: `INSERT INTO "Employee" VALUES (1, NULL, 'ceo'), (2, 1, 'cto'), (3, 2, 'dev')`,
    then: { source: `INSERT INTO "Employee" VALUES (4, 1, 'vp'); UPDATE "Employee" SET "managerId" = 4 WHERE id = 2; DELETE FROM "Employee" WHERE id = 3` },
    tables: ['Employee'],
    expect: { '"Employee"': {} },
  },
  {
    name: 'FK cycle with deferrable constraints',
    schema: `CREATE TABLE a (id int PRIMARY KEY, b_id int);
      CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a(id) DEFERRABLE);
      ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b(id) DEFERRABLE;`,
    source: `BEGIN; SET CONSTRAINTS ALL DEFERRED; INSERT INTO a VALUES (1, 1), (2, 2); INSERT INTO b VALUES (1, 2), (2, 1); COMMIT;`,
    then: { source: `BEGIN; SET CONSTRAINTS ALL DEFERRED; UPDATE b SET a_id = 1 WHERE id = 1; DELETE FROM a WHERE id = 2; INSERT INTO a VALUES (3, 2); COMMIT;` },
    tables: ['a', 'b'],
    expect: { a: {}, b: {} },
  },
  {
    name: 'awkward names and types: quoted mixed case, jsonb, json, bytea, arrays, numeric, NULLs, tabs and newlines',
    schema: `CREATE SCHEMA "Other Schema";
      CREATE TABLE "Other Schema"."Weird ""Table""" ("Key" text PRIMARY KEY, j jsonb, js json, b bytea, arr int[], tags text[], n numeric(30,10), t text, ts timestamptz, f float8);`,
    source: `INSERT INTO "Other Schema"."Weird ""Table""" VALUES
      ('a\tb', '{"x": [1, 2, {"y": null}]}', '{"raw":  "spacing kept"}', '\\x00ff10', '{1,2,NULL}', '{"a,b","c\\"d",NULL}', 12345678901234567890.0123456789, E'line1\\nline2\\ttab \\\\ back', '2026-01-02 03:04:05.678+01', 0.1),
      ('nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (E'new\\nline key', '[]', '[]', '', '{}', '{}', 0, '', 'infinity', 'NaN')`,
    then: { source: `UPDATE "Other Schema"."Weird ""Table""" SET j = '{"x": 2}', b = '\\x01', arr = '{3}' WHERE "Key" = 'nulls'` },
    tables: ['"Other Schema"."Weird ""Table"""'],
    expect: { '"Other Schema"."Weird ""Table"""': {} },
    result: (f, r) => {
      assert.equal(f.tables[0]!.inserted, 3);
      assert.equal(r.tables[0]!.updated, 1);
      assert.equal(r.tables[0]!.unchanged, 2);
    },
  },
];

for (const c of cases) {
  test(c.name, async () => {
    const pair = await createPair('reconcile', c.schema ?? SEED_SCHEMA);
    try {
      const tables = (c.tables ?? ['Organization', 'User']).map((name) => ({ name }));
      const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables };
      await sql(pair.source.url, c.source);
      if (c.targetBefore) await sql(pair.target.url, c.targetBefore);
      const first = await runSync(opts);
      assert.equal(first.error, undefined, first.error?.message);
      let last = first;
      if (c.then) {
        if (c.then.target) await sql(pair.target.url, c.then.target);
        if (c.then.source) await sql(pair.source.url, c.then.source);
        last = await runSync(opts);
        assert.equal(last.error, undefined, last.error?.message);
      }
      for (const [table, e] of Object.entries(c.expect)) {
        if (e.query) {
          assert.deepEqual(await rows(pair.target.url, `(${e.query})`), e.rows, `${table} rows`);
          continue;
        }
        const where = e.equalsSourceExcept ? ` WHERE NOT (${e.equalsSourceExcept})` : '';
        assert.deepEqual(await rows(pair.target.url, `(SELECT * FROM ${table}${where})`), await rows(pair.source.url, table), `${table}: staging equals production`);
        if (e.equalsSourceExcept) {
          const kept = await sql(pair.target.url, `SELECT count(*)::int AS n FROM ${table} WHERE ${e.equalsSourceExcept}`);
          assert.ok(kept.rows[0].n > 0, `${table}: staging-only rows kept`);
        }
      }
      c.result?.(first, last);
      // A run right after converges to nothing to do, except rows still blocked by conflicts.
      const again = await runSync(opts);
      for (const t of again.tables) assert.deepEqual([t.table, t.inserted, t.updated, t.deleted], [t.table, 0, 0, 0], 'the next run writes nothing');
      if (last.ok) {
        const v = await verifySync(opts);
        assert.equal(v.equal, true, JSON.stringify(v.tables));
      }
    } finally {
      await pair.drop();
    }
  });
}

test('a conflict clears once the QA row is gone: the blocked production row then arrives', async () => {
  const pair = await createPair('reconcile_clear', SEED_SCHEMA);
  try {
    const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }] };
    await sql(pair.source.url, `INSERT INTO "Organization" (id, name, "apiKey") VALUES ${org(1)}`);
    await runSync(opts);
    await sql(pair.target.url, `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('00000000-0000-0000-0000-0000000000e1', 'QA', 'qa')`);
    await sql(pair.source.url, `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('00000000-0000-0000-0000-0000000000e1', 'Prod', 'prod')`);
    const blocked = await runSync(opts);
    assert.equal(blocked.tables[0]!.conflicts, 1);
    await sql(pair.target.url, `DELETE FROM "Organization" WHERE "apiKey" = 'qa'`);
    const r = await runSync(opts);
    assert.equal(r.ok, true);
    assert.equal(r.tables[0]!.inserted, 1);
    assert.deepEqual(await rows(pair.target.url, '"Organization"'), await rows(pair.source.url, '"Organization"'));
  } finally {
    await pair.drop();
  }
});

test('schema problems are one clear error naming each table and column, and change nothing', async () => {
  const pair = await createPair('reconcile_schema', '');
  try {
    await sql(pair.source.url, `CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text, extra text); CREATE TABLE nopk (x int); INSERT INTO "Organization" VALUES (gen_random_uuid(), 'a', 'b')`);
    await sql(pair.target.url, `CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text); CREATE TABLE nopk (x int)`);
    const r = await runSync({ sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'nopk' }, { name: 'Missing' }] });
    assert.equal(r.ok, false);
    assert.match(r.error!.message, /column Organization\.extra exists in production but not in staging/);
    assert.match(r.error!.message, /table nopk has no primary key/);
    assert.match(r.error!.message, /table Missing does not exist in production/);
    assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "Organization"`)).rows[0].n, 0);
  } finally {
    await pair.drop();
  }
});

test('a column added to both sides later forces one full compare and is filled in', async () => {
  const pair = await createPair('reconcile_newcol', SEED_SCHEMA);
  try {
    const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'User' }] };
    await sql(pair.source.url, SEED_ROWS);
    await runSync(opts);
    await sql(pair.source.url, `ALTER TABLE "User" ADD COLUMN role text NOT NULL DEFAULT 'member'; UPDATE "User" SET role = 'admin' WHERE email = 'u1@x.test'`);
    await sql(pair.target.url, `ALTER TABLE "User" ADD COLUMN role text NOT NULL DEFAULT 'member'`);
    const r = await runSync(opts);
    assert.equal(r.tables.find((t) => t.table === 'User')!.updated, 1);
    assert.deepEqual(await rows(pair.target.url, '"User"'), await rows(pair.source.url, '"User"'));
  } finally {
    await pair.drop();
  }
});

test('transforms and row filters run in the source query: masked values and filtered rows never reach staging', async () => {
  const pair = await createPair('reconcile_transform', SEED_SCHEMA);
  try {
    await sql(pair.source.url, SEED_ROWS);
    const tables = [
      { name: 'Organization' },
      { name: 'User', transforms: { email: `'user_' || left(md5(email), 8) || '@example.invalid'`, firstName: 'NULL' }, where: `"organizationId" <> '00000000-0000-0000-0000-000000000003'` },
    ];
    const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables };
    const r = await runSync(opts);
    assert.equal(r.error, undefined, r.error?.message);
    const staged = await sql(pair.target.url, `SELECT email, "firstName" FROM "User" ORDER BY id`);
    assert.equal(staged.rows.length, 3, 'the user of organization 3 is filtered out');
    for (const u of staged.rows) {
      assert.match(u.email, /^user_[0-9a-f]{8}@example\.invalid$/);
      assert.equal(u.firstName, null);
    }
    // A production change to a filtered-in row arrives masked; verify compares the masked form.
    await sql(pair.source.url, `UPDATE "User" SET email = 'changed@x.test' WHERE email = 'u1@x.test'`);
    const again = await runSync(opts);
    assert.equal(again.tables.find((t) => t.table === 'User')!.updated, 1);
    assert.equal((await verifySync(opts)).equal, true);
    assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "User" WHERE email LIKE '%@x.test'`)).rows[0].n, 0);
  } finally {
    await pair.drop();
  }
});
