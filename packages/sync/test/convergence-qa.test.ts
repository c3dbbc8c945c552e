// Convergence you can trust, part 2 (table-driven, real PostgreSQL):
// - QA rows are never deleted or modified by the engine, directly or indirectly: not through FK
//   actions from an erased production parent, not after QA changes their key, not when the QA
//   session has other TimeZone/DateStyle/IntervalStyle/extra_float_digits settings;
// - one blocked row blocks only itself (and rows that need it): every other change of the run,
//   in every table, is applied, other erasures included.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from '@elara/testkit';
import { cases } from './cases.ts';
import { createPair, runCli } from './helpers.ts';

const o = (n: number) => `00000000-0000-0000-0000-0000000000${String(n).padStart(2, '0')}`;
const u = (n: number) => `00000000-0000-0000-0000-0000000001${String(n).padStart(2, '0')}`;
const qa = (n: number) => `00000000-0000-0000-0000-00000000ff${String(n).padStart(2, '0')}`;
const schema = (onDelete: string, deferrable = '') => `
  CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL, "apiKey" text NOT NULL UNIQUE);
  CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text,
    "organizationId" uuid ${onDelete.includes('SET NULL') || onDelete.includes('SET DEFAULT') ? '' : 'NOT NULL'} REFERENCES "Organization"(id) ${onDelete} ${deferrable},
    "managerId" uuid REFERENCES "User"(id) ${onDelete} ${deferrable});`;
const SEED = `INSERT INTO "Organization" VALUES ('${o(1)}', 'One', 'k1'), ('${o(2)}', 'Two', 'k2'), ('${o(3)}', 'Three', 'k3');
  INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${u(1)}', 'u1@x.test', 'U1', '${o(1)}'), ('${u(2)}', 'u2@x.test', 'U2', '${o(2)}'),
    ('${u(3)}', 'u3@x.test', 'U3', '${o(3)}'), ('${u(4)}', 'u4@x.test', 'U4', '${o(1)}');`;
const tables = ['Organization', 'User'];

// Production erases organization 2 (with its user) and 3 (with its user), renames 1 and adds a
// user; QA created a user in staging inside organization 2. Only organization 2's delete is held.
const erasures = (onDelete: string, deferrable = '') => ({
  name: `an erased production parent that a QA row references (${onDelete || 'NO ACTION'}${deferrable ? ` ${deferrable}` : ''}): held, the QA row untouched, everything else applied`,
  schema: schema(onDelete, deferrable), tables, source: SEED,
  steps: [{
    target: `INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${qa(1)}', 'qa@x.test', 'QA', '${o(2)}')`,
    source: `DELETE FROM "User" WHERE "organizationId" IN ('${o(2)}', '${o(3)}'); DELETE FROM "Organization" WHERE id IN ('${o(2)}', '${o(3)}');
      UPDATE "Organization" SET name = 'One renamed' WHERE id = '${o(1)}';
      INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${u(5)}', 'u5@x.test', 'U5', '${o(1)}')`,
  }],
  local: { User: `email = 'qa@x.test'` },
  equal: ['User'],
  held: { Organization: [o(2)] },
  check: async ({ pair, last }: { pair: { source: { url: string }; target: { url: string } }; last: { tables: Array<{ table: string; deleted: number; updated: number; held?: Array<{ reason: string }> }> } }) => {
    const org = last.tables.find((t) => t.table === 'Organization')!;
    assert.equal(org.deleted, 1, 'the other erasure is applied');
    assert.equal(org.updated, 1, 'the rename is applied');
    assert.match(org.held![0]!.reason, /still referenced by rows of User/);
    // Staging holds production's organizations plus the held one.
    const staged = (await sql(pair.target.url, `SELECT id::text FROM "Organization" ORDER BY id`)).rows.map((r) => r.id);
    assert.deepEqual(staged, [o(1), o(2)]);
  },
});

cases([
  erasures('ON DELETE CASCADE'),
  erasures('ON DELETE SET NULL'),
  erasures('ON DELETE SET DEFAULT'),
  erasures('ON DELETE RESTRICT'),
  erasures(''),
  erasures('', 'DEFERRABLE INITIALLY DEFERRED'),
  {
    name: 'a staging-only table (QA notes, ON DELETE CASCADE) referencing an erased production row holds that erasure only',
    schema: schema(''), tables, source: SEED,
    targetSchema: `CREATE TABLE qa_notes (id serial PRIMARY KEY, "userId" uuid NOT NULL REFERENCES "User"(id) ON DELETE CASCADE, note text)`,
    steps: [{
      target: `INSERT INTO qa_notes ("userId", note) VALUES ('${u(1)}', 'tested login')`,
      source: `DELETE FROM "User" WHERE id IN ('${u(1)}', '${u(2)}')`,
    }],
    equal: ['Organization'],
    held: { User: [u(1)] },
    check: async ({ pair }) => {
      assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM qa_notes`)).rows[0].n, 1);
      assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "User" WHERE id = '${u(2)}'`)).rows[0].n, 0, 'the other erasure reached staging');
    },
  },
  {
    name: 'a chain: a held parent holds the production rows that need it (user → managed users), not their siblings',
    schema: schema(''), tables, source: SEED,
    steps: [{
      // QA holds apiKey k9 in staging; production creates an organization with k9 and users in it,
      // one of whom manages a user in another organization.
      target: `INSERT INTO "Organization" VALUES ('${qa(1)}', 'QA org', 'k9')`,
      source: `INSERT INTO "Organization" VALUES ('${o(9)}', 'Nine', 'k9');
        INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${u(9)}', 'u9@x.test', 'U9', '${o(9)}');
        INSERT INTO "User" (id, email, name, "organizationId", "managerId") VALUES ('${u(10)}', 'u10@x.test', 'U10', '${o(1)}', '${u(9)}'), ('${u(11)}', 'u11@x.test', 'U11', '${o(1)}', NULL)`,
    }],
    local: { Organization: `"apiKey" = 'k9' AND name = 'QA org'` },
    equal: [],
    held: { Organization: [o(9)], User: [u(10), u(9)] },
    check: async ({ pair, last }) => {
      assert.equal(last.tables.find((t) => t.table === 'User')!.inserted, 1, 'the sibling arrives');
      assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "User" WHERE id = '${u(11)}'`)).rows[0].n, 1);
      const reasons = last.tables.flatMap((t) => t.held ?? []).map((h) => h.reason);
      assert.ok(reasons.some((r) => /collides on unique index Organization_apiKey_key/.test(r)), reasons.join('; '));
      assert.ok(reasons.some((r) => /needs a parent row/.test(r)), reasons.join('; '));
    },
  },
  {
    name: 'production empties both tables while a QA row references one of its rows: held on every run, not forgotten',
    schema: schema('ON DELETE CASCADE'), tables, source: SEED,
    steps: [{
      target: `INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${qa(1)}', 'qa@x.test', 'QA', '${o(1)}')`,
      source: `DELETE FROM "User"; DELETE FROM "Organization"`,
    }],
    local: { User: `email = 'qa@x.test'` },
    equal: ['User'],
    held: { Organization: [o(1)] },
  },
  {
    name: 'QA changes the key of its own row: still a QA row, kept',
    schema: schema(''), tables, source: SEED,
    steps: [
      { target: `INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${qa(1)}', 'qa@x.test', 'QA', '${o(1)}')`, run: true },
      { target: `UPDATE "User" SET id = '${qa(2)}', name = 'QA renamed' WHERE id = '${qa(1)}'` },
    ],
    local: { User: `email = 'qa@x.test'` },
  },
  {
    name: 'QA edits the key of a production row: the edit is put back (the row returns under its key, the new key is not QA data)',
    schema: schema(''), tables, source: SEED,
    steps: [{ target: `UPDATE "User" SET id = '${qa(3)}' WHERE id = '${u(4)}'` }],
  },
  {
    name: 'QA updates a non-key column of its own row: kept as QA wrote it',
    schema: schema(''), tables, source: SEED,
    steps: [
      { target: `INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${qa(1)}', 'qa@x.test', 'QA', '${o(1)}')`, run: true },
      { target: `UPDATE "User" SET name = 'QA edited' WHERE id = '${qa(1)}'` },
    ],
    local: { User: `email = 'qa@x.test'` },
  },
]);

// Keys whose text depends on session settings: QA sessions in another time zone, date style,
// interval style and float precision record the same key text as the engine.
const SESSION = `SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'German, DMY'; SET IntervalStyle = 'sql_standard'; SET extra_float_digits = 0; SET bytea_output = 'escape';`;
cases([
  {
    name: 'QA rows inserted from a session with another TimeZone / DateStyle / IntervalStyle / extra_float_digits are kept (keys of every such type)',
    schema: `CREATE TABLE ev (at timestamptz PRIMARY KEY, v text); CREATE TABLE ivk (d date, span interval, PRIMARY KEY (d, span), v text);
      CREATE TABLE fk8 (f float8 PRIMARY KEY, v text); CREATE TABLE bk (b bytea PRIMARY KEY, v text); CREATE TABLE tk (t timestamp(3), n numeric, PRIMARY KEY (t, n), v text);`,
    tables: ['ev', 'ivk', 'fk8', 'bk', 'tk'],
    source: `INSERT INTO ev VALUES ('2026-01-01 10:00:00+00', 'prod'); INSERT INTO ivk VALUES ('2026-01-01', '1 day 2 hours', 'prod');
      INSERT INTO fk8 VALUES (0.5, 'prod'); INSERT INTO bk VALUES ('\\x01', 'prod'); INSERT INTO tk VALUES ('2026-01-01 00:00:00.123', 1.50, 'prod')`,
    steps: [
      { target: `${SESSION} INSERT INTO ev VALUES ('2026-03-04 05:06:07.891+09', 'qa'); INSERT INTO ivk VALUES ('2026-03-04', '3 days 04:05:06', 'qa');
          INSERT INTO fk8 VALUES (0.1, 'qa'); INSERT INTO bk VALUES ('\\xfe00'::bytea, 'qa'); INSERT INTO tk VALUES ('2026-03-04 05:06:07.891', 2.250, 'qa')`, run: true },
      { source: `UPDATE ev SET v = 'prod2'; UPDATE ivk SET v = 'prod2'; UPDATE fk8 SET v = 'prod2'; UPDATE bk SET v = 'prod2'; UPDATE tk SET v = 'prod2'` },
    ],
    local: { ev: `v = 'qa'`, ivk: `v = 'qa'`, fk8: `v = 'qa'`, bk: `v = 'qa'`, tk: `v = 'qa'` },
  },
]);

test('the CLI exits 1 and names each held key and why; the rest is applied', async () => {
  const pair = await createPair('conv_cli', schema('ON DELETE CASCADE'));
  try {
    await sql(pair.source.url, SEED);
    const args = ['run', '--from', pair.source.url, '--to', pair.target.url, '--tables', 'Organization,User'];
    assert.equal((await runCli(args)).code, 0);
    await sql(pair.target.url, `INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${qa(1)}', 'qa@x.test', 'QA', '${o(2)}')`);
    await sql(pair.source.url, `DELETE FROM "User" WHERE "organizationId" = '${o(2)}'; DELETE FROM "Organization" WHERE id = '${o(2)}'; UPDATE "User" SET name = 'changed' WHERE id = '${u(1)}'`);
    const r = await runCli(args);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, new RegExp(`held back: ${o(2)}: still referenced by rows of User that stay in staging`));
    assert.match(r.stdout, /User: inserted 0, updated 1, deleted 1/);
    const json = JSON.parse((await runCli([...args, '--json'])).stdout);
    assert.equal(json.ok, false);
    assert.deepEqual(json.tables.find((t: { table: string }) => t.table === 'Organization').held.map((h: { key: string }) => h.key), [o(2)]);
  } finally {
    await pair.drop();
  }
});
