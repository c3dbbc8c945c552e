// Environment → a frozen, checked Config. Parsed once at the boundary; every bad field is named in
// one error message. Values never appear in the message (they may be secrets).
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { applyTlsEnv, expandUrl, loadConfig as loadSyncConfig, resolveTarget, type ResolvedTarget, loadTlsOptions, parseDuration, plaintextRisk, resolveTlsSettings, type SyncConfig, type TlsSettings } from '@elara/sync';

const bool = z.enum(['0', '1', 'true', 'false']).transform((v) => v === '1' || v === 'true');
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const duration = z.string().regex(/^\d+(ms|s|m|h)$/, 'a duration like 30s, 5m or 1h');
const pgUrl = z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL');

const envSchema = z.object({
  NODE_ENV: z.string().optional(),
  DATABASE_URL: pgUrl,
  STAGING_DATABASE_URL: pgUrl.optional(),
  PORT: int(0, 65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** HS256 key, at least 32 bytes (256 bits). Required when NODE_ENV=production. */
  JWT_SECRET: z.string().min(32, 'must be at least 32 characters (256 bits) of random data').optional(),
  JWT_ISSUER: z.string().min(1).default('elara'),
  JWT_AUDIENCE: z.string().min(1).default('elara-api'),
  RATE_LIMIT_IP_PER_MINUTE: int(1, 10_000_000).default(20),
  RATE_LIMIT_EMAIL_PER_HOUR: int(1, 10_000_000).default(5),
  /** Shared rate-limit store for several replicas; unset: in memory, per process. */
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  REDIS_KEY_PREFIX: z.string().min(1).default('elara:rate-limit:'),
  /** Headers and body must arrive within this; slower clients get 408 and are disconnected. */
  REQUEST_TIMEOUT_MS: int(1000, 600_000).default(30_000),
  /** On SIGTERM/SIGINT, requests in flight get this long before their connections are cut. */
  SHUTDOWN_TIMEOUT_MS: int(100, 600_000).default(10_000),
  HASH_CONCURRENCY: int(1, 64).default(Math.max(1, availableParallelism())),
  DB_POOL_MAX: int(1, 200).default(10),
  STAGING_CONNECT_TIMEOUT_MS: int(100, 120_000).default(2000),
  STAGING_STATEMENT_TIMEOUT_MS: int(100, 600_000).default(5000),
  SYNC_WORKER_CONCURRENCY: int(1, 64).default(2),
  SYNC_MAX_ATTEMPTS: int(1, 1000).default(25),
  /** A sync job locked longer than this belongs to a dead process and is released. */
  SYNC_STALE_LOCK_SECONDS: int(1, 86_400).default(60),
  /** How often to probe staging while it is failing; on recovery the backlog is retried at once. */
  SYNC_PROBE_INTERVAL_MS: int(50, 600_000).default(1000),
  /** Test-only fault injection; see README. Unset in any real deployment. */
  ELARA_FAILPOINT: z.enum(['after_prod_commit', 'in_sync_job']).optional(),
  TRUST_PROXY: bool.default(false),
  /** Bearer token for GET /api/v2/sync/status and the /sync page (operators, dashboards). */
  OPS_TOKEN: z.string().min(32, 'must be at least 32 characters of random data').optional(),
  /** The sync engine's config (tables, transforms, filters), shared with the elara-sync CLI. */
  ELARA_SYNC_CONFIG: z.string().optional(),
  /** Run the reconcile in this process every interval (e.g. 5m); unset: a CronJob runs it. */
  RECONCILE_INTERVAL: duration.optional(),
  /** The reconcile schedule the status page judges lag against, when the CronJob runs it. */
  RECONCILE_EXPECTED_INTERVAL: duration.default('5m'),
  /** Real-time sync (watch) in this process, per target: auto = when production has wal_level = logical. */
  SYNC_WATCH: z.enum(['auto', 'on', 'off']).default('auto'),
  /** Embedded default only: the status API and /sync page need no token from 127.0.0.1. */
  STATUS_OPEN_ON_LOOPBACK: bool.default(false),
  /** NODE_ENV=production: allow a database URL that reaches a host on the network without TLS. */
  DB_ALLOW_PLAINTEXT: bool.default(false),
}).superRefine((env, ctx) => {
  if (env.NODE_ENV === 'production' && !env.JWT_SECRET) {
    ctx.addIssue({ code: 'custom', path: ['JWT_SECRET'], message: 'is required when NODE_ENV=production' });
  }
});

/**
 * The TLS settings of each database URL, checked here so a bad sslmode, a missing CA file or (in
 * production) plaintext over the network stops the start with the other configuration errors.
 * Messages name the TLS parameters and files, never the host, user or password.
 */
function checkTls(key: 'DATABASE_URL' | 'STAGING_DATABASE_URL', url: string, env: NodeJS.ProcessEnv, production: boolean, allowPlaintext: boolean, issues: string[]): TlsSettings | null {
  try {
    const settings = resolveTlsSettings(url, env);
    loadTlsOptions(settings); // reads the CA, certificate and key files now, to name a missing one at start-up
    const risk = production && !allowPlaintext ? plaintextRisk(url, env) : null;
    if (risk) issues.push(`${key} ${risk}; NODE_ENV=production refuses that: use sslmode=verify-full&sslrootcert=<the server's CA file>, or set DB_ALLOW_PLAINTEXT=true on a network you trust`);
    return settings;
  } catch (err) {
    const e = err as Error & { hint?: string };
    issues.push(`${key} ${e.message}${e.hint ? ` (${e.hint})` : ''}`);
    return null;
  }
}

export interface Config {
  /** With PGSSL* folded in as URL parameters, so every consumer (pools, the reconcile) reads the same TLS settings. */
  readonly databaseUrl: string;
  readonly stagingDatabaseUrl: string | null;
  /** NODE_ENV=production. */
  readonly isProduction: boolean;
  readonly tls: { readonly production: TlsSettings; readonly staging: TlsSettings | null; readonly allowPlaintext: boolean };
  readonly port: number;
  readonly host: string;
  readonly logLevel: string;
  readonly jwt: { readonly secret: string; readonly generated: boolean; readonly issuer: string; readonly audience: string };
  readonly rateLimit: { readonly ipPerMinute: number; readonly emailPerHour: number; readonly redisPrefix: string };
  readonly redisUrl: string | null;
  readonly http: { readonly requestTimeoutMs: number; readonly shutdownTimeoutMs: number };
  readonly hashConcurrency: number;
  readonly dbPoolMax: number;
  readonly staging: { readonly connectTimeoutMs: number; readonly statementTimeoutMs: number };
  readonly sync: { readonly concurrency: number; readonly maxAttempts: number; readonly staleLockSeconds: number; readonly probeIntervalMs: number };
  /** elara-sync.yml as the engine reads it: every path (immediate sync, reconcile, status) uses its tables and rules. */
  readonly syncConfig: SyncConfig;
  /**
   * Its targets, resolved: `staging` (at STAGING_DATABASE_URL) gets the registration syncs; every
   * target with a URL gets an in-process reconcile loop. Targets that cannot run (no URL, no mask
   * key) are listed in `skipped` with why, for the start-up log.
   */
  readonly targets: { readonly staging: ResolvedTarget | null; readonly all: readonly ResolvedTarget[]; readonly skipped: ReadonlyArray<{ name: string; reason: string }> };
  /** SYNC_WATCH: whether each target with a URL also gets an in-process `watch` (auto: if production's wal_level is logical). */
  readonly watch: 'auto' | 'on' | 'off';
  readonly failpoint: 'after_prod_commit' | 'in_sync_job' | null;
  readonly trustProxy: boolean;
  readonly ops: {
    readonly token: string | null;
    readonly tables: readonly string[];
    readonly reconcileIntervalMs: number | null;
    readonly expectedIntervalMs: number;
    readonly openOnLoopback: boolean;
  };
}

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`invalid configuration: ${issues.join('; ')}`);
    this.name = 'ConfigError';
  }
}

function resolveTargets(syncConfig: SyncConfig, stagingUrl: string | null, env: NodeJS.ProcessEnv): Config['targets'] {
  const all: ResolvedTarget[] = [];
  const skipped: Array<{ name: string; reason: string }> = [];
  for (const t of syncConfig.targets) {
    // staging is STAGING_DATABASE_URL as the backend reads it (PGSSL* applied); others expand their own URL.
    const url = t.name === 'staging' ? stagingUrl : expandUrl(t.url, env);
    if (!url) {
      skipped.push({ name: t.name, reason: `no database URL (${t.name === 'staging' ? 'STAGING_DATABASE_URL' : t.url ?? `targets.${t.name}.url`} is not set)` });
      continue;
    }
    try {
      all.push(resolveTarget(syncConfig.targets, t.name, { env, to: applyTlsEnv(url, env) }));
    } catch (e) {
      skipped.push({ name: t.name, reason: (e as Error).message });
    }
  }
  return Object.freeze({ staging: all.find((t) => t.name === 'staging') ?? null, all: Object.freeze(all), skipped: Object.freeze(skipped) });
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings count as unset, as most shells and manifests mean them.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.') || '(env)'} ${i.message}`));
  }
  const e = parsed.data;
  let syncConfig: SyncConfig;
  try {
    syncConfig = loadSyncConfig(e.ELARA_SYNC_CONFIG, env);
  } catch (err) {
    throw new ConfigError([`ELARA_SYNC_CONFIG ${(err as Error).message}`]);
  }
  const production = e.NODE_ENV === 'production';
  const tlsIssues: string[] = [];
  const databaseUrl = applyTlsEnv(e.DATABASE_URL, cleaned);
  const stagingDatabaseUrl = e.STAGING_DATABASE_URL ? applyTlsEnv(e.STAGING_DATABASE_URL, cleaned) : null;
  const prodTls = checkTls('DATABASE_URL', databaseUrl, cleaned, production, e.DB_ALLOW_PLAINTEXT, tlsIssues);
  const stagingTls = stagingDatabaseUrl ? checkTls('STAGING_DATABASE_URL', stagingDatabaseUrl, cleaned, production, e.DB_ALLOW_PLAINTEXT, tlsIssues) : null;
  if (tlsIssues.length > 0) throw new ConfigError(tlsIssues);
  const targets = resolveTargets(syncConfig, stagingDatabaseUrl, cleaned);
  const secret = e.JWT_SECRET ?? randomBytes(32).toString('base64url');
  const config: Config = {
    databaseUrl,
    stagingDatabaseUrl,
    isProduction: production,
    tls: Object.freeze({ production: prodTls!, staging: stagingTls, allowPlaintext: e.DB_ALLOW_PLAINTEXT }),
    port: e.PORT,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    jwt: Object.freeze({ secret, generated: !e.JWT_SECRET, issuer: e.JWT_ISSUER, audience: e.JWT_AUDIENCE }),
    rateLimit: Object.freeze({ ipPerMinute: e.RATE_LIMIT_IP_PER_MINUTE, emailPerHour: e.RATE_LIMIT_EMAIL_PER_HOUR, redisPrefix: e.REDIS_KEY_PREFIX }),
    redisUrl: e.REDIS_URL ?? null,
    http: Object.freeze({ requestTimeoutMs: e.REQUEST_TIMEOUT_MS, shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS }),
    hashConcurrency: e.HASH_CONCURRENCY,
    dbPoolMax: e.DB_POOL_MAX,
    staging: Object.freeze({ connectTimeoutMs: e.STAGING_CONNECT_TIMEOUT_MS, statementTimeoutMs: e.STAGING_STATEMENT_TIMEOUT_MS }),
    sync: Object.freeze({
      concurrency: e.SYNC_WORKER_CONCURRENCY,
      maxAttempts: e.SYNC_MAX_ATTEMPTS,
      staleLockSeconds: e.SYNC_STALE_LOCK_SECONDS,
      probeIntervalMs: e.SYNC_PROBE_INTERVAL_MS,
    }),
    syncConfig,
    targets,
    watch: e.SYNC_WATCH,
    failpoint: e.ELARA_FAILPOINT ?? null,
    ops: Object.freeze({
      token: e.OPS_TOKEN ?? null,
      tables: Object.freeze(syncConfig.tables.map((t) => t.name)),
      reconcileIntervalMs: e.RECONCILE_INTERVAL ? parseDuration(e.RECONCILE_INTERVAL) : null,
      expectedIntervalMs: parseDuration(e.RECONCILE_INTERVAL ?? e.RECONCILE_EXPECTED_INTERVAL),
      openOnLoopback: e.STATUS_OPEN_ON_LOOPBACK,
    }),
    trustProxy: e.TRUST_PROXY,
  };
  return Object.freeze(config);
}
