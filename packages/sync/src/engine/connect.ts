import pg from 'pg';
import { SyncError, type Side } from '../errors.ts';
import { SESSION_SETTINGS } from '../sql/statements.ts';
import { redactUrl } from '../redact.ts';

export { redactUrl } from '../redact.ts';

export type { Side } from '../errors.ts';

export async function connect(url: string, side: Side, appName: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    application_name: appName,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  });
  // An unhandled 'error' event (server gone while idle) would crash the process; queries still reject.
  client.on('error', () => {});
  try {
    await client.connect();
    // The source session cannot write even if a statement ended the read-only transaction it runs in.
    await client.query(side === 'source' ? `${SESSION_SETTINGS}; SET default_transaction_read_only = on` : SESSION_SETTINGS);
  } catch (e) {
    await client.end().catch(() => {});
    const what = side === 'source' ? 'production (source)' : 'staging (target)';
    throw new SyncError(
      side === 'source' ? 'E_CONNECT_SOURCE' : 'E_CONNECT_TARGET',
      `cannot connect to ${what} at ${redactUrl(url)}: ${(e as Error).message}`,
      `check that the database is up and that ${side === 'source' ? '--from / DATABASE_URL' : '--to / STAGING_DATABASE_URL'} is right`,
      { cause: e, side },
    );
  }
  return client;
}

export interface ServerIdentity {
  systemIdentifier: string;
  database: string;
  environment: string | null;
  hashProbe: string;
}

export async function identify(client: pg.ClientBase): Promise<ServerIdentity> {
  const r = await client.query(`SELECT (SELECT system_identifier FROM pg_control_system())::text AS sysid,
      current_database() AS db, current_setting('elara.environment', true) AS env,
      hashtextextended('elara-sync probe', 0)::text AS probe`);
  const x = r.rows[0];
  return { systemIdentifier: x.sysid, database: x.db, environment: x.env || null, hashProbe: x.probe };
}

/** Refuses, before any write, a target that is the source or is marked as production. */
export function guardTarget(source: ServerIdentity, target: ServerIdentity, opts: { allowProductionTarget?: boolean }): void {
  if (source.systemIdentifier === target.systemIdentifier && source.database === target.database) {
    throw new SyncError('E_SAME_DATABASE',
      `source and target are the same database (${target.database} on server ${target.systemIdentifier}); nothing was written`,
      'point --to / STAGING_DATABASE_URL at the staging database; this cannot be overridden');
  }
  if (target.environment === 'production' && !opts.allowProductionTarget) {
    throw new SyncError('E_PRODUCTION_TARGET',
      `the target database ${target.database} is marked as production (elara.environment = 'production'); nothing was written`,
      `check --to / STAGING_DATABASE_URL. If this really is staging, remove the marker (ALTER DATABASE ${target.database} RESET elara.environment) or pass --allow-production-target`);
  }
}
