import pg from 'pg';
import { SyncError, type Side } from '../errors.ts';
import { SESSION_SETTINGS } from '../sql/statements.ts';
import { redactUrl } from '../redact.ts';
import { createClient } from '../tls/client.ts';
import { isTlsError } from '../tls/errors.ts';
import { refusedInProduction, type TlsConfigError } from '../tls/settings.ts';
import { maskOptions, type Mask } from './targets.ts';

export { redactUrl } from '../redact.ts';

export type { Side } from '../errors.ts';

/**
 * Opens a client. `mask`: the HMAC pads for anonymization rules, set in the startup options of a
 * source session (statement logs never see them).
 */
export async function connect(url: string, side: Side, appName: string, opts: { mask?: Mask | null } = {}): Promise<pg.Client> {
  const what = side === 'source' ? 'production (source)' : 'staging (target)';
  const setting = side === 'source' ? '--from / DATABASE_URL' : '--to / STAGING_DATABASE_URL';
  const code = side === 'source' ? 'E_CONNECT_SOURCE' : 'E_CONNECT_TARGET';
  // TLS per the URL's sslmode (libpq's meaning) and PGSSL*; see tls/settings.ts.
  const refused = refusedInProduction(url);
  if (refused) {
    throw new SyncError(code, `refusing to connect to ${what} at ${redactUrl(url)}: it ${refused}, and NODE_ENV=production`,
      `set sslmode=verify-full&sslrootcert=<the server's CA file> in ${setting}; on a network you trust, DB_ALLOW_PLAINTEXT=true allows it`, { side });
  }
  let client: pg.Client;
  try {
    const options = side === 'source' ? maskOptions(opts.mask ?? null) : undefined;
    client = createClient(url, {
      application_name: appName,
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
      ...(options ? { options } : {}),
    }, { setting });
  } catch (e) {
    throw new SyncError(code, `cannot connect to ${what} at ${redactUrl(url)}: ${(e as Error).message}`, (e as TlsConfigError).hint ?? `check ${setting}`, { cause: e, side });
  }
  // An unhandled 'error' event (server gone while idle) would crash the process; queries still reject.
  client.on('error', () => {});
  try {
    await client.connect();
    // The source session cannot write even if a statement ended the read-only transaction it runs in.
    await client.query(side === 'source' ? `${SESSION_SETTINGS}; SET default_transaction_read_only = on` : SESSION_SETTINGS);
  } catch (e) {
    await client.end().catch(() => {});
    throw new SyncError(
      code,
      `cannot connect to ${what} at ${redactUrl(url)}: ${(e as Error).message}`,
      // A TLS failure is not "is the database up": its hint names the setting to change.
      isTlsError(e) ? e.hint : `check that the database is up and that ${setting} is right`,
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
