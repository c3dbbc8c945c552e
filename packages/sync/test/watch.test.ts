// watch over a real wal_level = logical server (a throwaway cluster for this file): the snapshot
// handover, every kind of change, and the hazards of the issue (TOAST, restarts, a dropped slot,
// a transaction open across a restart, a column production added, TRUNCATE, idle heartbeats).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { startWatch, type WatchEvent, type WatchHandle, type WatchOptions } from '../src/index.ts';
import { rows } from './helpers.ts';

const SCHEMA = `
CREATE TABLE "Organization" (id int PRIMARY KEY, name text NOT NULL, tier text NOT NULL DEFAULT 'free', notes text);
CREATE TABLE "User" (id int PRIMARY KEY, email text NOT NULL UNIQUE, "organizationId" int NOT NULL REFERENCES "Organization"(id) ON DELETE CASCADE, "lastLoginAt" timestamp(3));
ALTER TABLE "Organization" ALTER COLUMN notes SET STORAGE EXTERNAL;`;
const TABLES = [{ name: 'Organization' }, { name: 'User' }];

let server: LogicalServer;
before(async () => {
  server = await startLogicalServer();
});
after(async () => {
  await server?.stop();
});

async function pair(prefix: string, schema = SCHEMA) {
  const src = await server.createDatabase(`${prefix}_src`);
  const dst = await server.createDatabase(`${prefix}_dst`);
  await server.sql(src, schema);
  await server.sql(dst, schema);
  return { src: server.url(src), dst: server.url(dst), srcDb: src, dstDb: dst };
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const same = async (p: { src: string; dst: string }) => {
  for (const t of ['"Organization"', '"User"']) {
    if (JSON.stringify(await rows(p.src, t)) !== JSON.stringify(await rows(p.dst, t))) return false;
  }
  return true;
};

const streaming = (w: WatchHandle) => waitFor('streaming', async () => w.status().phase === 'streaming');

function watch(p: { src: string; dst: string; srcDb: string }, extra: Partial<WatchOptions> = {}): WatchHandle & { events: WatchEvent[] } {
  const events: WatchEvent[] = [];
  const h = startWatch({ sourceUrl: p.src, targetUrl: p.dst, tables: TABLES, targetName: p.srcDb, heartbeatMs: 500, backoffMs: { initial: 100, max: 1000 }, onEvent: (e) => events.push(e), ...extra });
  return Object.assign(h, { events });
}

test('changes made before and during the initial snapshot, then inserts, updates, deletes and key updates arrive', async () => {
  const p = await pair('basic');
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) SELECT g, 'org ' || g FROM generate_series(1, 200) g;
    INSERT INTO "User" SELECT g, 'u' || g || '@x.test', 1 + g % 200, '2026-01-01' FROM generate_series(1, 2000) g`);
  // A writer during the snapshot.
  let writing = true;
  let n = 1000;
  const writer = (async () => {
    while (writing) {
      n++;
      await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (${n}, 'w'); UPDATE "User" SET "lastLoginAt" = now() WHERE id = ${n % 2000 + 1}`);
    }
  })();
  const w = watch(p);
  await streaming(w);
  await new Promise((r) => setTimeout(r, 300));
  writing = false;
  await writer;
  await waitFor('target = source after the snapshot', () => same(p));
  assert.equal(w.status().snapshots, 1);

  await server.sql(p.srcDb, `BEGIN; INSERT INTO "Organization" (id, name) VALUES (5000, 'new'); INSERT INTO "User" VALUES (5000, 'n@x.test', 5000, NULL); COMMIT`);
  await server.sql(p.srcDb, `UPDATE "Organization" SET tier = 'enterprise' WHERE id = 3`);
  await server.sql(p.srcDb, `UPDATE "User" SET id = 9000 WHERE id = 7`);
  await server.sql(p.srcDb, `DELETE FROM "Organization" WHERE id = 4`);
  await server.sql(p.srcDb, `BEGIN; DELETE FROM "User" WHERE id = 5000; DELETE FROM "Organization" WHERE id = 5000; COMMIT`);
  await waitFor('every change', () => same(p));
  await w.stop();
  assert.equal(w.status().phase, 'stopped');
});

test('unchanged TOASTed values are never written as placeholders; changed ones arrive; FK order inside one transaction', async () => {
  const p = await pair('toast');
  const big = `repeat(md5(random()::text), 400)`; // 12.8 kB, stored out of line (STORAGE EXTERNAL)
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name, notes) VALUES (1, 'a', ${big}), (2, 'b', ${big})`);
  const w = watch(p);
  await streaming(w);
  // Only another column changes: pgoutput sends the notes column as 'unchanged'.
  await server.sql(p.srcDb, `UPDATE "Organization" SET tier = 'pro' WHERE id = 1`);
  await server.sql(p.srcDb, `UPDATE "Organization" SET notes = ${big} WHERE id = 2`);
  // A child before its parent in one transaction, then a parent deleted with its child (ON DELETE CASCADE).
  await server.sql(p.srcDb, `BEGIN; SET CONSTRAINTS ALL DEFERRED; INSERT INTO "Organization" (id, name) VALUES (3, 'c'); INSERT INTO "User" VALUES (1, 'x@x.test', 3, NULL); COMMIT`);
  await server.sql(p.srcDb, `INSERT INTO "User" VALUES (2, 'y@x.test', 1, NULL)`);
  await server.sql(p.srcDb, `DELETE FROM "Organization" WHERE id = 1`);
  await waitFor('equal', () => same(p));
  const notes = await server.sql(p.dstDb, `SELECT id, length(notes) AS n FROM "Organization" ORDER BY id`);
  assert.deepEqual(notes.rows.map((r) => [r.id, r.n]), [[2, 12800], [3, null]]);
  await w.stop();
});

test('a transaction open across a watch restart, that commits while watch is down, arrives (Debezium #76)', async () => {
  const p = await pair('open');
  const w1 = watch(p);
  await streaming(w1);
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: p.src });
  await c.connect();
  await c.query(`BEGIN; INSERT INTO "Organization" (id, name) VALUES (10, 'begun while watch ran')`);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (11, 'committed first')`);
  await waitFor('11', async () => (await server.sql(p.dstDb, `SELECT 1 FROM "Organization" WHERE id = 11`)).rowCount === 1);
  await w1.stop();
  await c.query(`INSERT INTO "Organization" (id, name) VALUES (12, 'same tx'); COMMIT`);
  await c.end();
  const w2 = watch(p);
  await waitFor('the open transaction', () => same(p));
  assert.equal(w2.status().snapshots, 0, 'resumed from the recorded position, no snapshot');
  await w2.stop();
});

test('a server immediate stop and restart: watch reconnects with backoff and goes on from its position', async () => {
  const p = await pair('restart');
  const w = watch(p);
  await streaming(w);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) SELECT g, 'before' FROM generate_series(1, 50) g`);
  await waitFor('before', () => same(p));
  server.halt('immediate');
  await waitFor('reconnecting', async () => w.status().phase === 'reconnecting');
  server.start();
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) SELECT g, 'after' FROM generate_series(51, 100) g; UPDATE "Organization" SET tier = 'x' WHERE id < 10`);
  await waitFor('after the restart', () => same(p), 40_000);
  assert.ok(w.status().reconnects >= 1);
  assert.equal(w.status().snapshots, 1, 'the slot survived the crash: no new snapshot');
  await w.stop();
});

test('the slot dropped (or re-created) while watch is down is detected and the target re-snapshotted', async () => {
  const p = await pair('dropped');
  const w1 = watch(p);
  await streaming(w1);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (1, 'a'), (2, 'b')`);
  await waitFor('a b', () => same(p));
  await w1.stop();
  const slot = w1.status().slot;
  await server.sql(p.srcDb, `SELECT pg_drop_replication_slot('${slot}')`);
  // Written while no slot existed: only a snapshot can bring these.
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (3, 'c'); DELETE FROM "Organization" WHERE id = 1`);
  const w2 = watch(p);
  await waitFor('re-snapshot', () => same(p));
  assert.equal(w2.status().snapshots, 1);
  assert.ok(w2.events.some((e) => e.kind === 'snapshot-start' && /gone/.test(e.reason)), JSON.stringify(w2.events.filter((e) => e.kind === 'snapshot-start')));
  await w2.stop();

  // Re-created by someone else at a later point: the slot is ahead of the position.
  await server.sql(p.srcDb, `SELECT pg_drop_replication_slot('${slot}')`);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (4, 'd')`);
  await server.sql(p.srcDb, `SELECT pg_create_logical_replication_slot('${slot}', 'pgoutput')`);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (5, 'e')`);
  const w3 = watch(p);
  await waitFor('re-snapshot after re-creation', () => same(p));
  assert.ok(w3.events.some((e) => e.kind === 'snapshot-start' && /ahead/.test(e.reason)), JSON.stringify(w3.events.filter((e) => e.kind === 'snapshot-start')));
  await w3.stop();
});

test('a column production added stops the stream naming it, until staging is migrated', async () => {
  const p = await pair('column');
  const w = watch(p, { onFatal: 'stop' });
  await streaming(w);
  await server.sql(p.srcDb, `ALTER TABLE "User" ADD COLUMN phone text; INSERT INTO "Organization" (id, name) VALUES (1, 'a'); INSERT INTO "User" VALUES (1, 'p@x.test', 1, NULL, '+1 555')`);
  await assert.rejects(w.done, (e: Error & { code?: string }) => /User\.phone/.test(e.message) && e.code === 'E_SCHEMA_MISMATCH');
  assert.equal((await server.sql(p.dstDb, `SELECT count(*)::int AS n FROM "User"`)).rows[0].n, 0, 'nothing of that transaction was applied');
  await server.sql(p.dstDb, `ALTER TABLE "User" ADD COLUMN phone text`);
  const w2 = watch(p, { onFatal: 'stop' });
  await waitFor('after the migration', async () => JSON.stringify(await rows(p.src, '"User"')) === JSON.stringify(await rows(p.dst, '"User"')));
  // The plans changed (a new column on both sides): the target is compared once more under a fresh snapshot.
  assert.ok(w2.events.some((e) => e.kind === 'snapshot-start' && /changed/.test(e.reason)), JSON.stringify(w2.events.filter((e) => e.kind === 'snapshot-start')));
  await w2.stop();
});

test('TRUNCATE in production empties the table in staging, keeping rows QA created there', async () => {
  const p = await pair('truncate');
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) SELECT g, 'o' FROM generate_series(1, 20) g`);
  const w = watch(p);
  await waitFor('snapshot', () => same(p));
  await server.sql(p.dstDb, `INSERT INTO "Organization" (id, name) VALUES (777, 'made by QA')`);
  await server.sql(p.srcDb, `TRUNCATE "User", "Organization"`);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) VALUES (1, 'again')`);
  await waitFor('truncated', async () => (await server.sql(p.dstDb, `SELECT string_agg(id::text, ',' ORDER BY id) AS ids FROM "Organization"`)).rows[0].ids === '1,777');
  await w.stop();
});

test('a large source transaction is applied in chunks inside one target transaction', async () => {
  const p = await pair('large');
  const w = watch(p, { chunkKeys: 1000 });
  await streaming(w);
  await server.sql(p.srcDb, `INSERT INTO "Organization" (id, name) SELECT g, 'o' || g FROM generate_series(1, 100) g;
    INSERT INTO "User" SELECT g, 'u' || g || '@x.test', 1 + g % 100, NULL FROM generate_series(1, 20000) g`);
  await waitFor('20k rows', () => same(p), 60_000);
  const st = await server.sql(p.dstDb, `SELECT transactions::int AS t FROM elara_sync.stream_state`);
  assert.equal(st.rows[0].t, 1, 'one source transaction, recorded once');
  await w.stop();
});

test('idle: writes elsewhere on the server do not make the slot pin WAL (heartbeat positions are recorded and confirmed)', async () => {
  const p = await pair('idle');
  const w = watch(p);
  await streaming(w);
  const other = await server.createDatabase('idle_other');
  await server.sql(other, `CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 50000)`);
  const slot = w.status().slot;
  const before = (await server.sql(p.srcDb, `SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1`, [slot])).rows[0].l;
  await server.sql(other, `INSERT INTO t SELECT generate_series(1, 50000)`);
  await waitFor('confirmed position to move', async () => {
    const r = await server.sql(p.srcDb, `SELECT confirmed_flush_lsn > $2::pg_lsn AS moved FROM pg_replication_slots WHERE slot_name = $1`, [slot, before]);
    return r.rows[0].moved;
  });
  const st = await server.sql(p.dstDb, `SELECT lsn >= (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE false) IS NOT FALSE AS ok, lsn::text FROM elara_sync.stream_state`);
  assert.ok(st.rows[0].ok);
  await w.stop();
});

test('a target that is the source, or a source without wal_level = logical, is refused with a clear error', async () => {
  const p = await pair('refuse');
  const self = startWatch({ sourceUrl: p.src, targetUrl: p.src, tables: TABLES, targetName: 'self', onFatal: 'stop' });
  await assert.rejects(self.done, (e: Error & { code?: string }) => e.code === 'E_SAME_DATABASE');
  const { createTestDatabase } = await import('@elara/testkit');
  const plain = await createTestDatabase('watch_plain');
  try {
    const w = startWatch({ sourceUrl: plain.url, targetUrl: p.dst, tables: TABLES, targetName: 'plain', onFatal: 'stop' });
    await assert.rejects(w.done, (e: Error & { code?: string; hint?: string }) => e.code === 'E_WAL_LEVEL' && /wal_level = logical/.test(e.hint ?? '') && /rds\.logical_replication/.test(e.hint ?? ''));
  } finally {
    await plain.drop();
  }
});
