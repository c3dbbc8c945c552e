// A throwaway PostgreSQL 15 cluster with wal_level = logical, for one test file or benchmark:
// started with Debian's pg_createcluster on a free port, listening on 127.0.0.1 with trust auth
// (replication connections included). stop() drops the cluster; it is also dropped on exit if a
// test forgot, and clusters left by a killed process (their pid is in the name) are swept at the
// next start.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { freePort } from './ports.ts';
import { join } from 'node:path';
import pg from 'pg';

const PG_VERSION = '15';
const PREFIX = 'elara_lr_';

export interface LogicalServer {
  name: string;
  port: number;
  /** postgresql://postgres@127.0.0.1:<port>/<database> */
  url(database: string): string;
  sql(database: string, text: string, values?: unknown[]): Promise<pg.QueryResult>;
  /** Creates a database with a unique name from the prefix and returns its name. */
  createDatabase(prefix: string): Promise<string>;
  /** Stops the server (`immediate`: a crash, no checkpoint) and starts it again on the same port. */
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stops the server without dropping it (start() brings it back). */
  halt(mode?: 'fast' | 'immediate'): void;
  start(): void;
  stop(): Promise<void>;
}

const live = new Set<string>();
process.once('exit', () => {
  for (const name of live) spawnSync('pg_dropcluster', [PG_VERSION, name, '--stop'], { stdio: 'ignore' });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Drops clusters a killed test process left behind (the pid in their name is gone). */
function sweep(): void {
  let names: string[];
  try {
    names = readdirSync(`/etc/postgresql/${PG_VERSION}`);
  } catch {
    return;
  }
  for (const n of names) {
    const m = new RegExp(`^${PREFIX}(\\d+)_`).exec(n);
    if (m && !alive(Number(m[1]))) spawnSync('pg_dropcluster', [PG_VERSION, n, '--stop'], { stdio: 'ignore' });
  }
}

export async function startLogicalServer(extraConf: string[] = []): Promise<LogicalServer> {
  sweep();
  const name = `${PREFIX}${process.pid}_${randomBytes(3).toString('hex')}`;
  const port = await freePort();
  const confDir = `/etc/postgresql/${PG_VERSION}/${name}`;
  execFileSync('pg_createcluster', [PG_VERSION, name, '--port', String(port), '--start-conf', 'manual'], { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(name);
  const ctl = (...args: string[]) => execFileSync('pg_ctlcluster', [PG_VERSION, name, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    writeFileSync(join(confDir, 'conf.d', 'elara-logical.conf'), [
      "listen_addresses = '127.0.0.1'",
      'wal_level = logical',
      'max_replication_slots = 20',
      'max_wal_senders = 20',
      'max_connections = 80',
      'fsync = off',
      'full_page_writes = off',
      'shared_buffers = 64MB',
      'wal_sender_timeout = 60s',
      ...extraConf,
      '',
    ].join('\n'));
    writeFileSync(join(confDir, 'pg_hba.conf'), [
      'local all postgres peer',
      'host all all 127.0.0.1/32 trust',
      'host replication all 127.0.0.1/32 trust',
      '',
    ].join('\n'));
    ctl('start');
  } catch (err) {
    spawnSync('pg_dropcluster', [PG_VERSION, name, '--stop'], { stdio: 'ignore' });
    live.delete(name);
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`could not start the logical-replication test cluster ${name}: ${(err as Error).message} ${stderr}`, { cause: err });
  }
  const url = (database: string) => `postgresql://postgres@127.0.0.1:${port}/${database}`;
  const sql = async (database: string, text: string, values?: unknown[]) => {
    const c = new pg.Client({ connectionString: url(database) });
    c.on('error', () => {});
    await c.connect();
    try {
      return await c.query(text, values);
    } finally {
      await c.end();
    }
  };
  const halt = (mode: 'fast' | 'immediate' = 'fast') => {
    ctl('stop', '-m', mode);
  };
  const start = () => {
    ctl('start');
  };
  return {
    name, port, url, sql, halt, start,
    async createDatabase(prefix: string) {
      const db = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`;
      await sql('postgres', `CREATE DATABASE "${db}"`);
      return db;
    },
    async restart(mode: 'fast' | 'immediate' = 'fast') {
      halt(mode);
      start();
    },
    async stop() {
      if (!live.has(name)) return;
      spawnSync('pg_dropcluster', [PG_VERSION, name, '--stop'], { stdio: 'ignore' });
      live.delete(name);
    },
  };
}
