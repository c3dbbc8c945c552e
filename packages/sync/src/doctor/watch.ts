// The doctor's checks for `elara-sync watch` (logical replication from production): what the source
// must allow, and the state of the target's slot. Reading (readWatchFacts) is kept apart from
// judging (assessWatch), so every verdict is testable without a server in that state.
//
// Severity: reconcile and the outbox work on any PostgreSQL, so what only watch needs (wal_level,
// free slots, the REPLICATION attribute, a WAL bound) is a warning, never a failure. A slot that
// exists is different: it pins WAL on production whether or not watch runs, so a slot that lost
// its WAL, or one that is not ours under our name, fails.
import type pg from 'pg';
import { streamName } from '../watch/names.ts';
import type { DoctorCheck } from './index.ts';

/** Retained WAL above this warns (1 GiB). */
export const SLOT_RETAINED_WARN_BYTES = 1024 ** 3;

export interface WatchSlotFacts {
  name: string;
  slotType: string;
  plugin: string | null;
  database: string | null;
  active: boolean;
  activePid: number | null;
  /** reserved | extended | unreserved | lost (pg_replication_slots.wal_status). */
  walStatus: string | null;
  /** pg_wal_lsn_diff(current WAL position, restart_lsn); null once the slot is lost (restart_lsn is NULL then). */
  retainedBytes: number | null;
  /** Bytes that can still be written before the slot is past max_slot_wal_keep_size; null when unbounded. */
  safeWalBytes: number | null;
}

export interface WatchFacts {
  target: string;
  slotName: string;
  database: string;
  walLevel: string;
  maxReplicationSlots: number;
  slotsUsed: number;
  maxWalSenders: number;
  walSendersUsed: number;
  role: { name: string; superuser: boolean; replication: boolean; /** null: no rds_replication role on this server. */ rdsReplication: boolean | null };
  /** current_setting('max_slot_wal_keep_size'), e.g. '-1' or '10GB'. */
  maxSlotWalKeepSize: string;
  /** The same in MB; -1 is unbounded. */
  maxSlotWalKeepSizeMb: number;
  slot: WatchSlotFacts | null;
}

export interface WatchCheckOptions {
  slotRetainedWarnBytes?: number;
}

export const WATCH_CHECK_NAMES = ['production wal_level', 'production replication capacity', 'production replication role'] as const;
export const slotCheckName = (slotName: string) => `watch slot ${slotName}`;
export const KEEP_SIZE_CHECK_NAME = 'production max_slot_wal_keep_size';

// One query, so the figures are from the same moment. On a standby (recovery), pg_current_wal_lsn()
// raises; the replay position is the one its slots are measured against there.
const FACTS_SQL = `
  WITH here AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn
  )
  SELECT current_database() AS database,
         current_setting('wal_level') AS wal_level,
         current_setting('max_replication_slots')::int AS max_slots,
         (SELECT count(*)::int FROM pg_replication_slots) AS slots_used,
         current_setting('max_wal_senders')::int AS max_senders,
         (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'walsender') AS senders_used,
         current_setting('max_slot_wal_keep_size') AS keep_size,
         (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS keep_size_mb,
         r.rolname AS role_name, r.rolsuper AS superuser, r.rolreplication AS replication,
         CASE WHEN to_regrole('rds_replication') IS NULL THEN NULL
              ELSE pg_has_role(current_user, 'rds_replication', 'MEMBER') END AS rds_replication,
         s.slot_name, s.slot_type, s.plugin, s.database AS slot_database, s.active, s.active_pid, s.wal_status,
         pg_wal_lsn_diff((SELECT lsn FROM here), s.restart_lsn)::float8 AS retained_bytes,
         s.safe_wal_size::float8 AS safe_wal_bytes
    FROM pg_roles r
    LEFT JOIN pg_replication_slots s ON s.slot_name = $1
   WHERE r.rolname = current_user`;

interface FactsRow {
  database: string; wal_level: string; max_slots: number; slots_used: number; max_senders: number; senders_used: number;
  keep_size: string; keep_size_mb: string; role_name: string; superuser: boolean; replication: boolean; rds_replication: boolean | null;
  slot_name: string | null; slot_type: string | null; plugin: string | null; slot_database: string | null; active: boolean | null;
  active_pid: number | null; wal_status: string | null; retained_bytes: number | null; safe_wal_bytes: number | null;
}

export async function readWatchFacts(client: pg.Client, target: string): Promise<WatchFacts> {
  const slotName = streamName(target);
  const r = await client.query<FactsRow>(FACTS_SQL, [slotName]);
  const row = r.rows[0];
  if (!row) throw new Error(`the current role is not in pg_roles`);
  return {
    target, slotName, database: row.database, walLevel: row.wal_level,
    maxReplicationSlots: row.max_slots, slotsUsed: row.slots_used,
    maxWalSenders: row.max_senders, walSendersUsed: row.senders_used,
    role: { name: row.role_name, superuser: row.superuser, replication: row.replication, rdsReplication: row.rds_replication },
    maxSlotWalKeepSize: row.keep_size, maxSlotWalKeepSizeMb: Number(row.keep_size_mb),
    slot: row.slot_name === null ? null : {
      name: row.slot_name, slotType: row.slot_type ?? '?', plugin: row.plugin, database: row.slot_database,
      active: row.active === true, activePid: row.active_pid, walStatus: row.wal_status,
      retainedBytes: row.retained_bytes, safeWalBytes: row.safe_wal_bytes,
    },
  };
}

/** The watch checks, in report order, from facts read at one moment. */
export function assessWatch(f: WatchFacts, options: WatchCheckOptions = {}): DoctorCheck[] {
  return [walLevelCheck(f), capacityCheck(f), roleCheck(f), slotCheck(f, options.slotRetainedWarnBytes ?? SLOT_RETAINED_WARN_BYTES), keepSizeCheck(f)];
}

/** Every watch check failed the same way (production unreachable, or the facts could not be read). */
export function unreadableWatchChecks(target: string, detail: string,
  hint = 'the production role must be able to read pg_settings, pg_roles, pg_replication_slots and pg_stat_activity (every role can by default)'): DoctorCheck[] {
  return [...WATCH_CHECK_NAMES, slotCheckName(streamName(target)), KEEP_SIZE_CHECK_NAME].map((name) => ({ name, ok: false, detail, hint }));
}

function walLevelCheck(f: WatchFacts): DoctorCheck {
  const name = 'production wal_level';
  if (f.walLevel === 'logical') return { name, ok: true, detail: 'logical: elara-sync watch can decode changes' };
  return {
    name, ok: true, warning: true,
    detail: `${f.walLevel}: elara-sync watch needs logical (reconcile and the outbox work without it)`,
    hint: 'for watch: wal_level = logical in postgresql.conf, then restart PostgreSQL; on AWS RDS/Aurora rds.logical_replication = 1 in the parameter group (reboot), on Cloud SQL the flag cloudsql.logical_decoding = on, on Azure azure.replication_support = logical (restart)',
  };
}

function capacityCheck(f: WatchFacts): DoctorCheck {
  const name = 'production replication capacity';
  const freeSlots = f.maxReplicationSlots - f.slotsUsed;
  const freeSenders = f.maxWalSenders - f.walSendersUsed;
  const detail = `max_replication_slots ${f.maxReplicationSlots} (${f.slotsUsed} used, ${freeSlots} free), `
    + `max_wal_senders ${f.maxWalSenders} (${f.walSendersUsed} in use, ${freeSenders} free)`;
  // Our slot already exists: watch needs no new one. Watch's own walsender holds a sender while its
  // slot is active, so only an inactive (or missing) slot needs a free sender to start.
  const problems: string[] = [];
  if (!f.slot && freeSlots < 1) problems.push(`no free replication slot for ${f.slotName}`);
  if (!f.slot?.active && freeSenders < 1) problems.push('no free WAL sender for watch to connect');
  if (problems.length === 0) return { name, ok: true, detail: f.slot ? `${detail}; ${f.slotName} exists` : detail };
  return {
    name, ok: true, warning: true, detail: `${detail}: ${problems.join(', ')}`,
    hint: 'for watch: raise max_replication_slots / max_wal_senders (postgresql.conf and restart; managed databases: the parameter group or flags), or drop slots nothing uses (SELECT slot_name, active FROM pg_replication_slots; SELECT pg_drop_replication_slot(\'<name>\'))',
  };
}

function roleCheck(f: WatchFacts): DoctorCheck {
  const name = 'production replication role';
  const r = f.role;
  if (r.superuser) return { name, ok: true, detail: `${r.name} is a superuser (may replicate)` };
  if (r.replication) return { name, ok: true, detail: `${r.name} has the REPLICATION attribute` };
  if (r.rdsReplication) return { name, ok: true, detail: `${r.name} is a member of rds_replication` };
  return {
    name, ok: true, warning: true,
    detail: `${r.name} may not replicate (no REPLICATION attribute${r.rdsReplication === false ? ', not a member of rds_replication' : ''}): elara-sync watch cannot open its slot`,
    hint: r.rdsReplication === false
      ? `for watch on AWS RDS/Aurora: GRANT rds_replication TO ${r.name}`
      : `for watch: ALTER ROLE ${r.name} WITH REPLICATION (as a superuser; on Cloud SQL and Azure as the admin user; on AWS RDS/Aurora GRANT rds_replication TO ${r.name})`,
  };
}

function slotCheck(f: WatchFacts, warnBytes: number): DoctorCheck {
  const name = slotCheckName(f.slotName);
  const s = f.slot;
  const start = `elara-sync watch --target ${f.target}`;
  const drop = `elara-sync watch --drop --target ${f.target}`;
  if (!s) return { name, ok: true, detail: `not present: ${start} creates it, with the publication of the same name` };
  if (s.slotType !== 'logical' || s.plugin !== 'pgoutput' || s.database !== f.database) {
    return {
      name, ok: false,
      detail: `a ${s.slotType} slot named ${s.name} exists (plugin ${s.plugin ?? 'none'}, database ${s.database ?? 'none'}), not watch's (logical, pgoutput, database ${f.database}); it pins WAL on production`,
      hint: `find out what created it; if nothing uses it, SELECT pg_drop_replication_slot('${s.name}') (watch then creates its own)`,
    };
  }
  const state = s.active ? `active (pid ${s.activePid ?? '?'})` : 'inactive';
  const retained = s.retainedBytes === null ? '' : `, retains ${formatBytes(s.retainedBytes)} of WAL`;
  const safe = s.safeWalBytes === null ? '' : `, ${formatBytes(Math.max(0, s.safeWalBytes))} more before max_slot_wal_keep_size invalidates it`;
  const detail = `present, ${state}, wal_status ${s.walStatus ?? '?'}${retained}${safe}`;
  if (s.walStatus === 'lost') {
    return {
      name, ok: false, detail: `${detail}: production removed WAL the slot still needed (max_slot_wal_keep_size exceeded), so the stream cannot continue from it`,
      hint: `${start}: on start it sees the invalidated slot, recreates it and re-snapshots (a full reconcile under the new slot's snapshot); or ${drop} if this target no longer streams`,
    };
  }
  if (s.walStatus === 'unreserved') {
    return {
      name, ok: false, detail: `${detail}: past max_slot_wal_keep_size, the next checkpoint removes WAL the slot needs`,
      hint: `${s.active ? 'watch is connected but behind: check staging (locks, load) and elara_sync_stream_lag_bytes' : `start ${start} now`}; if the slot is lost anyway, the next watch start re-snapshots by itself`,
    };
  }
  if (s.retainedBytes !== null && s.retainedBytes > warnBytes) {
    return {
      name, ok: true, warning: true, detail: `${detail} (more than ${formatBytes(warnBytes)})`,
      hint: s.active
        ? 'watch is connected but behind: check staging (locks, load) and elara_sync_stream_lag_bytes; docs/operations.md#real-time-sync-watch'
        : `the slot pins that WAL on production's disk until it is consumed: start ${start}, or ${drop} if this target no longer streams`,
    };
  }
  return { name, ok: true, detail };
}

function keepSizeCheck(f: WatchFacts): DoctorCheck {
  const name = KEEP_SIZE_CHECK_NAME;
  if (f.maxSlotWalKeepSizeMb >= 0) {
    return { name, ok: true, detail: `${f.maxSlotWalKeepSize}: a slot further behind is invalidated instead of filling the disk (watch then re-snapshots)` };
  }
  // The default. Without a logical slot it bounds nothing that watch creates.
  if (f.walLevel !== 'logical' && !f.slot) {
    return { name, ok: true, detail: '-1 (unbounded); matters once watch runs (wal_level is not logical yet)' };
  }
  return {
    name, ok: true, warning: true,
    detail: '-1 (unbounded): a slot whose watch stops keeps WAL on production until its disk is full',
    hint: "set a bound, e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf(); (no restart; managed databases: the parameter group). A slot that falls further behind is invalidated (wal_status lost) and watch re-snapshots on its next start",
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
