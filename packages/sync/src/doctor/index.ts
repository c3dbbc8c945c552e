// `elara-sync doctor`: the seed's troubleshooting list as checks. Each check is one line with a
// pass/fail, what was found, and what to do. The doctor never throws for a database it cannot reach
// or read: that is a failed check. It never prints a password (URLs go through redact.ts).
import pg from 'pg';
import { describeUrl, redactUrl, scrubSecrets } from '../redact.ts';
import { introspectTables, parseTableName } from '../catalog/introspect.ts';
import { orderTables } from '../plan/table-order.ts';
import type { TableConfig } from '../plan/table-plan.ts';
import { compilePlans, validateOnSource } from '../engine/plans.ts';
import { planTargetFor, type ResolvedTarget } from '../engine/targets.ts';
import { DEFAULT_TABLES } from '../config.ts';
import { SyncError } from '../errors.ts';
import { createClient, tlsStatus } from '../tls/client.ts';
import { isTlsError } from '../tls/errors.ts';
import { isLoopbackHost, resolveTlsSettings } from '../tls/settings.ts';
import { assessWatch, readWatchFacts, unreadableWatchChecks } from './watch.ts';


export interface DoctorOptions {
  /** Production (read-only). Default: DATABASE_URL is the caller's job; the doctor reads no env itself. */
  sourceUrl?: string;
  /** Staging. */
  targetUrl?: string;
  /** The reconcile schedule in seconds; the last run must be younger than two of these. Default 300. */
  intervalSeconds?: number;
  /** Synced tables (`Table`, `schema.Table`, or configs with transforms and filters). Default ["Organization", "User"]. */
  tables?: Array<string | TableConfig>;
  /** The target being checked (its rules and subset go into the table plans check; its name, `staging` by default, names the watch slot). */
  target?: ResolvedTarget;
  /** The watch slot's retained WAL above which the doctor warns. Default 1 GiB. */
  slotRetainedWarnBytes?: number;
}

export interface DoctorCheck {
  name: string;
  ok: boolean;
  /** Passed, but something should change (printed as WARN with its hint; the exit code stays 0). */
  warning?: boolean;
  detail: string;
  hint?: string;
}

export interface DoctorResult {
  ok: boolean;
  checks: DoctorCheck[];
}

export const DEFAULT_INTERVAL_SECONDS = 300;
/** The graphile-worker task the backend enqueues for each registration (immediate sync). */
export const IMMEDIATE_SYNC_TASK = 'sync_registration';

const CONNECT_TIMEOUT_MS = 5_000;
const QUERY_TIMEOUT_MS = 15_000;

interface TableRef {
  schema: string;
  name: string;
  /** `schema.name`, the key used for FK edges. */
  key: string;
  /** How operators see it: `User` for public tables, `schema.Table` otherwise. */
  label: string;
}

interface Side {
  role: 'production' | 'staging';
  url: string;
  client: pg.Client | null;
  error: string | null;
  /** The fix for a connect failure that has a specific one (TLS). */
  hint?: string;
}

/** Days before a server certificate's expiry at which the doctor warns. */
const CERT_WARN_DAYS = 30;

export async function runDoctor(options: DoctorOptions): Promise<DoctorResult> {
  const intervalSeconds = options.intervalSeconds ?? DEFAULT_INTERVAL_SECONDS;
  const configs: TableConfig[] = (options.tables && options.tables.length > 0 ? options.tables : DEFAULT_TABLES)
    .map((t) => (typeof t === 'string' ? { name: t } : t));
  const tables = configs.map((c) => parseTable(c.name));
  const urls = [options.sourceUrl, options.targetUrl];
  const scrub = (m: string) => scrubSecrets(m, urls);
  const checks: DoctorCheck[] = [];

  checks.push(urlCheck('production url set', options.sourceUrl, 'DATABASE_URL', '--from'));
  checks.push(urlCheck('staging url set', options.targetUrl, 'STAGING_DATABASE_URL', '--to'));

  const source = await openSide('production', options.sourceUrl, scrub);
  const target = await openSide('staging', options.targetUrl, scrub);
  try {
    checks.push(await reachableCheck(source, scrub));
    checks.push(await reachableCheck(target, scrub));
    checks.push(await tlsCheck(source, scrub));
    checks.push(await tlsCheck(target, scrub));

    const both = source.client && target.client ? { s: source.client, t: target.client } : null;
    const skipBoth = skipped([source, target]);

    checks.push(both ? await distinctCheck(both.s, both.t, scrub) : skipBoth('distinct databases'));
    checks.push(both ? await migrationsCheck(both.s, both.t, scrub) : skipBoth('migrations applied'));

    const tablesCheck = both ? await tablesPresentCheck(both.s, both.t, tables, scrub) : skipBoth('tables present');
    checks.push(tablesCheck);
    checks.push(both ? await fkOrderCheck(both.s, both.t, tables, scrub) : skipBoth('fk order'));
    checks.push(both && tablesCheck.ok ? await planCheck(both.s, both.t, configs, scrub, options.target) : both
      ? { name: 'table plans', ok: false, detail: 'not checked: a synced table is missing or has no primary key', hint: 'fix "tables present" first' }
      : skipBoth('table plans'));
    checks.push(target.client ? await replicaRoleCheck(target.client, scrub) : skipped([target])('apply without staging triggers'));

    checks.push(target.client
      ? await lastReconcileCheck(target.client, intervalSeconds, scrub)
      : skipped([target])('last reconcile'));
    checks.push(source.client
      ? await immediateSyncCheck(source.client, scrub)
      : skipped([source])('immediate sync failures (1h)'));
    checks.push(...await watchChecks(source, options.target?.name ?? 'staging', scrub, options.slotRetainedWarnBytes));

    for (const table of tables) {
      const name = `row count ${table.label}`;
      checks.push(both && tablesCheck.ok ? await rowCountCheck(both.s, both.t, table, scrub) : both
        ? { name, ok: false, detail: 'not checked: a synced table is missing or has no primary key', hint: 'fix "tables present" first' }
        : skipBoth(name));
    }
  } finally {
    await Promise.all([source, target].map((side) => side.client?.end().catch(() => undefined)));
  }
  return { ok: checks.every((c) => c.ok), checks };
}

/** One line per check, as the CLI prints them: `PASS name: detail` plus an indented hint. */
export function formatDoctorReport(result: DoctorResult): string {
  const lines: string[] = [];
  for (const c of result.checks) {
    lines.push(`${!c.ok ? 'FAIL' : c.warning ? 'WARN' : 'PASS'} ${c.name}: ${c.detail}`);
    if (c.hint && (!c.ok || c.warning)) lines.push(`     fix: ${c.hint}`);
  }
  const failed = result.checks.filter((c) => !c.ok).length;
  const warned = result.checks.filter((c) => c.ok && c.warning).length;
  const warnings = warned ? ` (${warned} with a warning)` : '';
  lines.push(failed === 0 ? `all ${result.checks.length} checks passed${warnings}` : `${failed} of ${result.checks.length} checks failed${warnings}`);
  return lines.join('\n');
}

function parseTable(spec: string): TableRef {
  const { schema, name } = parseTableName(spec);
  return { schema, name, key: `${schema}.${name}`, label: schema === 'public' ? name : `${schema}.${name}` };
}

function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

function urlCheck(name: string, url: string | undefined, env: string, flag: string): DoctorCheck {
  if (!url) return { name, ok: false, detail: `${env} is not set`, hint: `set ${env} or pass ${flag} <postgresql://…>` };
  return { name, ok: true, detail: redactUrl(url) };
}

async function openSide(role: Side['role'], url: string | undefined, scrub: (m: string) => string): Promise<Side> {
  if (!url) return { role, url: '', client: null, error: 'url not set' };
  let client: pg.Client;
  const setting = role === 'production' ? '--from / DATABASE_URL' : '--to / STAGING_DATABASE_URL';
  try {
    // The same TLS rules as every other connection (sslmode, sslrootcert, PGSSL*).
    client = createClient(url, {
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      statement_timeout: QUERY_TIMEOUT_MS,
      application_name: 'elara-sync doctor',
    }, { setting });
  } catch (err) {
    return { role, url, client: null, error: scrub(messageOf(err)), hint: (err as { hint?: string }).hint };
  }
  // A connection dropped later (server restart) emits 'error' on the client; without a listener
  // node would crash the process instead of failing the next query.
  client.on('error', () => undefined);
  try {
    await client.connect();
    // The doctor only reads. On production make that a property of the session, not a promise.
    if (role === 'production') await client.query('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY');
    return { role, url, client, error: null };
  } catch (err) {
    await client.end().catch(() => undefined);
    return { role, url, client: null, error: scrub(messageOf(err)), ...(isTlsError(err) ? { hint: err.hint } : {}) };
  }
}

async function reachableCheck(side: Side, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = `${side.role} reachable`;
  if (!side.url) return { name, ok: false, detail: 'not checked: url not set', hint: `set the ${side.role} url first` };
  const where = describeUrl(side.url);
  if (!side.client) {
    return {
      name, ok: false, detail: `${where}: ${side.error ?? 'cannot connect'}`,
      hint: side.hint ?? connectHint(side.error ?? '', side.role),
    };
  }
  try {
    const r = await side.client.query<{ version: string }>(`SELECT current_setting('server_version') AS version`);
    return { name, ok: true, detail: `${where}: PostgreSQL ${r.rows[0]?.version ?? '?'}` };
  } catch (err) {
    return { name, ok: false, detail: `${where}: ${scrub(messageOf(err))}`, hint: connectHint(messageOf(err), side.role) };
  }
}

/**
 * Whether this side's connection is encrypted (pg_stat_ssl: the server's own view), with which
 * protocol, and what was verified. Verification is known from the mode: a certificate that fails
 * the check of verify-ca / verify-full ends the connection, so a connected client passed it.
 */
async function tlsCheck(side: Side, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = `${side.role} tls`;
  if (!side.client) return skipped([side])(name);
  const env = side.role === 'production' ? 'DATABASE_URL' : 'STAGING_DATABASE_URL';
  try {
    const settings = resolveTlsSettings(side.url);
    const host = settings.host || process.env.PGHOST || 'localhost';
    const r = await side.client.query<{ ssl: boolean | null; version: string | null; cipher: string | null; bits: number | null }>(
      'SELECT ssl, version, cipher, bits FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    const row = r.rows[0];
    if (!row?.ssl) {
      const why = settings.mode === 'disable' ? 'sslmode=disable' : `sslmode=${settings.mode}${settings.modeFrom === 'default' ? ', the default' : ''}, and the server does not offer TLS`;
      if (isLoopbackHost(host)) return { name, ok: true, detail: `off (${why}); ${host} is this machine, so nothing crosses a network` };
      return {
        name, ok: false, detail: `off (${why}): traffic to ${host} crosses the network unencrypted`,
        hint: `use sslmode=verify-full&sslrootcert=<the server's CA file> in ${env} (and ssl = on on the server)`,
      };
    }
    const st = tlsStatus(side.client);
    const ca = st.rootCert === 'system' ? 'the CAs Node.js trusts' : `CA ${st.rootCert}`;
    const verified = st.verify === 'full' ? `server certificate verified against ${ca}, host name ${host} matches (sslmode=${settings.mode})`
      : st.verify === 'ca' ? `server certificate verified against ${ca}, host name not checked (sslmode=${settings.mode})`
        : `server certificate NOT verified (sslmode=${settings.mode}): encrypted, but the server is not authenticated`;
    const parts = [`on, ${row.version} ${row.cipher}${row.bits ? ` (${row.bits} bits)` : ''}`, verified];
    const validTo = st.server?.validTo ?? null;
    const days = validTo ? Math.floor((validTo.getTime() - Date.now()) / 86_400_000) : null;
    if (st.server) parts.push(`certificate ${st.server.subject ?? '?'} from ${st.server.issuer ?? '?'}${validTo ? `, expires ${validTo.toISOString().slice(0, 10)} (in ${days} day${days === 1 ? '' : 's'})` : ''}`);
    const detail = parts.join('; ');
    if (st.verify === 'none') {
      return { name, ok: true, warning: true, detail, hint: `add sslrootcert=<the server's CA file> and sslmode=verify-full to ${env}, so a server that is not yours cannot pose as it` };
    }
    if (days !== null && days < CERT_WARN_DAYS) {
      return { name, ok: true, warning: true, detail, hint: `the server's certificate expires in ${days} day${days === 1 ? '' : 's'}: renew it (docs/operations.md#certificate-rotation)` };
    }
    return { name, ok: true, detail };
  } catch (err) {
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'pg_stat_ssl must be readable (it is for every role by default)' };
  }
}

function connectHint(message: string, role: Side['role']): string {
  const env = role === 'production' ? 'DATABASE_URL' : 'STAGING_DATABASE_URL';
  if (/ssl|certificate|TLS/.test(message)) return `TLS failed: check sslmode and sslrootcert in ${env}; docs/operations.md#tls`;
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|timeout|ETIMEDOUT|EHOSTUNREACH/i.test(message)) {
    return `is the ${role} database up and reachable from here? check host and port in ${env}, the NetworkPolicy (egress 5432) and firewall`;
  }
  if (/password authentication|no pg_hba|authentication/i.test(message)) {
    return `check the user and password in ${env} (the Kubernetes Secret) and pg_hba.conf; see deploy/kubernetes/README.md for the sync roles`;
  }
  if (/does not exist/i.test(message)) return `the database or role in ${env} does not exist: check its name`;
  return `check ${env}; docs/operations.md#staging-down`;
}

function skipped(sides: Side[]) {
  const down = sides.filter((s) => !s.client).map((s) => s.role);
  return (name: string): DoctorCheck => ({
    name, ok: false, detail: `not checked: ${down.join(' and ')} not reachable`,
    hint: 'fix the reachability checks above first',
  });
}

async function distinctCheck(s: pg.Client, t: pg.Client, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'distinct databases';
  const q = `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid, current_database() AS db`;
  try {
    const [a, b] = await Promise.all([s.query<{ sysid: string; db: string }>(q), t.query<{ sysid: string; db: string }>(q)]);
    const ra = a.rows[0];
    const rb = b.rows[0];
    if (ra && rb && ra.sysid === rb.sysid && ra.db === rb.db) {
      return {
        name, ok: false, detail: `production and staging are the same database (${ra.db})`,
        hint: 'E_SAME_DATABASE: STAGING_DATABASE_URL must point at the staging database, never production',
      };
    }
    const sameCluster = ra?.sysid === rb?.sysid;
    return { name, ok: true, detail: `${ra?.db} → ${rb?.db}${sameCluster ? ' (same cluster, different databases)' : ' (different clusters)'}` };
  } catch (err) {
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'the role needs EXECUTE on pg_control_system() (granted by default on PostgreSQL 15)' };
  }
}

interface MigrationState { present: boolean; count: number; lastHash: string | null; error?: string }

async function readMigrations(c: pg.Client, scrub: (m: string) => string): Promise<MigrationState> {
  try {
    const exists = await c.query<{ present: boolean }>(`SELECT to_regclass('drizzle.__drizzle_migrations') IS NOT NULL AS present`);
    if (!exists.rows[0]?.present) return { present: false, count: 0, lastHash: null };
    const r = await c.query<{ count: number; hash: string | null }>(
      `SELECT (SELECT count(*)::int FROM drizzle.__drizzle_migrations) AS count,
              (SELECT hash FROM drizzle.__drizzle_migrations ORDER BY created_at DESC NULLS LAST, id DESC LIMIT 1) AS hash`);
    return { present: true, count: r.rows[0]?.count ?? 0, lastHash: r.rows[0]?.hash ?? null };
  } catch (err) {
    return { present: false, count: 0, lastHash: null, error: scrub(messageOf(err)) };
  }
}

async function migrationsCheck(s: pg.Client, t: pg.Client, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'migrations applied';
  const [a, b] = await Promise.all([readMigrations(s, scrub), readMigrations(t, scrub)]);
  for (const [state, role, env] of [[a, 'production', 'DATABASE_URL'], [b, 'staging', 'STAGING_DATABASE_URL']] as const) {
    if (state.error) return { name, ok: false, detail: `${role}: ${state.error}`, hint: `grant the ${role} role SELECT on drizzle.__drizzle_migrations (deploy/kubernetes/sql)` };
    if (!state.present) {
      return { name, ok: false, detail: `${role} has no drizzle.__drizzle_migrations table`, hint: `run the migrations: ${env}=… npm run db:migrate` };
    }
  }
  if (a.count !== b.count || a.lastHash !== b.lastHash) {
    const behind = a.count > b.count ? 'staging' : 'production';
    return {
      name, ok: false,
      detail: `production has ${a.count} migrations (last ${short(a.lastHash)}), staging ${b.count} (last ${short(b.lastHash)})`,
      hint: `migrate ${behind} to the same version before syncing (a column on one side only is E_SCHEMA_MISMATCH): npm run db:migrate`,
    };
  }
  return { name, ok: true, detail: `${a.count} migrations on both, last ${short(a.lastHash)}` };
}

function short(hash: string | null): string {
  return hash ? hash.slice(0, 12) : 'none';
}

const TABLES_SQL = `
  SELECT u.s AS schema, u.t AS name, c.oid IS NOT NULL AS present,
         EXISTS (SELECT 1 FROM pg_constraint p WHERE p.conrelid = c.oid AND p.contype = 'p') AS has_pk
    FROM unnest($1::text[], $2::text[]) AS u(s, t)
    LEFT JOIN pg_namespace n ON n.nspname = u.s
    LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.t AND c.relkind IN ('r', 'p')`;

async function tablesPresentCheck(s: pg.Client, t: pg.Client, tables: TableRef[], scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'tables present';
  const args = [tables.map((x) => x.schema), tables.map((x) => x.name)];
  try {
    const problems: string[] = [];
    for (const [c, role] of [[s, 'production'], [t, 'staging']] as const) {
      const r = await c.query<{ schema: string; name: string; present: boolean; has_pk: boolean }>(TABLES_SQL, args);
      for (const row of r.rows) {
        const label = row.schema === 'public' ? row.name : `${row.schema}.${row.name}`;
        if (!row.present) problems.push(`${label} missing on ${role} (E_SCHEMA_MISMATCH)`);
        else if (!row.has_pk) problems.push(`${label} has no primary key on ${role} (E_NO_PRIMARY_KEY)`);
      }
    }
    if (problems.length > 0) {
      return { name, ok: false, detail: problems.join('; '), hint: 'run the migrations on both sides, or remove the table from elara-sync.yml / --tables; every synced table needs a primary key' };
    }
    return { name, ok: true, detail: `${tables.map((x) => x.label).join(', ')} on both, each with a primary key` };
  } catch (err) {
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'check the roles can read pg_catalog and use the schemas' };
  }
}



async function fkOrderCheck(s: pg.Client, t: pg.Client, tables: TableRef[], scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'fk order';
  try {
    // The engine's own catalog reader and planner on staging (which enforces the constraints the
    // apply must satisfy), so the doctor and a run can never disagree.
    const names = tables.map((x) => `${x.schema}.${x.name}`);
    const staging = await introspectTables(t, names);
    const production = await introspectTables(s, names);
    const order = orderTables([...staging.values()]);
    const problems = order.outsideReferences.map((o) => `${o.table} references ${o.references} (${o.constraint}), which is not synced`);
    if (problems.length > 0) {
      return { name, ok: false, detail: problems.join('; '), hint: 'add the referenced tables to elara-sync.yml (parents must be synced too)' };
    }
    const label = (q: string) => staging.get(q)?.display ?? q;
    const details = [`parents first: ${order.upsertOrder.map(label).join(' → ')}`];
    const selfRefs = [...staging.values()].filter((x) => x.foreignKeys.some((f) => f.refTable === x.qualified)).map((x) => x.display);
    if (selfRefs.length > 0) details.push(`self-references: ${selfRefs.join(', ')}`);
    if (order.cycles.length > 0) details.push(`deferrable cycles: ${order.cycles.map((c) => c.join(', ')).join('; ')}`);
    const prodOrder = orderTables([...production.values()]).upsertOrder.map(label).join(' → ');
    if (prodOrder !== order.upsertOrder.map(label).join(' → ')) details.push(`production order differs: ${prodOrder}`);
    return { name, ok: true, detail: details.join('; ') };
  } catch (err) {
    if (err instanceof SyncError) return { name, ok: false, detail: err.message, hint: err.hint };
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'check the roles can read pg_catalog' };
  }
}

/** The table plans every path uses: schema drift (types, enums), expressions, and what `plan` would note. */
async function planCheck(s: pg.Client, t: pg.Client, tables: TableConfig[], scrub: (m: string) => string, target?: ResolvedTarget): Promise<DoctorCheck> {
  const name = 'table plans';
  if (target?.anonymize && !target.mask) {
    return { name, ok: false, detail: `target ${target.name} is anonymized and ELARA_SYNC_MASK_KEY is not set`, hint: 'set ELARA_SYNC_MASK_KEY (at least 16 random characters) where elara-sync and the backend run' };
  }
  try {
    const plans = await compilePlans(s, t, tables, target ? await planTargetFor(target) : null);
    await validateOnSource(s, plans);
    const notes = plans.flatMap((p) => p.notes);
    return { name, ok: true, detail: `${plans.length} table(s) compile: columns, types and rules agree${notes.length ? `; notes: ${notes.join('; ')}` : ''}` };
  } catch (err) {
    if (err instanceof SyncError) return { name, ok: false, detail: scrub(err.message), hint: err.hint };
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'check the roles can read pg_catalog' };
  }
}

/** The engine applies with session_replication_role = replica (staging's triggers do not fire); the writer role must be allowed to set it. */
async function replicaRoleCheck(t: pg.Client, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'apply without staging triggers';
  try {
    await t.query('BEGIN');
    await t.query('SET LOCAL session_replication_role = replica');
    await t.query('ROLLBACK');
    return { name, ok: true, detail: 'the staging role may set session_replication_role = replica (staging triggers do not fire on synced rows)' };
  } catch (err) {
    await t.query('ROLLBACK').catch(() => undefined);
    return {
      name, ok: false, detail: scrub(messageOf(err)),
      hint: 'GRANT SET ON PARAMETER session_replication_role TO <staging sync role> (PostgreSQL 15+; deploy/kubernetes/sql/staging-roles.sql)',
    };
  }
}

async function lastReconcileCheck(t: pg.Client, intervalSeconds: number, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'last reconcile';
  const limit = 2 * intervalSeconds;
  try {
    const exists = await t.query<{ present: boolean }>(`SELECT to_regclass('elara_sync.runs') IS NOT NULL AS present`);
    if (!exists.rows[0]?.present) {
      return { name, ok: false, detail: 'no run yet (staging has no elara_sync.runs)', hint: 'run npx elara-sync run (and check the CronJob: kubectl get cronjob elara-sync)' };
    }
    // Ages are computed by the database so that clock skew between this host and staging does not matter.
    const newest = await t.query<{ id: string; status: string; error: string | null; age: number; tables: unknown }>(
      `SELECT id::text, status, error, tables,
              extract(epoch FROM now() - coalesce(finished_at, started_at))::float8 AS age
         FROM elara_sync.runs WHERE mode = 'run' ORDER BY started_at DESC, id DESC LIMIT 1`);
    const success = await t.query<{ id: string; status: string; age: number }>(
      `SELECT id::text, status, extract(epoch FROM now() - finished_at)::float8 AS age
         FROM elara_sync.runs
        WHERE mode = 'run' AND status IN ('ok', 'conflicts') AND finished_at IS NOT NULL
        ORDER BY finished_at DESC, id DESC LIMIT 1`);
    const last = newest.rows[0];
    if (!last) return { name, ok: false, detail: 'no run yet (elara_sync.runs is empty)', hint: 'run npx elara-sync run' };
    const ok = success.rows[0];
    const ageText = ok ? `last success #${ok.id} ${Math.round(ok.age)} s ago` : 'no successful run';
    if (last.status === 'error') {
      return {
        name, ok: false,
        detail: `newest run #${last.id} failed ${Math.round(last.age)} s ago: ${scrub(oneLine(last.error ?? 'no message'))}; ${ageText}`,
        hint: 'npx elara-sync doctor / npx elara-sync run to see the error; docs/errors.md lists each code; docs/operations.md#reconcile-failing',
      };
    }
    if (!ok || ok.age >= limit) {
      return {
        name, ok: false, detail: `${ageText} (limit ${limit} s = 2 × ${intervalSeconds} s)${last.status === 'running' ? `; run #${last.id} running for ${Math.round(last.age)} s` : ''}`,
        hint: 'is the CronJob running? kubectl get cronjob,jobs -l app.kubernetes.io/name=elara-sync; then npx elara-sync run',
      };
    }
    const conflicts = ok.status === 'conflicts';
    return {
      name, ok: true,
      detail: `${ageText} (limit ${limit} s)${conflicts ? ', with conflicts' : ''}${last.status === 'running' ? `; run #${last.id} in progress` : ''}`,
      ...(conflicts ? { hint: 'staging rows block production keys: docs/operations.md#conflicts-with-qa-rows' } : {}),
    };
  } catch (err) {
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'the staging role needs USAGE on schema elara_sync and SELECT on elara_sync.runs' };
  }
}

async function immediateSyncCheck(s: pg.Client, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = 'immediate sync failures (1h)';
  try {
    const exists = await s.query<{ present: boolean }>(`SELECT to_regclass('graphile_worker.jobs') IS NOT NULL AS present`);
    if (!exists.rows[0]?.present) {
      return { name, ok: true, detail: 'no graphile_worker schema on production: immediate sync has not run here (reconcile only)' };
    }
    // graphile-worker deletes a job when it succeeds, so what is left is waiting or failing.
    const r = await s.query<{ failed: number; waiting: number; last_error: string | null; max_attempts: number | null }>(
      `SELECT count(*) FILTER (WHERE last_error IS NOT NULL AND updated_at > now() - interval '1 hour')::int AS failed,
              count(*)::int AS waiting,
              (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL))[1] AS last_error,
              max(attempts)::int AS max_attempts
         FROM graphile_worker.jobs WHERE task_identifier = $1`, [IMMEDIATE_SYNC_TASK]);
    const row = r.rows[0] ?? { failed: 0, waiting: 0, last_error: null, max_attempts: null };
    if (row.failed > 0) {
      return {
        name, ok: false,
        detail: `${row.failed} ${IMMEDIATE_SYNC_TASK} jobs failed in the last hour (${row.waiting} waiting, up to ${row.max_attempts ?? 0} attempts); latest: ${scrub(oneLine(row.last_error ?? '')).slice(0, 200)}`,
        hint: 'usually staging is down: check "staging reachable"; jobs retry by themselves and the next reconcile fills any gap; docs/operations.md#outbox-backlog',
      };
    }
    return { name, ok: true, detail: `no failures in the last hour, ${row.waiting} jobs waiting` };
  } catch (err) {
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'the production role needs USAGE on schema graphile_worker and SELECT on graphile_worker.jobs (deploy/kubernetes/sql)' };
  }
}

/** What `elara-sync watch` needs from production, and its slot's state (watch.ts). */
async function watchChecks(source: Side, target: string, scrub: (m: string) => string, slotRetainedWarnBytes?: number): Promise<DoctorCheck[]> {
  if (!source.client) return unreadableWatchChecks(target, 'not checked: production not reachable', 'fix the reachability checks above first');
  try {
    return assessWatch(await readWatchFacts(source.client, target), { slotRetainedWarnBytes });
  } catch (err) {
    return unreadableWatchChecks(target, scrub(messageOf(err)));
  }
}

async function rowCountCheck(s: pg.Client, t: pg.Client, table: TableRef, scrub: (m: string) => string): Promise<DoctorCheck> {
  const name = `row count ${table.label}`;
  const q = `SELECT count(*)::bigint AS n FROM ${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
  try {
    const [a, b] = await Promise.all([s.query<{ n: string }>(q), t.query<{ n: string }>(q)]);
    const p = Number(a.rows[0]?.n ?? 0);
    const st = Number(b.rows[0]?.n ?? 0);
    if (p !== st) {
      return {
        name, ok: false,
        detail: `production ${p}, staging ${st} (${st > p ? `${st - p} more in staging` : `${p - st} missing in staging`})`,
        hint: st > p
          ? 'rows created in staging (QA data) are kept by design; npx elara-sync verify lists missing, extra and changed rows'
          : 'npx elara-sync verify for details, then npx elara-sync run',
      };
    }
    return { name, ok: true, detail: `production ${p}, staging ${st}` };
  } catch (err) {
    return { name, ok: false, detail: scrub(messageOf(err)), hint: 'the roles need SELECT on the synced tables (deploy/kubernetes/sql)' };
  }
}

function messageOf(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    return err.errors.map((e) => messageOf(e)).join('; ');
  }
  if (err instanceof Error) return oneLine(err.message || err.name || String(err));
  return oneLine(String(err));
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}
