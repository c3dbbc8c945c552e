// What watch keeps on production: the publication of the target's tables and its logical slot.
// Every statement here is catalog DDL or a catalog read; no table row of production is written.
import type pg from 'pg';
import { SyncError } from '../errors.ts';
import { createClient } from '../tls/client.ts';
import { quoteIdent } from '../catalog/introspect.ts';
import type { TablePlan } from '../plan/table-plan.ts';

export interface SlotInfo {
  plugin: string;
  database: string;
  active: boolean;
  activePid: number | null;
  confirmedFlush: string | null;
  restartLsn: string | null;
  walStatus: string | null;
  retainedBytes: number;
}

/** LSN text ('16/B374D848') as a number of bytes, for comparisons. */
export function lsnValue(lsn: string | null | undefined): bigint {
  if (!lsn) return 0n;
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

export function lsnText(v: bigint): string {
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** A source without logical decoding: the error names the setting and the managed-database flags. */
export async function assertLogical(source: pg.ClientBase): Promise<void> {
  const level = (await source.query(`SELECT current_setting('wal_level') AS w`)).rows[0].w as string;
  if (level !== 'logical') {
    throw new SyncError('E_WAL_LEVEL',
      `production (source) has wal_level = ${level}: it cannot stream changes (watch needs logical decoding); nothing was created or written`,
      'set wal_level = logical in postgresql.conf and restart PostgreSQL (AWS RDS/Aurora: rds.logical_replication = 1 in the parameter group; Cloud SQL: the flag cloudsql.logical_decoding = on; Azure: azure.replication_support = logical). `elara-sync run` works without it',
      { side: 'source' });
  }
}

export async function readSlot(source: pg.ClientBase, slot: string): Promise<SlotInfo | null> {
  const r = await source.query(`SELECT plugin, database, active, active_pid, confirmed_flush_lsn::text AS cf, restart_lsn::text AS rl, wal_status,
      coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::float8 AS retained
    FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
  const x = r.rows[0];
  if (!x) return null;
  return {
    plugin: x.plugin, database: x.database, active: x.active, activePid: x.active_pid, confirmedFlush: x.cf, restartLsn: x.rl,
    walStatus: x.wal_status, retainedBytes: Number(x.retained),
  };
}

/**
 * The publication holds exactly the plans' tables (created or changed if not). Partitioned tables
 * publish through their root, so changes arrive under the name the plan knows.
 */
export async function ensurePublication(admin: pg.ClientBase, name: string, plans: TablePlan[]): Promise<'created' | 'changed' | 'kept'> {
  const tables = plans.map((p) => p.id).sort();
  const have = await admin.query(`SELECT p.pubviaroot, coalesce(array_agg(format('%I.%I', t.schemaname, t.tablename) ORDER BY 1) FILTER (WHERE t.tablename IS NOT NULL), '{}') AS tables
    FROM pg_publication p LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname WHERE p.pubname = $1 GROUP BY p.pubviaroot`, [name]);
  const list = tables.join(', ');
  if (have.rowCount === 0) {
    await admin.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${list} WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)`);
    return 'created';
  }
  // pg_publication_tables lists leaf partitions for publish_via_partition_root = false only; compare by regclass.
  const current = (await admin.query(`SELECT coalesce(array_agg(prrelid::regclass::text ORDER BY 1), '{}') AS t FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1`, [name])).rows[0].t as string[];
  const want = (await admin.query(`SELECT coalesce(array_agg(t::regclass::text ORDER BY 1), '{}') AS t FROM unnest($1::text[]) t`, [tables])).rows[0].t as string[];
  if (current.join('\u0000') === want.join('\u0000') && have.rows[0].pubviaroot) return 'kept';
  await admin.query(`ALTER PUBLICATION ${quoteIdent(name)} SET TABLE ${list}`);
  await admin.query(`ALTER PUBLICATION ${quoteIdent(name)} SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)`);
  return 'changed';
}

export interface CreatedSlot {
  consistentPoint: string;
  snapshot: string;
  /** The replication session holding the snapshot: it stays valid until this ends. */
  session: pg.Client;
}

/**
 * Creates the slot with an exported snapshot over a replication connection. The snapshot shows
 * production exactly as of the slot's consistent point: a reconcile under it plus the stream from
 * that point miss nothing and repeat nothing.
 */
export async function createSlotWithSnapshot(url: string, slot: string): Promise<CreatedSlot> {
  const session = createClient(url, { application_name: 'elara-sync-watch-snapshot', replication: 'database' } as pg.ClientConfig, { setting: '--from / DATABASE_URL' });
  session.on('error', () => {});
  await session.connect();
  try {
    const r = await session.query(`CREATE_REPLICATION_SLOT ${quoteIdent(slot)} LOGICAL pgoutput (SNAPSHOT 'export')`);
    const row = r.rows[0];
    return { consistentPoint: row.consistent_point, snapshot: row.snapshot_name, session };
  } catch (e) {
    await session.end().catch(() => {});
    throw slotError(e, slot);
  }
}

export async function dropSlot(admin: pg.ClientBase, slot: string): Promise<boolean> {
  const r = await admin.query(`SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
  if (r.rowCount === 0) return false;
  if (r.rows[0].active_pid) {
    throw new SyncError('E_STREAM', `the replication slot ${slot} on production is in use by process ${r.rows[0].active_pid} (another watch)`,
      'stop the other elara-sync watch of this target first', { side: 'source' });
  }
  await admin.query(`SELECT pg_drop_replication_slot($1)`, [slot]);
  return true;
}

export async function dropPublication(admin: pg.ClientBase, name: string): Promise<boolean> {
  const r = await admin.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [name]);
  if (r.rowCount === 0) return false;
  await admin.query(`DROP PUBLICATION ${quoteIdent(name)}`);
  return true;
}

export function slotError(e: unknown, slot: string): SyncError {
  const code = (e as { code?: string }).code;
  const msg = (e as Error).message;
  if (code === '55006') {
    return new SyncError('E_STREAM', `the replication slot ${slot} on production is in use by another process (another watch of this target)`,
      'run one watch per target (the Kubernetes Deployment has one replica); stop the other one', { cause: e, side: 'source' });
  }
  if (code === '53400') {
    return new SyncError('E_STREAM', `production has no free replication slot for ${slot}: ${msg}`,
      'raise max_replication_slots (and max_wal_senders) on production, or drop unused slots (SELECT slot_name FROM pg_replication_slots WHERE NOT active)', { cause: e, side: 'source' });
  }
  if (code === '42501') {
    return new SyncError('E_PERMISSION', `production refused replication for the sync role: ${msg}`,
      'ALTER ROLE <sync role> REPLICATION (RDS: GRANT rds_replication TO <sync role>), and allow replication connections in pg_hba.conf', { cause: e, side: 'source' });
  }
  return new SyncError('E_STREAM', `the change stream of slot ${slot} failed: ${msg}`, 'watch reconnects by itself; if this repeats, run elara-sync doctor', { cause: e, side: 'source' });
}
