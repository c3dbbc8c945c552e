// A connection string (+ the PGSSL* environment) → what TLS a connection uses, with libpq's meaning
// for each sslmode. node-postgres (pg-connection-string 2.x) treats prefer, require and verify-ca as
// verify-full, prints a SECURITY WARNING, and ignores PGSSLROOTCERT; so the TLS parameters are taken
// out of the URL here and handed to pg as explicit `ssl` options (see client.ts).
//
// libpq behaviour kept (https://www.postgresql.org/docs/15/libpq-ssl.html):
// - no sslmode means prefer: TLS when the server offers it, plaintext otherwise, nothing verified;
// - require encrypts without verifying, unless a root certificate is given (sslrootcert, or
//   ~/.postgresql/root.crt exists): then it verifies the chain as verify-ca does;
// - verify-ca checks the chain, verify-full also the host name; both need a CA;
// - sslrootcert=system (libpq 16) means the CAs this runtime trusts and implies verify-full;
// - URL parameters win over PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY, PGSSLCRL,
//   PGSSLMINPROTOCOLVERSION, PGSSLMAXPROTOCOLVERSION; defaults come from ~/.postgresql/ as in libpq.
// Differences (all stricter, documented in docs/operations.md#tls): a file named explicitly must
// exist; allow tries TLS first; prefer falls back to plaintext only when the server has no TLS.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
export type TlsVersion = 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
const TLS_VERSIONS: readonly TlsVersion[] = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];

export interface TlsSettings {
  readonly mode: SslMode;
  /** Where the mode came from: the URL, PGSSLMODE, or libpq's default (prefer). */
  readonly modeFrom: 'url' | 'env' | 'default';
  /** What is checked when TLS is used: nothing, the certificate chain, or the chain and the host name. */
  readonly verify: 'none' | 'ca' | 'full';
  /** CA file, `system` (the CAs Node.js trusts), or null. */
  readonly rootCert: string | null;
  readonly cert: string | null;
  readonly key: string | null;
  readonly crl: string | null;
  readonly minVersion: TlsVersion;
  readonly maxVersion: TlsVersion | null;
  /** The host pg connects to ('' or a /path for a Unix-domain socket). */
  readonly host: string;
  /** Passphrase of an encrypted key (sslpassword); not enumerable, so never logged or printed. */
  readonly passphrase?: string;
}

/** A TLS setting that cannot work; `hint` says what to change. Never contains a key or a password. */
export class TlsConfigError extends Error {
  constructor(message: string, readonly hint: string) {
    super(message);
    this.name = 'TlsConfigError';
  }
}

/** URL query parameter → the libpq environment variable for it. */
const ENV_OF: Record<string, string> = {
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  sslcrl: 'PGSSLCRL',
  ssl_min_protocol_version: 'PGSSLMINPROTOCOLVERSION',
  ssl_max_protocol_version: 'PGSSLMAXPROTOCOLVERSION',
};

/**
 * Parameters handled here and removed from the URL pg sees. `ssl` and `uselibpqcompat` are
 * node-postgres's own; sslcompression is obsolete and ignored by libpq too.
 */
const HANDLED = new Set([...Object.keys(ENV_OF), 'sslpassword', 'ssl', 'uselibpqcompat', 'sslcompression']);
/** libpq parameters node-postgres cannot honour: refused rather than silently dropped. */
const UNSUPPORTED: Record<string, (v: string) => boolean> = {
  sslcrldir: () => true,
  sslsni: (v) => v !== '1',
  sslcertmode: (v) => v !== 'allow',
};

interface ParsedUrl { url: URL; dummyHost: boolean; host: string; params: URLSearchParams }

/** A postgres URL, read the way pg-connection-string reads it (an empty host is allowed). */
function parseUrl(url: string): ParsedUrl {
  let str = url;
  if (/ |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(str)) str = encodeURI(str).replace(/%25(\d\d)/g, '%$1');
  let u: URL;
  let dummyHost = false;
  try {
    try {
      u = new URL(str, 'postgres://base');
    } catch {
      u = new URL(str.replace('@/', '@___DUMMY___/'), 'postgres://base');
      dummyHost = true;
    }
  } catch {
    // The message must not echo the string: it holds the password.
    throw new TlsConfigError('the connection string is not a valid postgres:// URL', 'write it as postgresql://user:password@host:port/database?sslmode=…');
  }
  const hostname = (dummyHost ? '' : u.hostname).replace(/^\[(.+)\]$/, '$1');
  const host = u.searchParams.get('host') ?? decodeURIComponent(hostname);
  return { url: u, dummyHost, host, params: u.searchParams };
}

const serialize = (p: ParsedUrl): string => (p.dummyHost ? p.url.toString().replace('@___DUMMY___/', '@/') : p.url.toString());

/** The URL without the parameters this module handles, so pg neither re-reads nor warns about them. */
export function stripTlsParams(url: string): string {
  const p = parseUrl(url);
  if (![...p.params.keys()].some((k) => HANDLED.has(k))) return url;
  for (const k of HANDLED) p.params.delete(k);
  return serialize(p);
}

/**
 * Folds PGSSL* variables of `env` into the URL (a parameter already in the URL wins, as in libpq),
 * so a URL handed on (to the engine's connect(), to a child process) means the same everywhere.
 */
export function applyTlsEnv(url: string, env: NodeJS.ProcessEnv): string {
  const p = parseUrl(url);
  // node-postgres's ssl=… in the URL outranks PGSSLMODE, as the URL outranks the environment.
  const add = Object.entries(ENV_OF).filter(([k, e]) => !p.params.has(k) && env[e] && !(k === 'sslmode' && p.params.has('ssl')));
  if (add.length === 0) return url;
  for (const [k, e] of add) p.params.set(k, env[e]!);
  return serialize(p);
}

const postgresDir = (env: NodeJS.ProcessEnv) => join(env.HOME || homedir(), '.postgresql');

/** libpq's default file when it exists, else null. */
function defaultFile(env: NodeJS.ProcessEnv, name: string): string | null {
  const p = join(postgresDir(env), name);
  return existsSync(p) ? p : null;
}

export function resolveTlsSettings(url: string, env: NodeJS.ProcessEnv = process.env): TlsSettings {
  const { host, params } = parseUrl(url);
  for (const [k, bad] of Object.entries(UNSUPPORTED)) {
    const v = params.get(k);
    if (v !== null && bad(v)) {
      throw new TlsConfigError(`${k}=${v} is not supported by Elara's PostgreSQL client (node-postgres)`, `remove ${k} from the URL; docs/operations.md#tls lists the TLS parameters that are honoured`);
    }
  }
  const get = (p: string): string | null => params.get(p) || env[ENV_OF[p]!] || null;

  let mode: string | null = params.get('sslmode') || null;
  let modeFrom: TlsSettings['modeFrom'] = 'url';
  if (!mode) {
    // node-postgres's own parameter, kept meaning what it meant there.
    const ssl = params.get('ssl');
    if (ssl === 'true' || ssl === '1') mode = 'verify-full';
    else if (ssl === 'false' || ssl === '0') mode = 'disable';
    else if (ssl === 'no-verify') mode = 'require';
  }
  if (!mode && env.PGSSLMODE) { mode = env.PGSSLMODE; modeFrom = 'env'; }
  const nodePgTrue = !params.get('sslmode') && (params.get('ssl') === 'true' || params.get('ssl') === '1');

  let rootCert = get('sslrootcert') ?? (nodePgTrue ? 'system' : defaultFile(env, 'root.crt'));
  if (!mode) { mode = rootCert === 'system' ? 'verify-full' : 'prefer'; modeFrom = 'default'; }
  if (!(SSL_MODES as readonly string[]).includes(mode)) {
    throw new TlsConfigError(`sslmode=${mode} is not a valid mode`, `use one of ${SSL_MODES.join(', ')} (verify-full with sslrootcert for a database on another host)`);
  }
  const m = mode as SslMode;
  if (rootCert === 'system' && m !== 'verify-full') {
    throw new TlsConfigError(`sslrootcert=system needs sslmode=verify-full (sslmode=${m})`, 'as in libpq 16: with the public CAs, only a host-name check makes the certificate mean anything; set sslmode=verify-full or drop sslmode');
  }
  if ((m === 'verify-ca' || m === 'verify-full') && !rootCert) {
    throw new TlsConfigError(`sslmode=${m} needs a CA to verify the server's certificate, and none is given (no sslrootcert, no PGSSLROOTCERT, no ~/.postgresql/root.crt)`,
      'add sslrootcert=/path/to/ca.pem to the URL (the CA that signed the server\'s certificate; for a managed database, its provider\'s CA bundle), or sslrootcert=system for a certificate from a public CA');
  }
  if (params.get('sslnegotiation') === 'direct' && !['require', 'verify-ca', 'verify-full'].includes(m)) {
    throw new TlsConfigError(`sslnegotiation=direct needs sslmode=require or stronger (sslmode=${m})`, 'as in libpq: direct TLS negotiation cannot fall back to plaintext; set sslmode=verify-full');
  }
  if (m === 'disable') rootCert = null;
  const version = (p: string, fallback: TlsVersion | null): TlsVersion | null => {
    const v = get(p);
    if (v === null) return fallback;
    if (!(TLS_VERSIONS as readonly string[]).includes(v)) throw new TlsConfigError(`${p}=${v} is not a TLS version`, `use one of ${TLS_VERSIONS.join(', ')}`);
    return v as TlsVersion;
  };
  const cert = m === 'disable' ? null : get('sslcert') ?? defaultFile(env, 'postgresql.crt');
  const settings: TlsSettings = {
    mode: m,
    modeFrom,
    verify: m === 'verify-full' ? 'full' : m === 'disable' ? 'none' : m === 'verify-ca' || rootCert ? 'ca' : 'none',
    rootCert,
    cert,
    key: cert ? get('sslkey') ?? join(postgresDir(env), 'postgresql.key') : null,
    crl: m === 'disable' ? null : get('sslcrl') ?? (rootCert && rootCert !== 'system' ? defaultFile(env, 'root.crl') : null),
    // libpq's default minimum, and Node's.
    minVersion: version('ssl_min_protocol_version', 'TLSv1.2')!,
    maxVersion: version('ssl_max_protocol_version', null),
    host,
  };
  const passphrase = params.get('sslpassword');
  if (passphrase) Object.defineProperty(settings, 'passphrase', { value: passphrase, enumerable: false });
  return Object.freeze(settings);
}

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback']);

/** True for this machine: a Unix-domain socket, localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackHost(host: string): boolean {
  if (host === '' || host.startsWith('/')) return true;
  const h = host.toLowerCase().replace(/^\[(.+)\]$/, '$1');
  if (LOOPBACK_NAMES.has(h) || h.endsWith('.localhost')) return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./i.test(h);
  return false;
}

/** Whether the mode guarantees an encrypted connection (prefer and allow may fall back to plaintext). */
export const encrypts = (s: TlsSettings): boolean => s.mode === 'require' || s.mode === 'verify-ca' || s.mode === 'verify-full';

/**
 * Why a URL would send data in plaintext over a network, or null: a host that is not this machine
 * with a mode that does not guarantee TLS. Names only the mode, never the URL.
 */
export function plaintextRisk(url: string, env: NodeJS.ProcessEnv = process.env): string | null {
  let s: TlsSettings;
  try {
    s = resolveTlsSettings(url, env);
  } catch {
    return null; // reported as a configuration error by whoever resolves it for real
  }
  if (isLoopbackHost(s.host || env.PGHOST || 'localhost') || encrypts(s)) return null;
  const why = s.mode === 'disable' ? 'sslmode=disable' : `sslmode=${s.mode}${s.modeFrom === 'default' ? ' (the default)' : ''}, which falls back to plaintext when the server has no TLS`;
  return `connects to a host on the network without TLS (${why})`;
}

/** One phrase for logs and the doctor: the mode and what it checks. Paths only, never contents. */
export function describeTls(s: TlsSettings): string {
  if (s.mode === 'disable') return 'sslmode=disable: no TLS';
  const ca = s.rootCert === 'system' ? 'the CAs Node.js trusts' : s.rootCert;
  const what = s.verify === 'full' ? `server certificate and host name verified against ${ca}`
    : s.verify === 'ca' ? `server certificate verified against ${ca}, host name not checked`
      : 'server certificate not verified';
  const optional = s.mode === 'prefer' || s.mode === 'allow' ? 'TLS if the server offers it, ' : '';
  return `sslmode=${s.mode}${s.modeFrom === 'env' ? ' (from PGSSLMODE)' : s.modeFrom === 'default' ? ' (the default)' : ''}: ${optional}${what}${s.cert ? `; client certificate ${s.cert}` : ''}`;
}

/** DB_ALLOW_PLAINTEXT=true|1: the operator accepts plaintext to a host on the network in production. */
export const allowsPlaintext = (env: NodeJS.ProcessEnv): boolean => env.DB_ALLOW_PLAINTEXT === 'true' || env.DB_ALLOW_PLAINTEXT === '1';

/**
 * The production rule (NODE_ENV=production): a URL that would send data in plaintext over a network
 * is refused unless DB_ALLOW_PLAINTEXT is set. Returns why it is refused, or null.
 */
export function refusedInProduction(url: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.NODE_ENV !== 'production' || allowsPlaintext(env)) return null;
  return plaintextRisk(url, env);
}
