// The least-privilege roles of deploy/kubernetes/sql, applied with psql exactly as an operator
// would, to fresh "production" and "staging" databases; then each role is used for real.
// Roles are cluster-wide, so every run uses its own role names and drops them afterwards.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { runMigrations } from 'graphile-worker';
import { ADMIN_URL, createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { here } from './kustomize.ts';

const suffix = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
const READER = `elara_sync_reader_t${suffix}`;
const WRITER = `elara_sync_writer_t${suffix}`;
const PASSWORD = randomBytes(18).toString('base64url');

const SCHEMA = `
  CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL);
  CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL, "organizationId" uuid NOT NULL REFERENCES "Organization"(id));
  CREATE TABLE "AuditLog" (id bigserial PRIMARY KEY, event text NOT NULL);
  INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-000000000001', 'Acme');
  INSERT INTO "User" VALUES ('00000000-0000-0000-0000-0000000000a1', 'a@example.com', '00000000-0000-0000-0000-000000000001');
  INSERT INTO "AuditLog" (event) VALUES ('register');
  CREATE SCHEMA drizzle;
  CREATE TABLE drizzle.__drizzle_migrations (id serial PRIMARY KEY, hash text NOT NULL, created_at bigint);
`;

const dbs: TestDatabase[] = [];
let prod: TestDatabase;
let staging: TestDatabase;

function psql(url: string, file: string, vars: Record<string, string>) {
  const args = ['-X', '-q', '-d', url, '-f', join(here, 'sql', file)];
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
  return spawnSync('psql', args, { encoding: 'utf8' });
}

function applyOk(url: string, file: string, vars: Record<string, string>): void {
  const r = psql(url, file, vars);
  assert.equal(r.status, 0, `${file}: ${r.stderr}`);
  assert.ok(!r.stderr.includes(PASSWORD) && !r.stdout.includes(PASSWORD), 'psql output must not echo the password');
}

function as(url: string, role: string): string {
  const u = new URL(url);
  u.username = role;
  u.password = PASSWORD;
  return u.toString();
}

/** Runs statements in one session as `role`; returns the SQLSTATE of the first failure, or 'ok'. */
async function attempt(url: string, role: string, ...statements: string[]): Promise<string> {
  const c = new pg.Client({ connectionString: as(url, role) });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
    return 'ok';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  } finally {
    await c.end();
  }
}

async function show(url: string, role: string, setting: string): Promise<string> {
  const c = new pg.Client({ connectionString: as(url, role) });
  await c.connect();
  try {
    return (await c.query(`SELECT current_setting($1) AS v`, [setting])).rows[0].v;
  } finally {
    await c.end();
  }
}

before(async () => {
  prod = await createTestDatabase('roles_prod');
  staging = await createTestDatabase('roles_staging');
  dbs.push(prod, staging);
  await sql(prod.url, SCHEMA);
  await sql(staging.url, SCHEMA);
  await runMigrations({ connectionString: prod.url });
  await sql(prod.url, `SELECT graphile_worker.add_job('sync_registration', '{"email":"a@example.com"}'::json)`);
  // Applied twice: the files must be safe to run again.
  for (let i = 0; i < 2; i++) {
    applyOk(prod.url, 'production-roles.sql', { password: PASSWORD, reader_role: READER });
    applyOk(staging.url, 'staging-roles.sql', { password: PASSWORD, writer_role: WRITER });
  }
});

async function dropRole(role: string): Promise<void> {
  await sql(ADMIN_URL, `DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '${role}') THEN
      REVOKE SET ON PARAMETER session_replication_role FROM "${role}"; END IF; END $$`);
  await sql(ADMIN_URL, `DROP ROLE IF EXISTS "${role}"`);
}

after(async () => {
  for (const db of dbs) await db.drop();
  // Grants lived in the dropped databases; what is left of the roles is cluster-wide (the
  // SET privilege on session_replication_role is one such grant).
  await sql(ADMIN_URL, `DROP ROLE IF EXISTS "${READER}"`);
  await dropRole(WRITER);
});

describe('production reader', () => {
  test('is a limited login with read-only transactions and timeouts by default', async () => {
    const r = await sql(ADMIN_URL, `SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconnlimit, rolcanlogin FROM pg_roles WHERE rolname = $1`, [READER]);
    assert.deepEqual(r.rows[0], { rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolreplication: false, rolbypassrls: false, rolconnlimit: 4, rolcanlogin: true });
    assert.equal(await show(prod.url, READER, 'default_transaction_read_only'), 'on');
    assert.equal(await show(prod.url, READER, 'statement_timeout'), '15min');
    assert.equal(await show(prod.url, READER, 'lock_timeout'), '5s');
    assert.equal(await show(prod.url, READER, 'idle_in_transaction_session_timeout'), '1min');
  });

  test('can read the synced tables, job status, migrations and the system identifier', async () => {
    assert.equal(await attempt(prod.url, READER,
      `SELECT count(*) FROM "Organization"`, `SELECT count(*) FROM "User"`,
      `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`, `SELECT * FROM "User"`, `COMMIT`,
      `SELECT task_identifier, attempts, last_error, updated_at FROM graphile_worker.jobs`,
      `SELECT count(*) FROM drizzle.__drizzle_migrations`,
      `SELECT system_identifier FROM pg_control_system()`), 'ok');
  });

  test('cannot write even after turning read-only off: privileges deny it (42501)', async () => {
    const off = `SET default_transaction_read_only = off`;
    assert.equal(await attempt(prod.url, READER, off, `INSERT INTO "Organization" VALUES (gen_random_uuid(), 'x')`), '42501');
    assert.equal(await attempt(prod.url, READER, off, `UPDATE "User" SET email = 'b@example.com'`), '42501');
    assert.equal(await attempt(prod.url, READER, off, `DELETE FROM "User"`), '42501');
    assert.equal(await attempt(prod.url, READER, off, `TRUNCATE "User"`), '42501');
    assert.equal(await attempt(prod.url, READER, `BEGIN READ WRITE`, `INSERT INTO "Organization" VALUES (gen_random_uuid(), 'x')`), '42501');
    assert.equal(await attempt(prod.url, READER, off, `CREATE TABLE public.sneaky (id int)`), '42501');
    // Without the SET, the read-only default alone already stops it (25006).
    assert.equal(await attempt(prod.url, READER, `DELETE FROM "User"`), '25006');
  });

  test('cannot read other tables or the job payloads', async () => {
    assert.equal(await attempt(prod.url, READER, `SELECT * FROM "AuditLog"`), '42501');
    assert.equal(await attempt(prod.url, READER, `SELECT payload FROM graphile_worker._private_jobs`), '42501');
  });
});

describe('staging writer', () => {
  test('is a limited login with timeouts and read-write transactions', async () => {
    const r = await sql(ADMIN_URL, `SELECT rolsuper, rolcreatedb, rolcreaterole, rolconnlimit FROM pg_roles WHERE rolname = $1`, [WRITER]);
    assert.deepEqual(r.rows[0], { rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolconnlimit: 4 });
    assert.equal(await show(staging.url, WRITER, 'default_transaction_read_only'), 'off');
    assert.equal(await show(staging.url, WRITER, 'lock_timeout'), '5s');
  });

  test('can write the synced tables', async () => {
    assert.equal(await attempt(staging.url, WRITER,
      `BEGIN`,
      `INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-000000000002', 'Beta')`,
      `INSERT INTO "User" VALUES ('00000000-0000-0000-0000-0000000000b1', 'b@example.com', '00000000-0000-0000-0000-000000000002')
         ON CONFLICT (id) DO UPDATE SET email = excluded.email`,
      `UPDATE "User" SET email = 'c@example.com' WHERE id = '00000000-0000-0000-0000-0000000000b1'`,
      `DELETE FROM "User" WHERE id = '00000000-0000-0000-0000-0000000000b1'`,
      `DELETE FROM "Organization" WHERE id = '00000000-0000-0000-0000-000000000002'`,
      `COMMIT`), 'ok');
  });

  test('can keep its state in elara_sync: tables, functions, a tracking trigger on a synced table', async () => {
    assert.equal(await attempt(staging.url, WRITER,
      `CREATE TABLE IF NOT EXISTS elara_sync.runs (id bigserial PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT now(),
         finished_at timestamptz, status text NOT NULL, mode text NOT NULL DEFAULT 'run', duration_ms int, error text, tables jsonb)`,
      `INSERT INTO elara_sync.runs (status) VALUES ('ok')`,
      `CREATE TABLE elara_sync.local_rows (tbl text, key text, PRIMARY KEY (tbl, key))`,
      `CREATE FUNCTION elara_sync.track_local() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO elara_sync.local_rows VALUES (TG_TABLE_NAME, NEW.id::text) ON CONFLICT DO NOTHING; RETURN NEW; END $$`,
      `CREATE TRIGGER elara_sync_track_local AFTER INSERT ON public."User" FOR EACH ROW EXECUTE FUNCTION elara_sync.track_local()`,
      `CREATE OR REPLACE TRIGGER elara_sync_track_local AFTER INSERT ON public."User" FOR EACH ROW EXECUTE FUNCTION elara_sync.track_local()`,
      `SELECT count(*) FROM elara_sync.runs`), 'ok');
    // PostgreSQL: dropping a trigger needs the table's owner, not the TRIGGER privilege. The engine
    // can create and replace its triggers but removing them is an admin's job.
    assert.equal(await attempt(staging.url, WRITER, `DROP TRIGGER elara_sync_track_local ON public."User"`), '42501');
    await sql(staging.url, `DROP TRIGGER elara_sync_track_local ON public."User"`);
  });

  // The engine creates its state tables on first use. PostgreSQL checks CREATE on the database
  // before IF NOT EXISTS, and the writer deliberately lacks it, so the engine skips CREATE SCHEMA
  // when elara_sync exists.
  test('the engine can create its state tables as the writer on a fresh staging', async () => {
    const fresh = await createTestDatabase('roles_fresh');
    dbs.push(fresh);
    await sql(fresh.url, SCHEMA);
    applyOk(fresh.url, 'staging-roles.sql', { password: PASSWORD, writer_role: WRITER });
    const { ensureStateSchema } = await import('../../packages/sync/src/state/schema.ts');
    const c = new pg.Client({ connectionString: as(fresh.url, WRITER) });
    await c.connect();
    try {
      await ensureStateSchema(c);
    } finally {
      await c.end();
    }
  });

  test('a whole reconcile and an immediate sync run as the reader and the writer', async () => {
    const fresh = await createTestDatabase('roles_run');
    dbs.push(fresh);
    await sql(fresh.url, SCHEMA);
    await sql(fresh.url, `DELETE FROM "User"; INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-0000000000f1', 'QA org')`);
    applyOk(fresh.url, 'staging-roles.sql', { password: PASSWORD, writer_role: WRITER });
    await sql(prod.url, `INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-000000000002', 'Second') ON CONFLICT DO NOTHING`);
    const { runSync, syncKeys } = await import('../../packages/sync/src/index.ts');
    const tables = [{ name: 'Organization' }, { name: 'User' }];
    const r = await runSync({ sourceUrl: as(prod.url, READER), targetUrl: as(fresh.url, WRITER), tables });
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.ok, true);
    assert.deepEqual(r.tables.map((t) => [t.table, t.targetRows]), [['Organization', 3], ['User', 1]]);
    // A QA insert by the writer-less owner still works (the tracking trigger runs as its definer).
    await sql(fresh.url, `INSERT INTO "Organization" VALUES ('00000000-0000-0000-0000-0000000000f2', 'QA 2')`);
    const source = new pg.Pool({ connectionString: as(prod.url, READER) });
    const target = new pg.Pool({ connectionString: as(fresh.url, WRITER) });
    try {
      await sql(prod.url, `UPDATE "Organization" SET name = 'Second, renamed' WHERE id = '00000000-0000-0000-0000-000000000002'`);
      const k = await syncKeys(source, target, [{ table: 'Organization', keys: [{ id: '00000000-0000-0000-0000-000000000002' }] }]);
      assert.equal(k[0]!.upserted, 1);
    } finally {
      await source.end();
      await target.end();
    }
    const again = await runSync({ sourceUrl: as(prod.url, READER), targetUrl: as(fresh.url, WRITER), tables });
    assert.equal(again.ok, true);
    assert.equal((await sql(fresh.url, `SELECT count(*)::int AS n FROM "Organization" WHERE name LIKE 'QA%'`)).rows[0].n, 2);
  });

  test('cannot create in public, alter or truncate the synced tables, or touch other tables', async () => {
    assert.equal(await attempt(staging.url, WRITER, `CREATE TABLE public.sneaky (id int)`), '42501');
    assert.equal(await attempt(staging.url, WRITER, `ALTER TABLE "User" ADD COLUMN x int`), '42501');
    assert.equal(await attempt(staging.url, WRITER, `TRUNCATE "User"`), '42501');
    assert.equal(await attempt(staging.url, WRITER, `DROP TABLE "User"`), '42501');
    assert.equal(await attempt(staging.url, WRITER, `SELECT * FROM "AuditLog"`), '42501');
    assert.equal(await attempt(staging.url, WRITER, `INSERT INTO "AuditLog" (event) VALUES ('x')`), '42501');
    assert.equal(await attempt(staging.url, WRITER, `CREATE SCHEMA sneaky`), '42501');
  });

  test('holds no privilege on production, even on a shared cluster', async () => {
    assert.equal(await attempt(prod.url, WRITER, `INSERT INTO "Organization" VALUES (gen_random_uuid(), 'x')`), '42501');
    assert.equal(await attempt(prod.url, WRITER, `SELECT count(*) FROM "User"`), '42501');
  });
});

describe('the scripts refuse unsafe setups', () => {
  test('without a password variable they stop with a message and change nothing', async () => {
    const role = `elara_sync_reader_nopw_${suffix}`;
    const r = psql(prod.url, 'production-roles.sql', { reader_role: role });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /-v password=/);
    const exists = await sql(ADMIN_URL, `SELECT 1 FROM pg_roles WHERE rolname = $1`, [role]);
    assert.equal(exists.rowCount, 0);
  });

  test('where PUBLIC can create in schema public (pre-15 default), the staging script fails and rolls back', async () => {
    const legacy = await createTestDatabase('roles_legacy');
    dbs.push(legacy);
    await sql(legacy.url, SCHEMA + `GRANT CREATE ON SCHEMA public TO PUBLIC;`);
    const role = `elara_sync_writer_legacy_${suffix}`;
    const r = psql(legacy.url, 'staging-roles.sql', { password: PASSWORD, writer_role: role });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /REVOKE CREATE ON SCHEMA public FROM PUBLIC/);
    const exists = await sql(ADMIN_URL, `SELECT 1 FROM pg_roles WHERE rolname = $1`, [role]);
    assert.equal(exists.rowCount, 0, 'the whole script is one transaction');
  });

  test('a reader that could write somewhere is refused', async () => {
    const extra = await createTestDatabase('roles_extra');
    dbs.push(extra);
    const role = `elara_sync_reader_extra_${suffix}`;
    await sql(extra.url, SCHEMA + `CREATE ROLE "${role}"; GRANT INSERT ON "AuditLog" TO "${role}";`);
    try {
      const r = psql(extra.url, 'production-roles.sql', { password: PASSWORD, reader_role: role });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /could write to public\."AuditLog"/);
    } finally {
      await extra.drop();
      dbs.splice(dbs.indexOf(extra), 1);
      await dropRole(role);
    }
  });
});
