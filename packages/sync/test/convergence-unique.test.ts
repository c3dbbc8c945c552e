// Convergence you can trust, part 3 (table-driven, real PostgreSQL):
// - unique values given up and reused in production (erase and re-register, swaps, rotations)
//   converge for every kind of unique constraint: expression and partial indexes, composite ones,
//   NULLS NOT DISTINCT, and columns whose type or CHECK restrict which values fit; an erasure is
//   never blocked by the mechanism. Both in a reconcile and in an immediate sync of a few keys;
// - sequences and identity columns: staging's sequences stay ahead of production's (never moved
//   back), so QA rows created with default keys never collide with later production rows;
//   GENERATED ALWAYS identity columns sync on every run.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';

/** A pool whose idle clients may be ended by a forced DROP DATABASE at teardown (pool.end resolves before their sockets close). */
const quietPool = (config: pg.PoolConfig) => {
  const pool = new pg.Pool(config);
  pool.on('error', () => {});
  return pool;
};
import { sql } from '@elara/testkit';
import { runSync, syncKeys } from '../src/index.ts';
import { cases, fkOrphans, tableRows } from './cases.ts';
import { createPair } from './helpers.ts';

interface UniqueKind {
  name: string;
  /** Columns of table "U" (id int PRIMARY KEY, …) around the unique constraint on v (or an expression of it). */
  ddl: string;
  /** Three distinct values that fit, and a fourth, spare one. */
  vals: [string, string, string];
  spare: string;
  /** Extra columns and their value for every row, if the index needs them (a partial index's flag). */
  extra?: { cols: string; values: string };
}

const KINDS: UniqueKind[] = [
  { name: 'a plain unique text column', ddl: `v text UNIQUE`, vals: [`'a@x.test'`, `'b@x.test'`, `'c@x.test'`], spare: `'s@x.test'` },
  { name: 'an expression index lower(v)', ddl: `v text`, vals: [`'Ada@X.test'`, `'bob@x.test'`, `'Cy@x.test'`], spare: `'spare@x.test'` },
  { name: 'a partial unique index (active rows only)', ddl: `v text, active boolean NOT NULL DEFAULT true`, vals: [`'p1'`, `'p2'`, `'p3'`], spare: `'p9'`, extra: { cols: 'active', values: 'true' } },
  { name: 'a varchar(4) column too short for any placeholder', ddl: `v varchar(4) UNIQUE`, vals: [`'aa'`, `'bb'`, `'cc'`], spare: `'zz'` },
  { name: 'a CHECK-constrained column', ddl: `v text UNIQUE CHECK (v ~ '^[A-Z]{3}$')`, vals: [`'ABC'`, `'DEF'`, `'GHI'`], spare: `'ZZZ'` },
  { name: 'a unique uuid column', ddl: `v uuid UNIQUE`, vals: [`'00000000-0000-4000-8000-00000000000a'`, `'00000000-0000-4000-8000-00000000000b'`, `'00000000-0000-4000-8000-00000000000c'`], spare: `'00000000-0000-4000-8000-00000000000f'` },
  { name: 'a unique integer column', ddl: `v int UNIQUE`, vals: ['1', '2', '3'], spare: '99' },
  { name: 'a composite unique (org, v)', ddl: `org int NOT NULL DEFAULT 7, v text, UNIQUE (org, v)`, vals: [`'n1'`, `'n2'`, `'n3'`], spare: `'n9'` },
  { name: 'a NULLS NOT DISTINCT unique', ddl: `v text, UNIQUE NULLS NOT DISTINCT (v)`, vals: [`NULL`, `'x'`, `'y'`], spare: `'z'` },
  { name: 'an enum column', ddl: `v mood UNIQUE`, vals: [`'sad'`, `'ok'`, `'happy'`], spare: `'meh'` },
];
const ddlFor = (k: UniqueKind) => `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'meh');
  CREATE TABLE "U" (id int PRIMARY KEY, ${k.ddl}, note text);
  ${k.name.includes('lower(v)') ? `CREATE UNIQUE INDEX u_lower ON "U" (lower(v));` : ''}
  ${k.name.includes('partial') ? `CREATE UNIQUE INDEX u_active ON "U" (v) WHERE active;` : ''}
  CREATE TABLE "Child" (id int PRIMARY KEY, "uId" int NOT NULL REFERENCES "U"(id));`;
const ins = (k: UniqueKind, id: number, v: string) => `INSERT INTO "U" (id, v${k.extra ? `, ${k.extra.cols}` : ''}) VALUES (${id}, ${v}${k.extra ? `, ${k.extra.values}` : ''});`;
const set = (id: number, v: string) => `UPDATE "U" SET v = ${v} WHERE id = ${id};`;

/** Ways production gives a unique value up and reuses it, each in one transaction. */
const moves = (k: UniqueKind) => {
  const [a, b, c] = k.vals;
  // lower('ADA@x.TEST') = lower('Ada@X.test'): a collision only the expression index sees.
  const again = k.name.includes('lower(v)') ? `'ADA@x.TEST'` : a;
  return [
    { what: 'erased, and the value registered again by a new row', then: `DELETE FROM "Child" WHERE "uId" = 1; DELETE FROM "U" WHERE id = 1; ${ins(k, 10, again)}` },
    // Row 1 holds a and row 2 holds b; production swaps them through the spare value.
    { what: 'swapped between two rows', then: `${set(1, k.spare)} ${set(2, a)} ${set(1, b)}` },
    { what: 'rotated through three rows', then: `${set(1, k.spare)} ${set(3, a)} ${set(2, c)} ${set(1, b)}` },
    ...(k.extra ? [{ what: 'given up by deactivating, taken by another row', then: `UPDATE "U" SET active = false WHERE id = 1; ${ins(k, 11, a)}` }] : []),
  ];
};

const seedFor = (k: UniqueKind) => `${ins(k, 1, k.vals[0])} ${ins(k, 2, k.vals[1])} ${ins(k, 3, k.vals[2])}
  INSERT INTO "Child" VALUES (1, 1), (2, 2), (3, 3);`;

cases(KINDS.flatMap((k) => moves(k).map((m) => ({
  name: `unique reuse, reconcile: ${k.name}: ${m.what}`,
  schema: ddlFor(k), tables: ['U', 'Child'], source: seedFor(k),
  steps: [{ source: m.then }],
}))));

cases([
  {
    name: 'unique reuse: an erasure whose value a QA row now takes in staging is not blocked; the new production holder is held',
    schema: ddlFor(KINDS[0]!), tables: ['U', 'Child'], source: seedFor(KINDS[0]!),
    steps: [
      { source: `DELETE FROM "Child" WHERE "uId" = 1; DELETE FROM "U" WHERE id = 1`, run: true },
      { target: `INSERT INTO "U" (id, v) VALUES (500, 'a@x.test')`, source: `INSERT INTO "U" (id, v) VALUES (10, 'a@x.test')` },
    ],
    local: { U: `id = 500` },
    equal: ['Child'],
    held: { U: ['10'] },
  },
]);

// The same moves through the immediate sync: only the keys of the new or changed rows are asked
// for; staging rows holding a value they need are pulled into scope from the same snapshot.
for (const k of KINDS.slice(0, 6)) {
  for (const m of moves(k).slice(0, 2)) {
    test(`unique reuse, immediate sync: ${k.name}: ${m.what}`, async () => {
      const pair = await createPair('conv_keys', ddlFor(k));
      const source = quietPool({ connectionString: pair.source.url });
      const target = quietPool({ connectionString: pair.target.url });
      try {
        await sql(pair.source.url, seedFor(k));
        await runSync({ sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'U' }, { name: 'Child' }] });
        await sql(pair.source.url, m.then);
        const keys = m.what.startsWith('erased') ? [{ id: 10 }] : [{ id: 2 }];
        // With the configured tables, as the backend passes them: children of a row production
        // deleted can join the scope.
        const tables = [{ name: 'U' }, { name: 'Child' }];
        const r = await syncKeys(source, target, [{ table: 'U', keys }], { tables });
        assert.equal(r[0]!.conflicts, 0);
        assert.deepEqual(await tableRows(pair.target.url, '"U"'), await tableRows(pair.source.url, '"U"'));
        assert.deepEqual(await fkOrphans(pair.target.url), []);
      } finally {
        await source.end();
        await target.end();
        await pair.drop();
      }
    });
  }
}

// ---------- sequences and identity ----------
cases([
  {
    name: 'serial keys: QA inserts with default keys in staging, production inserts more later: no collision, both kept',
    schema: `CREATE TABLE s (id serial PRIMARY KEY, v text)`, tables: ['s'],
    source: `INSERT INTO s (v) SELECT 'p' || g FROM generate_series(1, 5) g`,
    steps: [
      { target: `INSERT INTO s (v) VALUES ('qa1'), ('qa2')` },
      { source: `INSERT INTO s (v) SELECT 'later' || g FROM generate_series(1, 5) g` },
    ],
    local: { s: `v LIKE 'qa%'` },
    check: async ({ pair }) => {
      const qaIds = (await sql(pair.target.url, `SELECT id FROM s WHERE v LIKE 'qa%'`)).rows.map((r) => r.id);
      const prodMax = (await sql(pair.source.url, `SELECT max(id) AS m FROM s`)).rows[0].m;
      assert.ok(qaIds.every((id: number) => id > prodMax + 1_000_000), `QA keys ${qaIds} are far ahead of production's ${prodMax}`);
    },
  },
  {
    name: 'GENERATED ALWAYS AS IDENTITY: inserts, updates and deletes sync on every run, not just the first',
    schema: `CREATE TABLE g (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text, n int GENERATED ALWAYS AS (length(v)) STORED)`, tables: ['g'],
    source: `INSERT INTO g (v) VALUES ('a'), ('b'), ('c')`,
    steps: [
      { source: `INSERT INTO g (v) VALUES ('d'); UPDATE g SET v = 'bb' WHERE v = 'b'`, run: true },
      { source: `DELETE FROM g WHERE v = 'a'; INSERT INTO g (v) VALUES ('e')` },
    ],
  },
  {
    name: 'GENERATED BY DEFAULT identity, and a QA row with a default key',
    schema: `CREATE TABLE d (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)`, tables: ['d'],
    source: `INSERT INTO d (v) VALUES ('a'), ('b')`,
    steps: [{ target: `INSERT INTO d (v) VALUES ('qa')`, run: true }, { source: `INSERT INTO d (v) VALUES ('c'), ('d')` }],
    local: { d: `v = 'qa'` },
  },
]);

test('staging sequences are never moved backwards, and keep ahead of production', async () => {
  const pair = await createPair('conv_seq', `CREATE TABLE s (id serial PRIMARY KEY, v text)`);
  try {
    const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 's' }], sequenceHeadroom: 1000 };
    await sql(pair.source.url, `INSERT INTO s (v) SELECT 'p' FROM generate_series(1, 10) g`);
    await runSync(opts);
    const seq = async () => Number((await sql(pair.target.url, `SELECT last_value FROM s_id_seq`)).rows[0].last_value);
    assert.equal(await seq(), 1010);
    await sql(pair.target.url, `SELECT setval('s_id_seq', 50000)`);
    await sql(pair.source.url, `INSERT INTO s (v) VALUES ('q')`);
    await runSync(opts);
    assert.equal(await seq(), 50000, 'not moved back');
    await sql(pair.source.url, `SELECT setval('s_id_seq', 60000)`);
    await runSync(opts);
    assert.equal(await seq(), 61000, 'production moved ahead: staging follows with the headroom');
  } finally {
    await pair.drop();
  }
});
