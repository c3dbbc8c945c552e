// Real-time sync in the API process (SYNC_WATCH): on a wal_level = logical production (a throwaway
// cluster) the backend streams an UPDATE made with SQL in production (not through the API) to
// staging, exports the stream on /metrics and in the status API, and stops it cleanly at shutdown;
// on the default test server (wal_level = replica) SYNC_WATCH=auto starts the API without watch
// and says why, and registrations still reach staging through the outbox.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { STREAM_METRICS } from '@elara/sync';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { exposedMetricNames, promtool } from '@elara/testkit/prometheus';
import { markProduction, migrateDatabase } from '../src/db/migrate.ts';
import { createDatabases, json, registration, sql, startTestServer, waitFor, type Databases } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';
import type { SyncStatus } from '../src/ops/status.ts';

const SYNC_CONFIG = fileURLToPath(new URL('../../../elara-sync.yml', import.meta.url));
const OPS_TOKEN = 'ops-token-for-watch-tests-0123456789abcdef';

const errorLines = (s: { logs: { lines: string[] } }) => s.logs.lines.filter((l) => /"level":(50|60)/.test(l));

async function status(s: RunningServer): Promise<SyncStatus> {
  const res = await fetch(`${s.url}/api/v2/sync/status`, { headers: { authorization: `Bearer ${OPS_TOKEN}` } });
  assert.equal(res.status, 200);
  return (await res.json()) as SyncStatus;
}

async function scrape(s: RunningServer): Promise<string> {
  const res = await fetch(`${s.url}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

describe('SYNC_WATCH=on against a wal_level = logical production', () => {
  let lr: LogicalServer;
  let prod: string;
  let staging: string;
  let server: Awaited<ReturnType<typeof startTestServer>>;

  before(async () => {
    lr = await startLogicalServer();
    prod = lr.url(await lr.createDatabase('watch_prod'));
    staging = lr.url(await lr.createDatabase('watch_stg'));
    await migrateDatabase(prod, { outbox: true });
    await markProduction(prod);
    await migrateDatabase(staging);
    server = await startTestServer({ DATABASE_URL: prod, STAGING_DATABASE_URL: staging, SYNC_WATCH: 'on', OPS_TOKEN, ELARA_SYNC_CONFIG: SYNC_CONFIG });
  });
  after(async () => {
    await server?.close();
    await lr?.stop();
  });

  test('an UPDATE made with SQL in production shows in staging; /metrics and the status API show the stream', async () => {
    // Rows written with SQL only: a registration's outbox sync and the stream can insert the same new
    // key at once (both classify against staging under the shared apply lock, then INSERT), and the
    // loser retries (a 23505, a watch reconnect); that engine race is not what this test is about.
    const orgId = '00000000-0000-0000-0000-0000000000e1';
    await sql(prod, `INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES ($1, 'Streamed Co', 'k-e1', 'x')`, [orgId]);
    await waitFor(async () => server.watches.statuses().every((s) => s.phase === 'streaming'), 30_000, 50);
    await waitFor(async () => (await sql(staging, `SELECT 1 FROM "Organization" WHERE id = $1`, [orgId])).rowCount, 15_000, 50);

    // Not through the API: no outbox job, only the stream can bring it to staging before the next reconcile (none runs here).
    await sql(prod, `UPDATE "Organization" SET name = 'Renamed by psql' WHERE id = $1`, [orgId]);
    await waitFor(async () => (await sql(staging, `SELECT 1 FROM "Organization" WHERE id = $1 AND name = 'Renamed by psql'`, [orgId])).rowCount, 15_000, 50);

    const text = await scrape(server);
    assert.match(text, /^elara_sync_stream_up\{target="staging"\} 1$/m);
    const types = exposedMetricNames(text);
    for (const m of STREAM_METRICS) assert.equal(types.get(m.name), m.type, m.name);
    const streamBlocks = text.split(/\n(?=# HELP )/).filter((b) => STREAM_METRICS.some((m) => b.startsWith(`# HELP ${m.name} `))).join('\n').trimEnd() + '\n';
    assert.equal(streamBlocks.split('\n').filter((l) => l.startsWith('elara_sync_stream_')).length, STREAM_METRICS.length, streamBlocks);
    const checked = promtool(['check', 'metrics'], streamBlocks);
    assert.equal(checked.output, '');
    assert.equal(checked.status, 0);
    const applied = Number(/^elara_sync_stream_transactions_total\{target="staging"\} (\d+)$/m.exec(text)?.[1]);
    assert.ok(applied >= 1, text);

    const st = await status(server);
    assert.equal(st.watch.mode, 'on');
    assert.equal(st.watch.reason, null);
    assert.equal(st.watch.streams.length, 1);
    const stream = st.watch.streams[0]!;
    assert.equal(stream.target, 'staging');
    assert.equal(stream.phase, 'streaming');
    assert.equal(stream.slot, 'elara_sync_staging');
    assert.match(stream.lsn ?? '', /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(stream.transactions >= 1 && stream.rows >= 1, JSON.stringify(stream));
    assert.equal(stream.snapshots, 1);
    assert.equal(stream.lastError, null);
    assert.equal(stream.reconnects, 0);
    assert.ok(server.logs.lines.some((l) => l.includes('[Watch] streaming production')), server.logs.text());
  });

  test('shutdown stops the stream (its slot is released) with no error-level line', async () => {
    await server.close();
    const slot = (await sql(prod, `SELECT active FROM pg_replication_slots WHERE slot_name = 'elara_sync_staging'`)).rows[0];
    assert.equal(slot?.active, false);
    assert.ok(server.logs.lines.some((l) => l.includes('[Watch] stopped')), server.logs.text());
    assert.deepEqual(errorLines(server), []);
  });
});

describe('SYNC_WATCH=auto on a wal_level = replica production (the default test server)', () => {
  let dbs: Databases;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  before(async () => {
    dbs = await createDatabases('backend_watch_auto');
    server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, OPS_TOKEN, ELARA_SYNC_CONFIG: SYNC_CONFIG });
  });
  after(async () => {
    await server?.close();
    await dbs?.drop();
  });

  test('starts without watch, says why once, and registrations still reach staging through the outbox', async () => {
    const level = (await sql(dbs.prod.url, `SELECT current_setting('wal_level') AS w`)).rows[0]!.w as string;
    assert.notEqual(level, 'logical', 'this test needs the default server without logical decoding');
    const off = server.logs.lines.filter((l) => l.includes('[Watch] real-time sync is off'));
    assert.equal(off.length, 1, server.logs.text());
    assert.match(off[0]!, /"level":30/);
    assert.match(off[0]!, new RegExp(`wal_level = ${level}, not logical.*the outbox and the reconcile still sync staging`));
    assert.equal(server.watches.state.mode, 'off');

    const body = registration();
    const reg = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: body });
    assert.equal(reg.statusCode, 201, reg.body);
    await waitFor(async () => (await sql(dbs.staging.url, 'SELECT 1 FROM "User" WHERE email = $1', [body.email])).rowCount, 15_000, 50);

    const st = await status(server);
    assert.equal(st.watch.mode, 'off');
    assert.match(st.watch.reason ?? '', /wal_level = replica/);
    assert.deepEqual(st.watch.streams, []);
    // Declared, with no series: no stream alert fires for a process that does not stream.
    const text = await scrape(server);
    assert.match(text, /^# TYPE elara_sync_stream_up gauge$/m);
    assert.doesNotMatch(text, /^elara_sync_stream_/m);
    const slots = (await sql(dbs.prod.url, `SELECT count(*)::int AS n FROM pg_replication_slots WHERE database = current_database()`)).rows[0]!.n;
    assert.equal(slots, 0);
    assert.deepEqual(errorLines(server), []);
  });
});
