// Real databases for tests: each test file creates its own uniquely named databases on the
// local PostgreSQL and drops them when it is done (kept and printed when KEEP_TEST_DB=1).
import pg from 'pg';
import { randomBytes } from 'node:crypto';

export const ADMIN_URL = process.env.TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

export function databaseUrl(name: string, base = ADMIN_URL): string {
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

export async function createTestDatabase(prefix: string): Promise<TestDatabase> {
  const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  return {
    name,
    url: databaseUrl(name),
    async drop() {
      if (process.env.KEEP_TEST_DB === '1') {
        console.error(`kept test database ${name}`);
        return;
      }
      const c = new pg.Client({ connectionString: ADMIN_URL });
      await c.connect();
      try {
        // A pool's end() resolves before its connections' Terminate reaches the server; forcing the
        // drop then makes the server send those clients a FATAL error they no longer listen for (an
        // uncaught exception in the test file). Give closing sessions a moment to go first.
        for (let i = 0; i < 50; i++) {
          const r = await c.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`, [name]);
          if (r.rows[0].n === 0) break;
          await new Promise((res) => setTimeout(res, 20));
        }
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Runs one or more SQL statements on a database URL with a short-lived client. */
export async function sql(url: string, text: string, values?: unknown[]): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text, values);
  } finally {
    await c.end();
  }
}

/** A table's content as a fingerprint: row count and md5 of its rows in key order. */
export async function fingerprint(url: string, table: string, orderBy: string): Promise<{ count: number; md5: string }> {
  const r = await sql(url,
    `SELECT count(*)::int AS count, coalesce(md5(string_agg(t::text, '|' ORDER BY ${orderBy})), '') AS md5 FROM ${table} t`);
  return r.rows[0];
}
