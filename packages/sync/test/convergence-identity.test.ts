// Convergence you can trust, part 1 (table-driven, real PostgreSQL):
// - identity, not equality: values `=` calls equal but that are not the same are written;
// - staging changes the engine did not see (triggers bypassed, TRUNCATE, a re-created table, an
//   older dump restored) are found and repaired;
// - staging's own triggers do not rewrite synced values (as with logical replication).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sql } from '@elara/testkit';
import { runSync, verifySync } from '../src/index.ts';
import { cases, tableRows } from './cases.ts';
import { createPair } from './helpers.ts';

const T = `CREATE TABLE m (id int PRIMARY KEY, f float8, n numeric, j jsonb, iv interval, c text, arr numeric[], ts timestamptz(3), r real)`;
const ROWS = `INSERT INTO m VALUES
  (1, 0, 1.0, '{"a": 1.0}', '1 day', 'Abc', '{1.0, 2}', '2026-01-01 00:00:00+00', 0),
  (2, 1.5, 2.50, '[1.0]', '1 mon', 'x', NULL, NULL, 0.1)`;
const ORG = `CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL, "apiKey" text NOT NULL UNIQUE, "updatedAt" timestamptz(3) NOT NULL DEFAULT '2026-01-01');
  CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text, "organizationId" uuid NOT NULL REFERENCES "Organization"(id), "updatedAt" timestamptz(3) NOT NULL DEFAULT '2026-01-01');`;
const o = (n: number) => `00000000-0000-0000-0000-0000000000${String(n).padStart(2, '0')}`;
const u = (n: number) => `00000000-0000-0000-0000-0000000001${String(n).padStart(2, '0')}`;
const SEED = `INSERT INTO "Organization" (id, name, "apiKey") VALUES ('${o(1)}', 'One', 'k1'), ('${o(2)}', 'Two', 'k2');
  INSERT INTO "User" (id, email, name, "organizationId") SELECT ('00000000-0000-0000-0000-0000000001' || lpad(g::text, 2, '0'))::uuid, 'u' || g || '@x.test', 'U' || g,
    CASE WHEN g % 2 = 0 THEN '${o(1)}'::uuid ELSE '${o(2)}'::uuid END FROM generate_series(1, 20) g;`;

// ---------- identity ----------
cases([
  {
    name: 'identity: -0 vs 0, 1.0 vs 1.00, jsonb numerics, 1 day vs 24 hours, numeric arrays, real -0 are written',
    schema: T, tables: ['m'], source: ROWS,
    steps: [{ source: `UPDATE m SET f = '-0', n = 1.00, j = '{"a": 1.00}', iv = '24 hours', arr = '{1.00, 2}', r = '-0' WHERE id = 1; UPDATE m SET n = 2.5, j = '[1.00]', iv = '30 days' WHERE id = 2` }],
    check: async ({ pair, last }) => {
      assert.equal(last.tables[0]!.updated, 2);
      const r = (await sql(pair.target.url, `SELECT f::text, n::text, j::text, iv::text, arr::text, r::text FROM m ORDER BY id`)).rows;
      assert.deepEqual(r[0], { f: '-0', n: '1.00', j: '{"a": 1.00}', iv: '24:00:00', arr: '{1.00,2}', r: '-0' });
      assert.deepEqual(r[1], { f: '1.5', n: '2.5', j: '[1.00]', iv: '30 days', arr: null, r: '0.1' });
    },
  },
  {
    name: 'identity: citext values that differ only in case, and a citext primary key whose case changes',
    schema: `CREATE EXTENSION IF NOT EXISTS citext; CREATE TABLE ci (k citext PRIMARY KEY, v citext, w text)`,
    tables: ['ci'], source: `INSERT INTO ci VALUES ('Key', 'Value', 'a'), ('other', 'x', 'b')`,
    steps: [{ source: `UPDATE ci SET v = 'VALUE' WHERE k = 'key'; UPDATE ci SET k = 'OTHER' WHERE k = 'other'` }],
    check: async ({ pair }) => {
      assert.deepEqual((await sql(pair.target.url, `SELECT k::text, v::text FROM ci ORDER BY k`)).rows, [{ k: 'Key', v: 'VALUE' }, { k: 'OTHER', v: 'x' }]);
    },
  },
  {
    name: 'identity: a nondeterministic (case-insensitive) collation',
    schema: `CREATE COLLATION IF NOT EXISTS ci_und (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
      CREATE TABLE col (id int PRIMARY KEY, name text COLLATE ci_und UNIQUE)`,
    tables: ['col'], source: `INSERT INTO col VALUES (1, 'Ada'), (2, 'bob')`,
    steps: [{ source: `UPDATE col SET name = 'ADA' WHERE id = 1` }],
    check: async ({ pair }) => assert.equal((await sql(pair.target.url, `SELECT name::text FROM col WHERE id = 1`)).rows[0].name, 'ADA'),
  },
  {
    name: 'identity: verify sees equal-but-different values as different before the run',
    schema: T, tables: ['m'], source: ROWS,
    steps: [{ source: `UPDATE m SET f = '-0', n = 1.00 WHERE id = 1` }],
    check: async ({ pair }) => {
      await sql(pair.source.url, `UPDATE m SET n = 1.000 WHERE id = 1`);
      const v = await verifySync({ sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'm' }] });
      assert.equal(v.tables[0]!.changed, 1);
    },
  },
]);

// ---------- staging changes the engine did not see ----------
const edits = (name: string, target: string, extra: Partial<Parameters<typeof cases>[0][number]> = {}) => ({
  name: `staging changed behind the engine's back: ${name}`, schema: ORG, tables: ['Organization', 'User'], source: SEED, steps: [{ target }], ...extra,
});
cases([
  edits('UPDATE with session_replication_role = replica', `SET session_replication_role = replica; UPDATE "User" SET name = 'edited' WHERE email = 'u3@x.test'`),
  edits('DELETE with session_replication_role = replica', `SET session_replication_role = replica; DELETE FROM "User" WHERE email IN ('u3@x.test', 'u4@x.test')`),
  edits('INSERT with session_replication_role = replica (not recorded as QA data: removed)', `SET session_replication_role = replica; INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${u(99)}', 'ghost@x.test', 'ghost', '${o(1)}')`),
  edits('DISABLE TRIGGER USER, then UPDATE and DELETE', `ALTER TABLE "User" DISABLE TRIGGER USER; UPDATE "User" SET name = 'x' WHERE email = 'u5@x.test'; DELETE FROM "User" WHERE email = 'u6@x.test'; ALTER TABLE "User" ENABLE TRIGGER USER`),
  edits('TRUNCATE', `TRUNCATE "User"`),
  edits('TRUNCATE CASCADE with triggers bypassed', `SET session_replication_role = replica; TRUNCATE "Organization" CASCADE`),
  edits('the table dropped and re-created by a migration reset', `DROP TABLE "User"; CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text, "organizationId" uuid NOT NULL REFERENCES "Organization"(id), "updatedAt" timestamptz(3) NOT NULL DEFAULT '2026-01-01')`),
  {
    ...edits('a bypassing edit, then VACUUM FULL (the rewrite keeps row versions, so the edit is still found)', ''),
    steps: [{ target: `SET session_replication_role = replica; UPDATE "Organization" SET name = 'drift' WHERE "apiKey" = 'k1'` }, { target: `VACUUM FULL "Organization"` }],
  },
  {
    name: 'staging changed behind the engine\'s back: an older dump restored by TRUNCATE + INSERT in one transaction (erased and changed rows repaired)',
    schema: ORG, tables: ['Organization', 'User'], source: SEED,
    steps: [
      { target: `CREATE TABLE dump AS SELECT * FROM "User"` },
      { source: `DELETE FROM "User" WHERE email = 'u1@x.test'; UPDATE "User" SET name = 'newer' WHERE email = 'u2@x.test'`, run: true },
      { target: `BEGIN; TRUNCATE "User"; INSERT INTO "User" SELECT * FROM dump; COMMIT;` },
    ],
    equal: ['"Organization"', '"User"'],
  },
  {
    name: 'staging changed behind the engine\'s back: an older dump restored by DELETE + INSERT with triggers on (not taken for QA data)',
    schema: ORG, tables: ['Organization', 'User'], source: SEED,
    steps: [
      { target: `CREATE TABLE dump AS SELECT * FROM "User"` },
      { source: `DELETE FROM "User" WHERE email = 'u1@x.test'; UPDATE "User" SET name = 'newer' WHERE email = 'u2@x.test'`, run: true },
      { target: `BEGIN; DELETE FROM "User"; INSERT INTO "User" SELECT * FROM dump; COMMIT;` },
    ],
    equal: ['"Organization"', '"User"'],
  },
  {
    name: 'staging changed behind the engine\'s back: an older dump restored into a re-created table',
    schema: ORG, tables: ['Organization', 'User'], source: SEED,
    steps: [
      { target: `CREATE TABLE dump AS SELECT * FROM "User"` },
      { source: `DELETE FROM "User" WHERE email = 'u1@x.test'; UPDATE "User" SET name = 'newer' WHERE email = 'u2@x.test'`, run: true },
      { target: `DROP TABLE "User"; CREATE TABLE "User" (LIKE dump); ALTER TABLE "User" ADD PRIMARY KEY (id), ADD UNIQUE (email), ADD FOREIGN KEY ("organizationId") REFERENCES "Organization"(id); INSERT INTO "User" SELECT * FROM dump` },
    ],
    equal: ['"Organization"', '"User"'],
  },
  {
    name: 'staging changed behind the engine\'s back: QA rows made after a re-created table are kept',
    schema: ORG, tables: ['Organization', 'User'], source: SEED,
    steps: [
      { target: `DROP TABLE "User"; CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text, "organizationId" uuid NOT NULL REFERENCES "Organization"(id), "updatedAt" timestamptz(3) NOT NULL DEFAULT '2026-01-01')`, run: true },
      { target: `INSERT INTO "User" (id, email, name, "organizationId") VALUES ('${u(90)}', 'qa@x.test', 'QA', '${o(1)}')` },
    ],
    local: { '"User"': `email = 'qa@x.test'` },
  },
]);

test('a no-change run after a bypassing edit does not claim equality: plan shows the repair, status keeps the last checked time', async () => {
  const pair = await createPair('conv_status', ORG);
  try {
    await sql(pair.source.url, SEED);
    const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'User' }] };
    await runSync(opts);
    await sql(pair.target.url, `SET session_replication_role = replica; UPDATE "User" SET name = 'edited' WHERE email = 'u7@x.test'`);
    const plan = await runSync({ ...opts, dryRun: true });
    const user = plan.tables.find((t) => t.table === 'User')!;
    assert.equal(user.updated, 1, 'plan sees the edit');
    assert.equal(user.checks?.target, 'changed');
    const run = await runSync(opts);
    assert.equal(run.tables.find((t) => t.table === 'User')!.updated, 1);
    const again = await runSync(opts);
    assert.deepEqual(again.tables.map((t) => t.checks?.compared), ['none', 'none'], 'both sides checked and unchanged');
  } finally {
    await pair.drop();
  }
});

// ---------- staging's own triggers ----------
const BUMP = `CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW."updatedAt" := clock_timestamp(); RETURN NEW; END $$;
  CREATE TRIGGER bump BEFORE INSERT OR UPDATE ON "User" FOR EACH ROW EXECUTE FUNCTION bump();`;
cases([
  {
    name: 'staging triggers: a BEFORE INSERT OR UPDATE trigger (on both sides, from the same migrations) does not rewrite synced values',
    schema: `${ORG} ${BUMP}`, tables: ['Organization', 'User'], source: SEED,
    steps: [{ source: `UPDATE "User" SET name = 'renamed' WHERE email = 'u1@x.test'; INSERT INTO "User" (id, email, "organizationId") VALUES ('${u(50)}', 'new@x.test', '${o(1)}')` }],
  },
  {
    name: 'staging triggers: staging-only triggers (uppercase a name, write an audit row) do not fire on synced rows',
    schema: ORG, tables: ['Organization', 'User'], source: SEED,
    targetSchema: `CREATE TABLE audit (id serial PRIMARY KEY, what text);
      CREATE FUNCTION up() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
      CREATE FUNCTION aud() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (what) VALUES (TG_OP); RETURN NULL; END $$;
      CREATE TRIGGER up BEFORE INSERT OR UPDATE ON "Organization" FOR EACH ROW EXECUTE FUNCTION up();
      CREATE TRIGGER aud AFTER INSERT OR UPDATE OR DELETE ON "User" FOR EACH ROW EXECUTE FUNCTION aud();`,
    steps: [{ source: `UPDATE "Organization" SET name = 'mixed Case' WHERE "apiKey" = 'k1'; DELETE FROM "User" WHERE email = 'u2@x.test'` }],
    check: async ({ pair, last }) => {
      assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM audit`)).rows[0].n, 0);
      assert.ok(last.notes.some((n) => n.includes('staging trigger up on Organization does not fire')), last.notes.join('; '));
    },
  },
]);

test('staging triggers: rows QA writes by hand still fire staging triggers (only the engine applies as a replica)', async () => {
  const pair = await createPair('conv_trig', `${ORG} ${BUMP}`);
  try {
    await sql(pair.source.url, SEED);
    await runSync({ sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'User' }] });
    await sql(pair.target.url, `INSERT INTO "User" (id, email, "organizationId", "updatedAt") VALUES ('${u(60)}', 'qa@x.test', '${o(1)}', '2000-01-01')`);
    const r = await tableRows(pair.target.url, '"User"', `email = 'qa@x.test'`);
    assert.doesNotMatch(r[0]!, /2000-01-01/);
  } finally {
    await pair.drop();
  }
});
