// Convergence you can trust, part 4 (real PostgreSQL):
// - schema drift that would change values is refused before any write, naming table and column;
//   a difference that loses nothing passes, and plan shows it;
// - config expressions cannot write: a second statement is refused when the config loads; volatile
//   functions and subqueries in transforms are refused; every source query runs read-only, so
//   nothing in a config changes production under run, plan or verify;
// - errors name the side that failed (and the field of a failing transform);
// - any legal identifier works everywhere, the tracking trigger included; inheritance parents
//   sync their own rows only; partitioned tables sync.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from '@elara/testkit';
import { parseConfig, runSync, verifySync, type TableConfig } from '../src/index.ts';
import { cases, tableRows } from './cases.ts';
import { createPair } from './helpers.ts';

async function withPair(name: string, source: string, target: string, fn: (urls: { s: string; t: string }) => Promise<void>) {
  const pair = await createPair(name, '');
  try {
    await sql(pair.source.url, source);
    await sql(pair.target.url, target);
    await fn({ s: pair.source.url, t: pair.target.url });
  } finally {
    await pair.drop();
  }
}

// ---------- schema drift ----------
const drift: Array<{ what: string; src: string; dst: string; lossy: boolean; rows: string }> = [
  { what: 'text in production, varchar(8) in staging', src: 'text', dst: 'varchar(8)', lossy: true, rows: `'a long value here'` },
  { what: 'numeric in production, numeric(6,2) in staging', src: 'numeric', dst: 'numeric(6,2)', lossy: true, rows: '1.23456' },
  { what: 'float8 in production, int in staging', src: 'float8', dst: 'int', lossy: true, rows: '1.5' },
  { what: 'numeric(6,2) in production, numeric(6,3) in staging (the text form changes)', src: 'numeric(6,2)', dst: 'numeric(6,3)', lossy: true, rows: '1.5' },
  { what: 'timestamptz(6) in production, timestamptz(0) in staging', src: 'timestamptz(6)', dst: 'timestamptz(0)', lossy: true, rows: `'2026-01-01 00:00:00.123456+00'` },
  { what: 'bigint in production, int in staging', src: 'bigint', dst: 'int', lossy: true, rows: '1' },
  { what: 'varchar(8) in production, text in staging', src: 'varchar(8)', dst: 'text', lossy: false, rows: `'short'` },
  { what: 'varchar(8) in production, varchar(16) in staging', src: 'varchar(8)', dst: 'varchar(16)', lossy: false, rows: `'short'` },
  { what: 'int in production, bigint in staging', src: 'int', dst: 'bigint', lossy: false, rows: '42' },
  { what: 'numeric(6,2) in production, numeric in staging', src: 'numeric(6,2)', dst: 'numeric', lossy: false, rows: '1.50' },
  { what: 'timestamp(3) in production, timestamp in staging', src: 'timestamp(3)', dst: 'timestamp', lossy: false, rows: `'2026-01-01 00:00:00.123'` },
];
for (const d of drift) {
  test(`schema drift: ${d.what} is ${d.lossy ? 'refused before any write, naming table and column' : 'accepted, and plan notes it'}`, async () => {
    await withPair('drift', `CREATE TABLE "T" (id int PRIMARY KEY, v ${d.src}); INSERT INTO "T" VALUES (1, ${d.rows})`,
      `CREATE TABLE "T" (id int PRIMARY KEY, v ${d.dst}); INSERT INTO "T" VALUES (7, NULL)`, async ({ s, t }) => {
        const opts = { sourceUrl: s, targetUrl: t, tables: [{ name: 'T' }] };
        if (d.lossy) {
          for (const r of [await runSync(opts), await runSync({ ...opts, dryRun: true })]) {
            assert.equal(r.error?.code, 'E_SCHEMA_MISMATCH');
            assert.match(r.error!.message, /column T\.v: type .* in production but .* in staging/);
          }
          await assert.rejects(verifySync(opts), /column T\.v/);
          assert.deepEqual(await tableRows(t, '"T"'), ['{"id":7,"v":null}'], 'staging as it was');
        } else {
          const plan = await runSync({ ...opts, dryRun: true });
          assert.equal(plan.error, undefined, plan.error?.message);
          assert.ok(plan.notes.some((n) => n.startsWith('column T.v:') && n.includes('values are copied unchanged')), plan.notes.join('; '));
          const r = await runSync(opts);
          assert.equal(r.error, undefined);
          assert.deepEqual((await sql(t, `SELECT v::text FROM "T" WHERE id = 1`)).rows[0].v, (await sql(s, `SELECT v::text FROM "T"`)).rows[0].v);
        }
      });
  });
}

test('schema drift: enum labels that differ are refused; extra labels in staging are accepted', async () => {
  await withPair('drift_enum', `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); CREATE TABLE "T" (id int PRIMARY KEY, m mood); INSERT INTO "T" VALUES (1, 'happy')`,
    `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE "T" (id int PRIMARY KEY, m mood)`, async ({ s, t }) => {
      const r = await runSync({ sourceUrl: s, targetUrl: t, tables: [{ name: 'T' }] });
      assert.equal(r.error?.code, 'E_SCHEMA_MISMATCH');
      assert.match(r.error!.message, /column T\.m: enum mood has label\(s\) 'happy' in production that mood in staging lacks/);
      await sql(t, `ALTER TYPE mood ADD VALUE 'happy'; ALTER TYPE mood ADD VALUE 'ecstatic'`);
      const ok = await runSync({ sourceUrl: s, targetUrl: t, tables: [{ name: 'T' }] });
      assert.equal(ok.error, undefined, ok.error?.message);
      assert.equal((await sql(t, `SELECT m::text FROM "T"`)).rows[0].m, 'happy');
    });
});

// ---------- config expressions cannot write ----------
test('config: an expression with a second statement, a comment, a stray parenthesis or a parameter is refused at load, naming the field', () => {
  const bad = [
    `"x'; DROP TABLE \\"User\\"; --"`,
    `"lower(email)) FROM \\"User\\"; DELETE FROM \\"User\\" WHERE (true"`,
    `"email -- comment"`,
    `"email /* c */"`,
    `"md5($1)"`,
    `"'unterminated"`,
    `"(email"`,
  ];
  for (const expr of bad) {
    assert.throws(() => parseConfig(`tables:\n  - name: User\n    transforms: { email: ${expr} }\n`, 'test.yml'),
      (e: Error & { code?: string }) => e.code === 'E_CONFIG' && /tables\.0 \(User\)\.transforms\.email/.test(e.message), expr);
  }
  assert.throws(() => parseConfig(`tables:\n  - name: User\n    where: "true; UPDATE x SET y = 1"\n`, 'test.yml'), /tables\.0 \(User\)\.where has a ";"/);
  // Inside strings, quoted identifiers and dollar quotes, the same characters are just text.
  const ok = parseConfig(`tables:\n  - name: User\n    transforms: { email: "'a;b--c' || \\"we;ird\\" || $q$ ) ; $q$" }\n    where: "email <> E'it\\\\'s;'"\n`, 'ok.yml');
  assert.equal(ok.tables[0]!.name, 'User');
});

const ORGS = `CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL, secret text, score int); CREATE TABLE audit (n int);
  INSERT INTO "Organization" VALUES (1, 'One', 's1'), (2, 'Two', 's2'), (3, 'Three', 's3');
  CREATE FUNCTION noisy_op(text, text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$ BEGIN INSERT INTO audit VALUES (3); RETURN $1; END $$;
  CREATE OPERATOR ### (LEFTARG = text, RIGHTARG = text, FUNCTION = noisy_op);
  CREATE SEQUENCE side_effect;
  CREATE FUNCTION noisy() RETURNS text LANGUAGE plpgsql VOLATILE AS $$ BEGIN INSERT INTO audit VALUES (1); RETURN 'x'; END $$;
  CREATE FUNCTION liar() RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN INSERT INTO audit VALUES (2); RETURN 'x'; END $$;
  CREATE FUNCTION lookup(int) RETURNS text LANGUAGE sql STABLE AS $$ SELECT name FROM "Organization" WHERE id = $1 $$;`;
const refused: Array<{ what: string; cfg: TableConfig; message: RegExp; code?: string }> = [
  { what: 'a volatile function (random)', cfg: { name: 'Organization', transforms: { secret: `md5(random()::text)` } }, message: /Organization\.transforms\.secret calls random\(\), which is volatile/ },
  { what: 'nextval (writes a sequence)', cfg: { name: 'Organization', transforms: { secret: `nextval('side_effect')::text` } }, message: /calls nextval\(\), which is volatile/ },
  { what: 'a user function that writes', cfg: { name: 'Organization', transforms: { secret: `noisy()` } }, message: /calls noisy\(\), which is volatile/ },
  { what: 'a subquery reading another table', cfg: { name: 'Organization', transforms: { secret: `(SELECT max(n)::text FROM audit)` } }, message: /transforms\.secret reads other tables/ },
  { what: 'a STABLE user function that reads other tables', cfg: { name: 'Organization', transforms: { secret: `lookup(id)` } }, message: /calls lookup\(\), a function that is not IMMUTABLE/ },
  { what: 'a row filter calling a volatile function', cfg: { name: 'Organization', where: `random() < 0.5` }, message: /Organization\.where calls random\(\)/ },
  { what: 'an expression production cannot parse', cfg: { name: 'Organization', transforms: { secret: `no_such_column || 'x'` } }, message: /production \(source\) rejected Organization\.transforms\.secret: column "no_such_column" does not exist/ },
  { what: 'a transform whose type does not cast to the column\'s', cfg: { name: 'Organization', transforms: { score: `now()` } }, message: /production \(source\) rejected Organization\.transforms\.score: cannot cast type timestamp with time zone to integer/ },
  { what: 'a function that lies about being IMMUTABLE and writes', cfg: { name: 'Organization', transforms: { secret: `liar()` } }, message: /production \(source\) rejected Organization\.transforms\.secret: INSERT is not allowed in a non-volatile function/ },
];
for (const r of refused) {
  test(`config: ${r.what} is refused before anything is read or written, naming the field`, async () => {
    await withPair('cfg', ORGS, `CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL, secret text, score int)`, async ({ s, t }) => {
      const opts = { sourceUrl: s, targetUrl: t, tables: [r.cfg] };
      for (const res of [await runSync(opts), await runSync({ ...opts, dryRun: true })]) {
        assert.equal(res.error?.code, 'E_CONFIG', res.error?.message);
        assert.match(res.error!.message, r.message);
      }
      await assert.rejects(verifySync(opts), r.message);
      assert.equal((await sql(t, `SELECT count(*)::int AS n FROM "Organization"`)).rows[0].n, 0);
      assert.equal((await sql(s, `SELECT count(*)::int AS n FROM audit`)).rows[0].n, 0, 'production unchanged');
    });
  });
}

test('config: a writer no check can see (a volatile function behind an operator) cannot change production: the source runs read-only; the error names production and the field', async () => {
  await withPair('cfg_op', ORGS, `CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL, secret text, score int)`, async ({ s, t }) => {
    const tables = [{ name: 'Organization', transforms: { secret: `name ### 'x'` } }];
    for (const dryRun of [false, true]) {
      const r = await runSync({ sourceUrl: s, targetUrl: t, tables, dryRun });
      assert.equal(r.error?.code, 'E_SOURCE', r.error?.message);
      assert.match(r.error!.message, /production \(source\) rejected the source query of table Organization \(field Organization\.transforms\.secret\): cannot execute INSERT in a read-only transaction/);
      assert.doesNotMatch(r.error!.message, /staging/);
    }
    await assert.rejects(verifySync({ sourceUrl: s, targetUrl: t, tables }), /read-only transaction/);
    assert.equal((await sql(s, `SELECT count(*)::int AS n FROM audit`)).rows[0].n, 0, 'production unchanged');
    assert.equal((await sql(t, `SELECT count(*)::int AS n FROM "Organization"`)).rows[0].n, 0, 'staging unchanged');
  });
});

// ---------- errors name the side ----------
test('errors: a transform that fails on some row at run time names production, the table and the field; staging is as it was', async () => {
  await withPair('err_src', ORGS, `CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL, secret text, score int)`, async ({ s, t }) => {
    const r = await runSync({ sourceUrl: s, targetUrl: t, tables: [{ name: 'Organization', transforms: { secret: `(10 / (id - 2))::text` } }] });
    assert.equal(r.error?.code, 'E_SOURCE');
    assert.equal(r.error?.side, 'source');
    assert.match(r.error!.message, /production \(source\) rejected the source query of table Organization \(field Organization\.transforms\.secret\): division by zero/);
    assert.doesNotMatch(r.error!.message, /staging/);
    assert.equal((await sql(t, `SELECT count(*)::int AS n FROM "Organization"`)).rows[0].n, 0);
  });
});

test('errors: a constraint only staging has names staging, the table and the SQLSTATE; nothing is written', async () => {
  await withPair('err_dst', ORGS, `CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL CHECK (name <> 'Two'), secret text, score int)`, async ({ s, t }) => {
    const r = await runSync({ sourceUrl: s, targetUrl: t, tables: [{ name: 'Organization' }] });
    assert.equal(r.error?.code, 'E_APPLY');
    assert.equal(r.error?.side, 'target');
    assert.match(r.error!.message, /staging \(target\) rejected the changes of table Organization: .*SQLSTATE 23514/);
    assert.doesNotMatch(r.error!.message, /Two/, 'no row value in the message');
    assert.equal((await sql(t, `SELECT count(*)::int AS n FROM "Organization"`)).rows[0].n, 0);
  });
});

// ---------- identifiers, inheritance, partitions ----------
const WEIRD = `CREATE SCHEMA "we$ird ""s"".x";
  CREATE TABLE "we$ird ""s"".x"."a.b $c ""d"" $fn$" ("k$ey" int, "Quoted ""col""" text, "sp ace" text, "$elara$" text, PRIMARY KEY ("k$ey"));
  CREATE TABLE "we$ird ""s"".x"."child; x" (id int PRIMARY KEY, "parent key" int REFERENCES "we$ird ""s"".x"."a.b $c ""d"" $fn$" ("k$ey"));`;
const W = `"we$ird ""s"".x"."a.b $c ""d"" $fn$"`;
const WC = `"we$ird ""s"".x"."child; x"`;
cases([
  {
    name: 'identifiers: names with $, quotes, dots, spaces and $fn$ work for the run, the tracking trigger and QA rows',
    schema: WEIRD, tables: [W, WC],
    source: `INSERT INTO ${W} VALUES (1, 'a', 'b', 'c'), (2, 'x', 'y', 'z'); INSERT INTO ${WC} VALUES (1, 1), (2, 2)`,
    steps: [
      { target: `INSERT INTO ${W} VALUES (100, 'qa', 'qa', 'qa')`, run: true },
      { source: `UPDATE ${W} SET "sp ace" = 'changed' WHERE "k$ey" = 1; DELETE FROM ${WC} WHERE id = 2; DELETE FROM ${W} WHERE "k$ey" = 2` },
    ],
    local: { [W]: `"k$ey" = 100` },
  },
  {
    name: 'inheritance: a legacy parent syncs its own rows only (ONLY); the children are left alone',
    schema: `CREATE TABLE p (id int PRIMARY KEY, v text); CREATE TABLE c (extra text) INHERITS (p);`,
    targetSchema: `INSERT INTO c VALUES (500, 'staging child', 'x')`,
    tables: ['p'],
    source: `INSERT INTO p VALUES (1, 'parent'); INSERT INTO c VALUES (2, 'prod child', 'y')`,
    steps: [{ source: `UPDATE p SET v = 'parent 2' WHERE id = 1; UPDATE c SET v = 'child 2'` }],
    equal: [],
    check: async ({ pair }) => {
      assert.deepEqual((await sql(pair.target.url, `SELECT id, v FROM ONLY p ORDER BY id`)).rows, [{ id: 1, v: 'parent 2' }]);
      assert.deepEqual((await sql(pair.target.url, `SELECT id, v FROM c ORDER BY id`)).rows, [{ id: 500, v: 'staging child' }]);
    },
  },
  {
    name: 'partitioned tables sync through their partitions',
    schema: `CREATE TABLE ev (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
      CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu'); CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');`,
    tables: ['ev'],
    source: `INSERT INTO ev VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'eu', 'c')`,
    steps: [{ source: `UPDATE ev SET v = 'b2' WHERE id = 2; DELETE FROM ev WHERE id = 3; INSERT INTO ev VALUES (4, 'us', 'd')` }],
  },
]);
