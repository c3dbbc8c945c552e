// Applies the committed drizzle-kit SQL migrations (./drizzle) to one database. Used identically
// for production and staging, by `npm run db:migrate`, by the embedded default and by tests.
import { fileURLToPath } from 'node:url';
import { createClient, createPool, type ConnectOptions } from '@elara/sync';
import { drizzle } from 'drizzle-orm/node-postgres';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import { Logger, runMigrations } from 'graphile-worker';

export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../drizzle', import.meta.url));

// Any constant works; it only has to be the same in every process that migrates.
const MIGRATION_LOCK_KEY = 720_301_517;

export interface MigrateOptions {
  /** Also install graphile-worker's schema (the outbox). Production only; staging never runs jobs. */
  outbox?: boolean;
  /** Names the database in TLS errors, e.g. `{ label: 'staging', setting: 'STAGING_DATABASE_URL' }`. */
  label?: ConnectOptions;
}

// Connections honour the URL's TLS settings (sslmode, sslrootcert, PGSSL*), as every other path.
const DEFAULT_LABEL: ConnectOptions = { setting: 'the database URL' };

export async function migrateDatabase(url: string, options: MigrateOptions = {}): Promise<void> {
  const client = createClient(url, {}, options.label ?? DEFAULT_LABEL);
  await client.connect();
  try {
    // Two processes starting at once (two replicas, a test and a server) must not race the DDL.
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      await migrate(drizzle(client), { migrationsFolder: MIGRATIONS_FOLDER });
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    await client.end();
  }
  if (options.outbox) await migrateOutbox(url, options.label);
}

/** graphile-worker's own migrations (schema graphile_worker), idempotent and self-locking. */
export async function migrateOutbox(url: string, label: ConnectOptions = DEFAULT_LABEL): Promise<void> {
  const pool = createPool(url, { max: 2 }, label);
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  try {
    await runMigrations({ pgPool: pool, logger: silentLogger });
  } finally {
    await pool.end();
  }
}

const silentLogger = new Logger(() => () => {});

/** Marks a database as production; the sync engine refuses to write to a database carrying it. */
export async function markProduction(url: string): Promise<void> {
  const client = createClient(url, {}, DEFAULT_LABEL);
  await client.connect();
  try {
    const { rows } = await client.query<{ db: string }>('SELECT current_database() AS db');
    const db = rows[0]!.db.replaceAll('"', '""');
    await client.query(`ALTER DATABASE "${db}" SET elara.environment = 'production'`);
  } finally {
    await client.end();
  }
}
