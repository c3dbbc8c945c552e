// A throwaway PostgreSQL 15 cluster with TLS on, for one test file: a CA made here with openssl, a
// server certificate it signed for `localhost` only (so 127.0.0.1 is a wrong host name for
// verify-full), a second CA that signed nothing (a wrong sslrootcert), and a client certificate
// for user postgres. Started with Debian's pg_createcluster on a free port, listening on 127.0.0.1,
// with log_connections on so a test can see whether each connection it caused used TLS. stop()
// drops the cluster and deletes the files; it is also called on exit if a test forgot.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { freePort } from './ports.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const PG_VERSION = '15';

export interface TlsFiles {
  dir: string;
  /** The CA that signed the server's certificate and the client certificate. */
  ca: string;
  /** A CA that signed nothing here. */
  wrongCa: string;
  /** Client certificate and key (CN=postgres), key mode 0600. */
  clientCert: string;
  clientKey: string;
}

export interface ConnectionLogEntry {
  user: string;
  database: string;
  applicationName: string;
  ssl: boolean;
  protocol: string | null;
}

export interface TlsServer {
  name: string;
  port: number;
  files: TlsFiles;
  /** postgresql://postgres@<host>:<port>/<database>?<params>; host defaults to localhost (the certificate's name). */
  url(database: string, params?: Record<string, string>, host?: string): string;
  /** verify-full with the right CA: the URL every positive test uses. */
  verifiedUrl(database: string, extra?: Record<string, string>): string;
  /** Runs SQL as postgres over verified TLS. */
  sql(database: string, text: string, values?: unknown[]): Promise<pg.QueryResult>;
  createDatabase(prefix: string): Promise<string>;
  /** Gives the server a new certificate from the same CA, valid `days`, and reloads it (no restart). */
  renewServerCert(days: number): Promise<void>;
  /** Replaces pg_hba.conf (TYPE DATABASE USER ADDRESS METHOD lines) and reloads. */
  setHba(lines: string[]): Promise<void>;
  /** Byte offset of the end of the server log, for connectionsSince(). */
  logMark(): number;
  /** Every connection the server authorized after `mark`, from log_connections. */
  connectionsSince(mark: number): ConnectionLogEntry[];
  stop(): Promise<void>;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string, cn: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '365',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

function makeCert(dir: string, name: string, cn: string, ext: string, days = 90, ca = 'ca'): void {
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-days', String(days), '-out', `${name}.crt`, '-extfile', `${name}.ext`], dir);
}

function postgresIds(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

const live = new Set<string>();
process.once('exit', () => {
  for (const name of live) spawnSync('pg_dropcluster', [PG_VERSION, name, '--stop'], { stdio: 'ignore' });
});

function parseConnections(text: string): ConnectionLogEntry[] {
  const out: ConnectionLogEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /connection authorized: user=(\S+) database=(\S+)(?: application_name=(.*?))?( SSL enabled \(protocol=([^,]+),.*\))?$/.exec(line);
    if (m) out.push({ user: m[1]!, database: m[2]!, applicationName: m[3] ?? '', ssl: Boolean(m[4]), protocol: m[5] ?? null });
  }
  return out;
}

export async function startTlsServer(prefix = 'tls'): Promise<TlsServer> {
  const name = `elara_${prefix.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${process.pid}_${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'elara-tls-'));
  chmodSync(dir, 0o755);
  makeCa(dir, 'ca', 'Elara Test CA');
  makeCa(dir, 'wrong-ca', 'Some Other CA');
  const SERVER_EXT = 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n';
  makeCert(dir, 'server', 'localhost', SERVER_EXT);
  makeCert(dir, 'client', 'postgres', 'extendedKeyUsage=clientAuth\n');
  chmodSync(join(dir, 'client.key'), 0o600);
  // The server reads its own copies, owned by postgres; the key must be 0600 or it refuses to start.
  const serverDir = join(dir, 'server');
  mkdirSync(serverDir, { mode: 0o700 });
  const pgIds = postgresIds();
  const install = (...names: string[]) => {
    for (const f of names) {
      writeFileSync(join(serverDir, f), readFileSync(join(dir, f)), { mode: 0o600 });
      chownSync(join(serverDir, f), pgIds.uid, pgIds.gid);
    }
  };
  install('server.crt', 'server.key', 'ca.crt');
  chownSync(serverDir, pgIds.uid, pgIds.gid);
  const files: TlsFiles = { dir, ca: join(dir, 'ca.crt'), wrongCa: join(dir, 'wrong-ca.crt'), clientCert: join(dir, 'client.crt'), clientKey: join(dir, 'client.key') };

  const port = await freePort();
  const confDir = `/etc/postgresql/${PG_VERSION}/${name}`;
  const logFile = `/var/log/postgresql/postgresql-${PG_VERSION}-${name}.log`;
  execFileSync('pg_createcluster', [PG_VERSION, name, '--port', String(port), '--start-conf', 'manual'], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(name);
  const hbaFile = join(confDir, 'pg_hba.conf');
  const writeHba = (lines: string[]) => writeFileSync(hbaFile, ['local all postgres peer', ...lines, ''].join('\n'));
  try {
    writeFileSync(join(confDir, 'conf.d', 'elara-tls.conf'), [
      "listen_addresses = '127.0.0.1'",
      'ssl = on',
      `ssl_cert_file = '${join(serverDir, 'server.crt')}'`,
      `ssl_key_file = '${join(serverDir, 'server.key')}'`,
      `ssl_ca_file = '${join(serverDir, 'ca.crt')}'`,
      "ssl_min_protocol_version = 'TLSv1.2'",
      'log_connections = on',
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'shared_buffers = 32MB',
      'max_connections = 60',
      '',
    ].join('\n'));
    // Default: TLS only, for everyone from this machine.
    writeHba(['hostssl all all 127.0.0.1/32 trust']);
    execFileSync('pg_ctlcluster', [PG_VERSION, name, 'start'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    spawnSync('pg_dropcluster', [PG_VERSION, name, '--stop'], { stdio: 'ignore' });
    live.delete(name);
    rmSync(dir, { recursive: true, force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`could not start the TLS test cluster ${name}: ${(err as Error).message} ${stderr}`, { cause: err });
  }

  const url = (database: string, params: Record<string, string> = {}, host = 'localhost') => {
    const q = new URLSearchParams(params).toString();
    return `postgresql://postgres@${host}:${port}/${database}${q ? `?${q}` : ''}`;
  };
  const verifiedUrl = (database: string, extra: Record<string, string> = {}) => url(database, { sslmode: 'verify-full', sslrootcert: files.ca, ...extra });
  const sql = async (database: string, text: string, values?: unknown[]) => {
    const c = new pg.Client({ host: 'localhost', port, user: 'postgres', database, ssl: { ca: readFileSync(files.ca), rejectUnauthorized: true } });
    await c.connect();
    try {
      return await c.query(text, values);
    } finally {
      await c.end();
    }
  };
  /** Changes files, reloads, and returns once new connections are judged by the new files. */
  const reload = async (change: () => void) => {
    const before = (await sql('postgres', 'SELECT pg_conf_load_time()::text AS t')).rows[0].t as string;
    change();
    await sql('postgres', 'SELECT pg_reload_conf()');
    // pg_reload_conf() only signals the postmaster. A new backend carries the postmaster's load
    // time, so once that changes the postmaster has read the files again.
    for (let i = 0; i < 400; i++) {
      const now = (await sql('postgres', 'SELECT pg_conf_load_time()::text AS t')).rows[0].t as string;
      if (now !== before) return;
      await new Promise((res) => setTimeout(res, 25));
    }
    throw new Error('the TLS test cluster did not reload its configuration');
  };
  let stopped = false;
  return {
    name, port, files, url, verifiedUrl, sql,
    async createDatabase(p: string) {
      const db = `${p.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`;
      await sql('postgres', `CREATE DATABASE "${db}"`);
      return db;
    },
    async renewServerCert(days: number) {
      makeCert(dir, 'server', 'localhost', SERVER_EXT, days);
      install('server.crt', 'server.key');
      // PostgreSQL reloads its certificate and key on SIGHUP; connections made after it use them.
      await reload(() => {});
    },
    async setHba(lines: string[]) {
      await reload(() => writeHba(lines));
    },
    logMark: () => (existsSync(logFile) ? readFileSync(logFile).length : 0),
    connectionsSince: (mark: number) => parseConnections(existsSync(logFile) ? readFileSync(logFile).subarray(mark).toString('utf8') : ''),
    async stop() {
      if (stopped) return;
      stopped = true;
      spawnSync('pg_dropcluster', [PG_VERSION, name, '--stop'], { stdio: 'ignore' });
      live.delete(name);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
