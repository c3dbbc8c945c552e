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

function watch(p: { src: string; dst: string }, extra: Partial<WatchOptions> = {}): WatchHandle & { events: WatchEvent[] } {
  const events: WatchEvent[] = [];
  const h = startWatch({ sourceUrl: p.src, targetUrl: p.dst, tables: TABLES, heartbeatMs: 500, backoffMs: { initial: 100, max: 1000 }, onEvent: (e) => events.push(e), ...extra });
  return Object.assign(h, { events });
}

test('changes made before and during the initial snapshot, then inserts, updates, deletes and key updates arrive', async () => {
  const p = await pair('basic');
  await server.sql(p.src.replace(/.*\//, '') && p.srcDb, `INSERT INTO "Organization" (id, name) SELECT g, 'org ' || g FROM generate_series(1, 200) g;
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
  await waitFor('streaming', async () => w.status().phase === 'streaming').catch((e) => { console.log(w.status(), w.events); throw e; });
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
