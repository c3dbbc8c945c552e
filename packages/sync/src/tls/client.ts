// Every PostgreSQL connection of the project is opened here: createClient / createPool give pg a
// connection string without TLS parameters and a Client subclass that decides `ssl` itself when it
// connects (settings.ts says what each sslmode means). Deciding at connect time does two things:
// - the CA, certificate and key files are read again for each new connection, so a rotated file
//   (a Kubernetes Secret or ConfigMap updated in place) is used without a restart;
// - prefer and allow can ask the server first whether it offers TLS (libpq falls back on the same
//   socket; pg cannot, so the answer comes from a probe and is remembered for a minute).
import { readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import tls, { type ConnectionOptions } from 'node:tls';
import pg from 'pg';
import { describeTls, resolveTlsSettings, stripTlsParams, TlsConfigError, type TlsSettings } from './settings.ts';
import { DatabaseTlsError, explainTlsFailure, type ConnectionLabel } from './errors.ts';

export type { ConnectionLabel } from './errors.ts';

/** Options that change how a connection is made; never part of what pg sees. */
export interface ConnectOptions extends ConnectionLabel {
  /** Where PGSSL* and HOME come from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

interface ClientInternals {
  ssl: false | ConnectionOptions;
  host: string;
  port: number;
  connection: { ssl: false | ConnectionOptions; stream: net.Socket };
  _connectionTimeoutMillis?: number;
}

const PROBE_TTL_MS = 60_000;
/** host:port → whether the server answered the SSLRequest with 'S', and when we asked. */
const offersTls = new Map<string, { tls: boolean; at: number }>();

/** The SSLRequest message: length 8, code 80877103. */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 4, 210, 22, 47]);

/**
 * Asks the server whether it does TLS, as libpq's first message does. On 'S' the handshake is
 * completed and the socket closed cleanly, so the server logs nothing (a socket closed right after
 * 'S' would log "could not accept SSL connection: EOF detected"). When the server cannot be asked
 * (refused, unreachable, timeout), the network error: the connection would fail the same way.
 */
function probeTls(host: string, port: number, timeoutMs: number): Promise<boolean | Error> {
  return new Promise((resolve) => {
    let settled = false;
    const sock = net.connect({ host, port });
    const finish = (v: boolean | Error, s: net.Socket = sock) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => finish(new Error('timeout expired')), timeoutMs || 10_000);
    timer.unref();
    sock.on('error', (err) => finish(err));
    sock.once('close', () => finish(new Error('Connection terminated unexpectedly')));
    sock.once('connect', () => sock.write(SSL_REQUEST));
    sock.once('data', (b: Buffer) => {
      if (b[0] !== 0x53) { finish(false); return; } // 'N', or 'E' from a server that predates TLS
      const t = tls.connect({ socket: sock, rejectUnauthorized: false, ...(net.isIP(host) ? {} : { servername: host }) });
      t.on('error', () => finish(true, t));
      t.once('secureConnect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        t.end();
        t.once('close', () => sock.destroy());
        resolve(true);
      });
    });
  });
}

function readFile(kind: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new TlsConfigError(`cannot read ${kind} ${path} (${code})`, `check that ${path} exists and is readable by this process (uid ${process.getuid?.() ?? '?'}); in Kubernetes, that the volume is mounted there`);
  }
}

function readPem(kind: string, path: string, marker: RegExp): Buffer {
  const b = readFile(kind, path);
  if (!marker.test(b.toString('latin1'))) {
    throw new TlsConfigError(`${kind} ${path} is not a PEM file`, `${kind} must be PEM text (-----BEGIN …-----); convert DER with openssl x509 -inform der -in FILE -out FILE.pem`);
  }
  return b;
}

/** libpq's check (fe-secure-openssl.c): a key readable by others is refused. */
function checkKeyMode(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch {
    return; // reported by the read that follows
  }
  const uid = process.geteuid?.();
  const mode = st.mode & 0o777;
  const tooOpen = (st.uid === uid && (mode & 0o077) !== 0) || (st.uid === 0 && (mode & 0o137) !== 0);
  if (tooOpen) {
    throw new TlsConfigError(`sslkey ${path} has group or world access (mode 0${mode.toString(8)})`,
      'as libpq requires: chmod 0600 if this user owns it, or 0640 or less if root does; in Kubernetes, defaultMode: 0400 (or 0440 with fsGroup) on the Secret volume');
  }
}

/** The `ssl` options for tls.connect, files read now. */
export function loadTlsOptions(s: TlsSettings): ConnectionOptions {
  const o: ConnectionOptions = {
    rejectUnauthorized: s.verify !== 'none',
    minVersion: s.minVersion,
    ...(s.maxVersion ? { maxVersion: s.maxVersion } : {}),
  };
  // verify-ca (and require with a root certificate): the chain only, any host name.
  if (s.verify === 'ca') o.checkServerIdentity = () => undefined;
  if (s.rootCert && s.rootCert !== 'system') o.ca = readPem('sslrootcert', s.rootCert, /-----BEGIN (TRUSTED )?CERTIFICATE-----/);
  if (s.crl) o.crl = readPem('sslcrl', s.crl, /-----BEGIN X509 CRL-----/);
  if (s.cert) {
    o.cert = readPem('sslcert', s.cert, /-----BEGIN CERTIFICATE-----/);
    checkKeyMode(s.key!);
    const key = readPem('sslkey', s.key!, /-----BEGIN [A-Z ]*PRIVATE KEY-----/);
    // Getters: pg copies the options with Object.assign (which calls them) but util.inspect and
    // pino show only [Getter], so a logged client never shows the key or its passphrase.
    Object.defineProperty(o, 'key', { get: () => key, enumerable: true });
  }
  if (s.passphrase) {
    const p = s.passphrase;
    Object.defineProperty(o, 'passphrase', { get: () => p, enumerable: true });
  }
  return o;
}

const kSettings = Symbol('elara.tls');

/** A pg.Client class that applies `settings` each time one of its instances connects. */
function clientClass(settings: TlsSettings, who: ConnectionLabel): typeof pg.Client {
  return class ElaraClient extends pg.Client {
    readonly [kSettings] = settings;

    constructor(config?: string | pg.ClientConfig) {
      // ssl: false keeps pg from reading PGSSLMODE itself; the real value is set in connect().
      const c = typeof config === 'string' ? { connectionString: config } : { ...config };
      if (c.connectionString) c.connectionString = stripTlsParams(c.connectionString);
      super({ ...c, ssl: false });
    }

    override connect(): Promise<pg.Client>;
    override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
    override connect(cb?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
      if (!cb) {
        return new Promise((resolve, reject) => this.connect((err: Error | null) => (err ? reject(err) : resolve(this))));
      }
      const callback = cb as (err: Error | null) => void;
      const self = this as unknown as ClientInternals;
      const where = { host: self.host, port: self.port };
      const key = `${self.host}:${self.port}`;
      const start = (useTls: boolean, probed: boolean) => {
        let ssl: false | ConnectionOptions = false;
        if (useTls) {
          try {
            ssl = loadTlsOptions(settings);
          } catch (err) {
            const e = err as TlsConfigError;
            process.nextTick(() => callback(new DatabaseTlsError(`${who.label ? `${who.label}: ` : ''}${e.message}`, e.hint, 'CONFIG', { cause: err })));
            return;
          }
        }
        self.ssl = ssl;
        self.connection.ssl = ssl;
        super.connect(((err: Error | null) => {
          if (!err) { callback(null); return; }
          if (probed) offersTls.delete(key); // the server may have changed; ask again next time
          callback(explainTlsFailure(err, settings, where, who) ?? err);
        }) as (err: Error) => void);
      };
      if (settings.mode === 'disable') return start(false, false);
      if (settings.mode !== 'prefer' && settings.mode !== 'allow') return start(true, false);
      // libpq never uses TLS over a Unix-domain socket.
      if (self.host.startsWith('/')) return start(false, false);
      const known = offersTls.get(key);
      if (known && Date.now() - known.at < PROBE_TTL_MS) return start(known.tls, true);
      void probeTls(self.host, self.port, self._connectionTimeoutMillis ?? 0).then((offered) => {
        // Not answered (refused, unreachable, timeout): the connection fails with that error, as it
        // would have without the probe (ECONNREFUSED, ENOTFOUND, timeout: not a TLS problem).
        if (offered instanceof Error) { callback(offered); return; }
        offersTls.set(key, { tls: offered, at: Date.now() });
        // A pool whose connect timeout fired during the probe has destroyed the socket already.
        if (self.connection.stream.destroyed) { callback(new Error('timeout expired')); return; }
        start(offered, true);
      });
    }
  };
}

/** The TLS settings a client was created with (null for a client not made here). */
export function clientTlsSettings(client: pg.ClientBase): TlsSettings | null {
  return (client as unknown as { [kSettings]?: TlsSettings })[kSettings] ?? null;
}

/** Base pg config for a URL: the URL without TLS parameters, and the Client class that applies them. */
export function pgConfig(url: string, extra: pg.PoolConfig = {}, options: ConnectOptions = {}): pg.PoolConfig & { Client: typeof pg.Client } {
  const settings = resolveTlsSettings(url, options.env);
  return { ...extra, connectionString: stripTlsParams(url), Client: clientClass(settings, options) };
}

export function createClient(url: string, extra: pg.ClientConfig = {}, options: ConnectOptions = {}): pg.Client {
  const { Client, ...config } = pgConfig(url, extra, options);
  return new Client(config);
}

export function createPool(url: string, extra: pg.PoolConfig = {}, options: ConnectOptions = {}): pg.Pool {
  return new pg.Pool(pgConfig(url, extra, options));
}

export interface TlsStatus {
  /** Whether this connection is encrypted, from the socket. */
  encrypted: boolean;
  protocol: string | null;
  cipher: string | null;
  /** What was checked: from the mode (a failed check ends the connection, so it held). */
  verify: TlsSettings['verify'];
  settings: string;
  rootCert: string | null;
  server: { subject: string | null; issuer: string | null; names: string | null; validTo: Date | null } | null;
}

/** What a connected client's TLS is, from its socket. Contains no key material. */
export function tlsStatus(client: pg.ClientBase): TlsStatus {
  const settings = clientTlsSettings(client);
  const stream = (client as unknown as ClientInternals).connection?.stream;
  const secure = stream instanceof tls.TLSSocket ? stream : null;
  const peer = secure?.getPeerCertificate();
  const cn = (x: unknown) => (x && typeof x === 'object' && 'CN' in x ? String((x as { CN: unknown }).CN) : null);
  return {
    encrypted: secure !== null,
    protocol: secure?.getProtocol() ?? null,
    cipher: secure?.getCipher()?.name ?? null,
    verify: secure ? settings?.verify ?? 'none' : 'none',
    settings: settings ? describeTls(settings) : 'unknown',
    rootCert: settings?.rootCert ?? null,
    server: peer && Object.keys(peer).length > 0
      ? { subject: cn(peer.subject), issuer: cn(peer.issuer), names: peer.subjectaltname ?? null, validTo: peer.valid_to ? new Date(peer.valid_to) : null }
      : null,
  };
}
