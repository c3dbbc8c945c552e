// The immediate sync of a few keys: the same apply path as a run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { sql } from '@elara/testkit';
import { syncKeys, runSync, verifySync } from '../src/index.ts';
import { createPair, rows, type Pair } from './helpers.ts';

const SCHEMA = `
CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL, "apiKey" text NOT NULL UNIQUE);
CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, "organizationId" uuid NOT NULL REFERENCES "Organization"(id), "lastLoginAt" timestamp(3));`;
const O = '00000000-0000-0000-0000-000000000001';
const U = '00000000-0000-0000-0000-000000000101';

let pair: Pair;
let source: pg.Pool;
let target: pg.Pool;
before(async () => {
  pair = await createPair('keys', SCHEMA);
  source = new pg.Pool({ connectionString: pair.source.url });
  target = new pg.Pool({ connectionString: pair.target.url });
});
after(async () => {
  await source.end();
  await target.end();
  await pair.drop();
});

const registration = [{ table: 'Organization', keys: [{ id: O }] }, { table: 'User', keys: [{ id: U }] }];

test('copies a registration (organization first), then is idempotent', async () => {
  await sql(pair.source.url, `INSERT INTO "Organization" VALUES ('${O}', 'Acme', 'k1'); INSERT INTO "User" VALUES ('${U}', 'a@x.test', '${O}', '2026-01-02 03:04:05.678')`);
  // Listed child first on purpose: the engine orders by foreign keys.
  const r = await syncKeys(source, target, [...registration].reverse());
  assert.deepEqual(r.map((x) => [x.table, x.upserted]), [['User', 1], ['Organization', 1]]);
  assert.deepEqual(await rows(pair.target.url, '"User"'), await rows(pair.source.url, '"User"'));
  const again = await syncKeys(source, target, registration);
  assert.deepEqual(again.map((x) => [x.upserted, x.unchanged]), [[0, 1], [0, 1]]);
});

test('an update and a delete at the source reach the target; other rows are untouched', async () => {
  await sql(pair.target.url, `INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-0000000000aa', 'QA', 'qa')`);
  await sql(pair.source.url, `UPDATE "Organization" SET name = 'Acme 2' WHERE id = '${O}'; DELETE FROM "User" WHERE id = '${U}'`);
  const r = await syncKeys(source, target, registration);
  assert.deepEqual(r.map((x) => [x.table, x.upserted, x.deleted]), [['Organization', 1, 0], ['User', 0, 1]]);
  assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "Organization" WHERE name = 'QA'`)).rows[0].n, 1);
});

test('a key held by a QA row is a conflict, not an overwrite', async () => {
  const q = '00000000-0000-0000-0000-0000000000bb';
  await sql(pair.target.url, `INSERT INTO "Organization" VALUES ('${q}', 'QA owned', 'qa-bb')`);
  await sql(pair.source.url, `INSERT INTO "Organization" VALUES ('${q}', 'Prod', 'prod-bb')`);
  const r = await syncKeys(source, target, [{ table: 'Organization', keys: [{ id: q }] }]);
  assert.equal(r[0]!.conflicts, 1);
  assert.equal((await sql(pair.target.url, `SELECT name FROM "Organization" WHERE id = '${q}'`)).rows[0].name, 'QA owned');
});

test('waits for a reconcile that is applying, then applies (no lost or deleted row)', async () => {
  const o2 = '00000000-0000-0000-0000-000000000002';
  await sql(pair.source.url, `INSERT INTO "Organization" VALUES ('${o2}', 'Later', 'k2')`);
  const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'User' }] };
  const [run, keys] = await Promise.all([runSync(opts), syncKeys(source, target, [{ table: 'Organization', keys: [{ id: o2 }] }])]);
  assert.equal(run.error, undefined);
  assert.equal(keys[0]!.upserted + keys[0]!.unchanged, 1);
  assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "Organization" WHERE id = '${o2}'`)).rows[0].n, 1);
});

test('a missing primary-key value is a clear error', async () => {
  await assert.rejects(syncKeys(source, target, [{ table: 'Organization', keys: [{ name: 'x' }] }]), /no value for primary-key column id/);
});

test('an email erased in production and registered again reaches staging in the immediate sync', async () => {
  const o = '00000000-0000-0000-0000-000000000003';
  const oldUser = '00000000-0000-0000-0000-000000000301';
  const newUser = '00000000-0000-0000-0000-000000000302';
  await sql(pair.source.url, `INSERT INTO "Organization" VALUES ('${o}', 'Erase Co', 'k3'); INSERT INTO "User" VALUES ('${oldUser}', 'again@x.test', '${o}', NULL)`);
  await syncKeys(source, target, [{ table: 'Organization', keys: [{ id: o }] }, { table: 'User', keys: [{ id: oldUser }] }]);
  // GDPR erasure, then the same person registers again before any reconcile has run.
  await sql(pair.source.url, `DELETE FROM "User" WHERE id = '${oldUser}'; INSERT INTO "User" VALUES ('${newUser}', 'again@x.test', '${o}', NULL)`);
  const r = await syncKeys(source, target, [{ table: 'User', keys: [{ id: newUser }] }]);
  assert.equal(r[0]!.upserted, 1);
  assert.equal((await sql(pair.target.url, `SELECT id FROM "User" WHERE email = 'again@x.test'`)).rows[0].id, newUser);
  // The erased row waits, with a placeholder email, for its own sync or the next reconcile.
  await syncKeys(source, target, [{ table: 'User', keys: [{ id: oldUser }] }]);
  assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "User" WHERE id = '${oldUser}'`)).rows[0].n, 0);
});

test('a run after immediate syncs reports staging row counts as they are', async () => {
  const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'User' }] };
  await runSync(opts);
  const o = '00000000-0000-0000-0000-000000000004';
  await sql(pair.source.url, `INSERT INTO "Organization" VALUES ('${o}', 'Counted', 'k4')`);
  await syncKeys(source, target, [{ table: 'Organization', keys: [{ id: o }] }]);
  const r = await runSync(opts);
  const org = r.tables.find((t) => t.table === 'Organization')!;
  const staged = (await sql(pair.target.url, `SELECT count(*)::int AS n FROM "Organization"`)).rows[0].n;
  assert.equal(org.targetRows, staged);
});

test('a row the immediate sync delivered and production deleted before the next run is deleted by that run', async () => {
  const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: [{ name: 'Organization' }, { name: 'User' }] };
  await runSync(opts);
  const o = '00000000-0000-0000-0000-000000000007';
  const u = '00000000-0000-0000-0000-000000000707';
  await sql(pair.source.url, `INSERT INTO "Organization" VALUES ('${o}', 'Brief', 'k7'); INSERT INTO "User" VALUES ('${u}', 'brief@x.test', '${o}', NULL)`);
  await syncKeys(source, target, [{ table: 'Organization', keys: [{ id: o }] }, { table: 'User', keys: [{ id: u }] }]);
  // Registered and erased within one interval, without its erasure reaching staging.
  await sql(pair.source.url, `DELETE FROM "User" WHERE id = '${u}'; DELETE FROM "Organization" WHERE id = '${o}'`);
  const r = await runSync(opts);
  assert.deepEqual(r.tables.map((t) => [t.table, t.deleted]), [['Organization', 1], ['User', 1]]);
  assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "User" WHERE id = '${u}'`)).rows[0].n, 0);
  assert.equal((await sql(pair.target.url, `SELECT count(*)::int AS n FROM "Organization" WHERE id = '${o}'`)).rows[0].n, 0);
  // (Organization still differs by the QA-owned row of an earlier test, which verify reports.)
  const v = await verifySync({ ...opts, tables: [{ name: 'User' }] });
  assert.equal(v.equal, true, JSON.stringify(v.tables));
});
