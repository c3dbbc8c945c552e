// The doctor's watch checks: each verdict from facts (one row per case), then the same checks
// against a real wal_level = logical server with watch's slot absent, present, retaining WAL and lost.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { formatDoctorReport, runDoctor, type DoctorCheck, type DoctorResult } from '../src/doctor/index.ts';
import { assessWatch, formatBytes, type WatchFacts, type WatchSlotFacts } from '../src/doctor/watch.ts';

const GiB = 1024 ** 3;

const base: WatchFacts = {
  target: 'staging', slotName: 'elara_sync_staging', database: 'elara_production', walLevel: 'logical',
  maxReplicationSlots: 10, slotsUsed: 0, maxWalSenders: 10, walSendersUsed: 0,
  role: { name: 'elara_sync_reader', superuser: false, replication: true, rdsReplication: null },
  maxSlotWalKeepSize: '10GB', maxSlotWalKeepSizeMb: 10240, slot: null,
};
const ourSlot: WatchSlotFacts = {
  name: 'elara_sync_staging', slotType: 'logical', plugin: 'pgoutput', database: 'elara_production',
  active: false, activePid: null, walStatus: 'reserved', retainedBytes: 4096, safeWalBytes: 10 * GiB,
};

type Verdict = 'pass' | 'warn' | 'fail';
const verdict = (c: DoctorCheck): Verdict => (!c.ok ? 'fail' : c.warning ? 'warn' : 'pass');

describe('assessWatch', () => {
  const cases: Array<{ name: string; facts: Partial<WatchFacts>; check: string; expect: Verdict; detail: RegExp; hint?: RegExp }> = [
    { name: 'wal_level logical', facts: {}, check: 'production wal_level', expect: 'pass', detail: /^logical/ },
    {
      name: 'wal_level replica is a warning naming every managed flag', facts: { walLevel: 'replica' }, check: 'production wal_level', expect: 'warn',
      detail: /^replica: elara-sync watch needs logical \(reconcile and the outbox work without it\)/,
      hint: /wal_level = logical in postgresql\.conf, then restart.*rds\.logical_replication = 1 in the parameter group.*cloudsql\.logical_decoding = on.*azure\.replication_support = logical/,
    },
    { name: 'free slots and senders', facts: { slotsUsed: 3, walSendersUsed: 2 }, check: 'production replication capacity', expect: 'pass', detail: /^max_replication_slots 10 \(3 used, 7 free\), max_wal_senders 10 \(2 in use, 8 free\)$/ },
    {
      name: 'no free slot and no slot of ours', facts: { slotsUsed: 10 }, check: 'production replication capacity', expect: 'warn',
      detail: /no free replication slot for elara_sync_staging/, hint: /raise max_replication_slots.*pg_drop_replication_slot/,
    },
    { name: 'no free slot, but ours exists', facts: { slotsUsed: 10, slot: ourSlot }, check: 'production replication capacity', expect: 'pass', detail: /elara_sync_staging exists$/ },
    { name: 'no free sender, our slot inactive', facts: { walSendersUsed: 10, slot: ourSlot }, check: 'production replication capacity', expect: 'warn', detail: /no free WAL sender/ },
    { name: 'no free sender, our slot active (its walsender is one of them)', facts: { walSendersUsed: 10, slot: { ...ourSlot, active: true, activePid: 42 } }, check: 'production replication capacity', expect: 'pass', detail: /10 in use, 0 free/ },
    { name: 'superuser', facts: { role: { name: 'postgres', superuser: true, replication: false, rdsReplication: null } }, check: 'production replication role', expect: 'pass', detail: /postgres is a superuser/ },
    { name: 'REPLICATION attribute', facts: {}, check: 'production replication role', expect: 'pass', detail: /has the REPLICATION attribute/ },
    { name: 'member of rds_replication', facts: { role: { name: 'app', superuser: false, replication: false, rdsReplication: true } }, check: 'production replication role', expect: 'pass', detail: /member of rds_replication/ },
    {
      name: 'no replication right', facts: { role: { name: 'app', superuser: false, replication: false, rdsReplication: null } }, check: 'production replication role', expect: 'warn',
      detail: /app may not replicate/, hint: /ALTER ROLE app WITH REPLICATION.*GRANT rds_replication TO app/,
    },
    {
      name: 'RDS without rds_replication', facts: { role: { name: 'app', superuser: false, replication: false, rdsReplication: false } }, check: 'production replication role', expect: 'warn',
      detail: /not a member of rds_replication/, hint: /^for watch on AWS RDS\/Aurora: GRANT rds_replication TO app$/,
    },
    { name: 'slot absent is informational', facts: {}, check: 'watch slot elara_sync_staging', expect: 'pass', detail: /^not present: elara-sync watch --target staging creates it/ },
    { name: 'slot present and small', facts: { slot: ourSlot }, check: 'watch slot elara_sync_staging', expect: 'pass', detail: /^present, inactive, wal_status reserved, retains 4\.0 KiB of WAL, 10\.0 GiB more before/ },
    {
      name: 'inactive slot retaining more than the threshold', facts: { slot: { ...ourSlot, retainedBytes: 3 * GiB } }, check: 'watch slot elara_sync_staging', expect: 'warn',
      detail: /retains 3\.0 GiB of WAL.*\(more than 1\.0 GiB\)/, hint: /start elara-sync watch --target staging, or elara-sync watch --drop --target staging/,
    },
    {
      name: 'active slot retaining more than the threshold', facts: { slot: { ...ourSlot, active: true, activePid: 7, retainedBytes: 3 * GiB } }, check: 'watch slot elara_sync_staging', expect: 'warn',
      detail: /present, active \(pid 7\)/, hint: /connected but behind/,
    },
    {
      name: 'lost slot', facts: { slot: { ...ourSlot, walStatus: 'lost', retainedBytes: null, safeWalBytes: null } }, check: 'watch slot elara_sync_staging', expect: 'fail',
      detail: /wal_status lost: production removed WAL/, hint: /recreates it and re-snapshots/,
    },
    {
      name: 'unreserved slot', facts: { slot: { ...ourSlot, walStatus: 'unreserved', safeWalBytes: -5 } }, check: 'watch slot elara_sync_staging', expect: 'fail',
      detail: /0 B more before.*past max_slot_wal_keep_size/, hint: /start elara-sync watch --target staging now.*re-snapshots by itself/,
    },
    {
      name: 'a slot under our name that is not ours', facts: { slot: { ...ourSlot, plugin: 'wal2json' } }, check: 'watch slot elara_sync_staging', expect: 'fail',
      detail: /plugin wal2json.*not watch's/, hint: /pg_drop_replication_slot\('elara_sync_staging'\)/,
    },
    { name: 'our name in another database', facts: { slot: { ...ourSlot, database: 'other' } }, check: 'watch slot elara_sync_staging', expect: 'fail', detail: /database other/ },
    { name: 'keep size bounded', facts: {}, check: 'production max_slot_wal_keep_size', expect: 'pass', detail: /^10GB: a slot further behind is invalidated/ },
    {
      name: 'keep size unbounded with logical decoding', facts: { maxSlotWalKeepSize: '-1', maxSlotWalKeepSizeMb: -1 }, check: 'production max_slot_wal_keep_size', expect: 'warn',
      detail: /^-1 \(unbounded\)/, hint: /max_slot_wal_keep_size = '10GB'.*invalidated \(wal_status lost\) and watch re-snapshots/,
    },
    { name: 'keep size unbounded, wal_level replica', facts: { walLevel: 'replica', maxSlotWalKeepSize: '-1', maxSlotWalKeepSizeMb: -1 }, check: 'production max_slot_wal_keep_size', expect: 'pass', detail: /matters once watch runs/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const checks = assessWatch({ ...base, ...c.facts });
      const found = checks.find((x) => x.name === c.check);
      assert.ok(found, `no check ${c.check}: ${checks.map((x) => x.name).join(', ')}`);
      assert.equal(verdict(found), c.expect, JSON.stringify(found));
      assert.match(found.detail, c.detail);
      if (c.hint) assert.match(found.hint ?? '', c.hint);
      if (c.expect !== 'pass') assert.ok(found.hint, 'a warning or failure says what to do');
    });
  }

  test('the threshold is an option', () => {
    const [, , , slot] = assessWatch({ ...base, slot: ourSlot }, { slotRetainedWarnBytes: 1024 });
    assert.equal(slot?.warning, true);
    assert.match(slot?.detail ?? '', /more than 1\.0 KiB/);
  });

  test('formatBytes', () => {
    assert.deepEqual([0, 1023, 1024, 5 * GiB, 1536 * 1024].map(formatBytes), ['0 B', '1023 B', '1.0 KiB', '5.0 GiB', '1.5 MiB']);
  });
});

const SCHEMA = `
  CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL);
  CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL, "organizationId" uuid NOT NULL REFERENCES "Organization"(id));
`;

describe('runDoctor against a wal_level = logical production', () => {
  let server: LogicalServer;
  let prodDb: string;
  let staging: TestDatabase;
  const slot = 'elara_sync_staging';

  before(async () => {
    server = await startLogicalServer();
    prodDb = await server.createDatabase('doctor_watch_prod');
    await server.sql(prodDb, SCHEMA);
    staging = await createTestDatabase('doctor_watch_staging');
    await sql(staging.url, SCHEMA);
  });

  after(async () => {
    await staging?.drop();
    await server?.stop();
  });

  const doctor = (extra: { sourceUrl?: string; slotRetainedWarnBytes?: number } = {}) =>
    runDoctor({ sourceUrl: server.url(prodDb), targetUrl: staging.url, ...extra });
  function check(r: DoctorResult, name: string): DoctorCheck {
    const c = r.checks.find((x) => x.name === name);
    assert.ok(c, `no check ${name}: ${formatDoctorReport(r)}`);
    return c;
  }
  /** Writes WAL on production: a row, then a switch to the next segment. */
  async function writeWal(segments: number) {
    for (let i = 0; i < segments; i++) {
      await server.sql(prodDb, `INSERT INTO "Organization" VALUES (gen_random_uuid(), 'wal ' || $1)`, [i]);
      await server.sql(prodDb, 'SELECT pg_switch_wal()');
    }
  }

  test('no slot yet: wal_level passes, the slot is informational, an unbounded keep size warns', async () => {
    const r = await doctor();
    assert.equal(verdict(check(r, 'production wal_level')), 'pass');
    assert.match(check(r, 'production replication capacity').detail, /^max_replication_slots 20 \(0 used, 20 free\), max_wal_senders 20 \(0 in use, 20 free\)$/);
    assert.match(check(r, 'production replication role').detail, /postgres is a superuser/);
    const s = check(r, `watch slot ${slot}`);
    assert.equal(verdict(s), 'pass');
    assert.match(s.detail, /^not present: elara-sync watch --target staging creates it/);
    const keep = check(r, 'production max_slot_wal_keep_size');
    assert.equal(verdict(keep), 'warn');
    assert.match(keep.hint ?? '', /max_slot_wal_keep_size = '10GB'/);
    assert.match(formatDoctorReport(r), /^WARN production max_slot_wal_keep_size: -1 \(unbounded\)/m);
  });

  test('a role without REPLICATION warns with the ALTER ROLE to run; rds_replication membership passes', async () => {
    await server.sql(prodDb, 'CREATE ROLE doctor_plain LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO doctor_plain');
    const u = new URL(server.url(prodDb));
    u.username = 'doctor_plain';
    const plain = check(await doctor({ sourceUrl: u.toString() }), 'production replication role');
    assert.equal(verdict(plain), 'warn');
    assert.match(plain.detail, /^doctor_plain may not replicate/);
    assert.match(plain.hint ?? '', /ALTER ROLE doctor_plain WITH REPLICATION/);

    // What AWS RDS/Aurora grant instead of the attribute.
    await server.sql(prodDb, 'CREATE ROLE rds_replication; GRANT rds_replication TO doctor_plain');
    const rds = check(await doctor({ sourceUrl: u.toString() }), 'production replication role');
    assert.equal(verdict(rds), 'pass');
    assert.match(rds.detail, /member of rds_replication/);
  });

  test("watch's slot present: its state and retained WAL, with a warning above the threshold", async () => {
    await server.sql(prodDb, `SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`);
    await writeWal(2);
    const r = await doctor();
    const s = check(r, `watch slot ${slot}`);
    assert.equal(verdict(s), 'pass', s.detail);
    assert.match(s.detail, /^present, inactive, wal_status (reserved|extended), retains \d+(\.\d)? (KiB|MiB) of WAL$/);
    assert.match(check(r, 'production replication capacity').detail, /1 used, 19 free.*elara_sync_staging exists$/);

    const low = check(await doctor({ slotRetainedWarnBytes: 1024 }), `watch slot ${slot}`);
    assert.equal(verdict(low), 'warn');
    assert.match(low.detail, /\(more than 1\.0 KiB\)$/);
    assert.match(low.hint ?? '', /start elara-sync watch --target staging, or elara-sync watch --drop --target staging/);
    // (This pair has no migrations table or run records, so other checks fail; none of watch's does.)
    const watchNames = ['production wal_level', 'production replication capacity', 'production replication role', `watch slot ${slot}`, 'production max_slot_wal_keep_size'];
    assert.deepEqual(r.checks.filter((c) => watchNames.includes(c.name) && !c.ok), [], 'a healthy slot fails no watch check');
  });

  test('a bounded keep size passes; a slot past it is lost, and that fails', async () => {
    await server.sql('postgres', "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
    await server.sql('postgres', 'SELECT pg_reload_conf()');
    await writeWal(4);
    await server.sql(prodDb, 'CHECKPOINT');
    const r = await doctor();
    assert.equal(verdict(check(r, 'production max_slot_wal_keep_size')), 'pass');
    assert.match(check(r, 'production max_slot_wal_keep_size').detail, /^1MB: /);
    const s = check(r, `watch slot ${slot}`);
    assert.equal(verdict(s), 'fail', s.detail);
    assert.match(s.detail, /^present, inactive, wal_status lost: production removed WAL/);
    assert.match(s.hint ?? '', /re-snapshots/);
    assert.equal(r.ok, false, 'a lost slot makes the doctor exit 1');
  });
});
