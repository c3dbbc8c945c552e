// The /sync page's pure helpers and its static files, without a browser (the browser test that
// loads the page against a running backend comes with the route).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { tileState } from '../src/ops/status.ts';

const dir = new URL('../src/ops/dashboard/', import.meta.url);
// A plain .js module with no types: imported by URL so TypeScript treats it as `any`.
const d = await import(new URL('dashboard.js', dir).href);

const now = Date.parse('2025-10-15T12:00:00Z');
const iso = (secondsAgo: number) => new Date(now - secondsAgo * 1000).toISOString();
const run = (id: number, startedAgo: number, status: string, changed = 0, extra: Record<string, unknown> = {}) => ({
  id, startedAt: iso(startedAgo), finishedAt: status === 'running' ? null : iso(startedAgo - 2), status, mode: 'run', durationMs: 2000, error: null,
  tables: [{ table: 'User', sourceRows: 7, targetRows: 7, inserted: changed, updated: 0, deleted: 0, unchanged: 7, conflicts: 0, durationMs: 5 }],
  ...extra,
});
const status = (over: Record<string, unknown> = {}) => ({
  generatedAt: iso(0), intervalSeconds: 300,
  staging: { configured: true, reachable: true, error: null },
  tables: [{ table: 'User', productionRows: 7, stagingRows: 7, lagRows: 0, lagSeconds: 12, lastEqualAt: iso(12), state: 'green' }],
  runs: [run(2, 60, 'ok', 3), run(1, 360, 'ok', 7)],
  immediate: { enabled: true, successes: 3, failures: 0, backlog: 0, oldestAgeSeconds: 0, recentFailures: [] },
  ...over,
});

describe('tile state (decided by the server only)', () => {
  test('green within two intervals, amber behind, red after an hour, an errored run or staging down', () => {
    const t = (lagSeconds: number | null, lagRows: number | null = 0, over: Record<string, unknown> = {}) =>
      tileState({ stagingReachable: true, lastRunStatus: 'ok', lagSeconds, lagRows, intervalSeconds: 300, ...over });
    assert.equal(t(12), 'green');
    assert.equal(t(599), 'green');
    assert.equal(t(600), 'amber');
    assert.equal(t(30, 2), 'green', 'rows differ only briefly');
    assert.equal(t(300, 2), 'amber');
    assert.equal(t(3600), 'red');
    assert.equal(t(null), 'red', 'never equal');
    assert.equal(t(0, 0, { stagingReachable: false }), 'red');
    assert.equal(t(0, 0, { lastRunStatus: 'error' }), 'red');
    assert.equal(t(0, null, { lastRunStatus: null }), 'green');
  });

  test("the page shows the server's state, and red when it has none", () => {
    assert.equal(d.tileState({ table: 'User', lagSeconds: 0, state: 'amber' }), 'amber');
    assert.equal(d.tileState({ table: 'User', lagSeconds: 0, state: 'purple' }), 'red');
    assert.equal(d.tileState({ table: 'User', lagSeconds: 0 }), 'red');
    assert.equal(d.computeState, undefined, 'no second copy of the rules in the page');
  });
});

describe('chart, failures, banner', () => {
  test('chart points oldest first, rows changed summed, lag since the previous success', () => {
    const pts = d.chartModel([run(3, 10, 'ok', 1), run(1, 610, 'ok', 5), run(2, 310, 'error', 0)]);
    assert.deepEqual(pts.map((p: any) => [p.id, p.rows, p.lag]), [[1, 5, null], [2, 0, 298], [3, 1, 598]]);
  });

  test('failures newest first', () => {
    const s = status({
      runs: [run(2, 60, 'error', 0, { error: 'E_CONNECT_TARGET: staging refused' }), run(1, 400, 'ok')],
      immediate: { enabled: true, successes: 1, failures: 1, backlog: 1, oldestAgeSeconds: 30,
        recentFailures: [{ at: iso(30), message: 'connect ECONNREFUSED', attempts: 2 }] },
    });
    const f = d.failureList(s);
    assert.deepEqual(f.map((x: any) => x.where), ['immediate · attempt 2', 'run #2']);
    assert.equal(d.summary(s).level, 'error');
    assert.match(d.summary(s).text, /E_CONNECT_TARGET/);
    assert.deepEqual(d.summary(status()), { level: 'ok', text: 'staging is current' });
  });

  test('renderChart draws one bar per run into an SVG, and a message when empty', () => {
    const doc = fakeDocument();
    const svg = d.renderChart(doc, d.chartModel(status().runs));
    assert.equal(svg.tag, 'svg');
    assert.equal(svg.attrs['data-points'], '2');
    assert.equal(svg.children.filter((c: any) => c.tag === 'rect').length, 2);
    const empty = d.renderChart(doc, []);
    assert.ok(empty.children.some((c: any) => c.attrs['data-testid'] === 'chart-empty'));
  });

  test('formatSeconds', () => {
    assert.deepEqual([0.25, 12.5, 59, 600, 7200, 200000, null].map(d.formatSeconds), ['250 ms', '13 s', '59 s', '10 min', '2.0 h', '2 d', '–']);
  });
});

describe('real-time sync (watch)', () => {
  const stream = (over: Record<string, unknown> = {}) => ({
    target: 'staging', slot: 'elara_sync_staging', phase: 'streaming', lsn: '0/1A2B3C', lagSeconds: 0, lagBytes: 0, retainedWalBytes: 2048,
    transactions: 4, rows: 9, reconnects: 0, snapshots: 1, lastCommitAt: iso(3), lastAppliedAt: iso(3), startedAt: iso(60), lastError: null, ...over,
  });
  test('the watch line: off with its reason, live when every stream streams, else which target is not', () => {
    assert.deepEqual(d.watchSummary(status({ watch: { mode: 'off', reason: 'production has wal_level = replica, not logical (SYNC_WATCH=auto)', streams: [] } })),
      { live: false, text: 'off: production has wal_level = replica, not logical (SYNC_WATCH=auto); registrations reach staging through the outbox, other changes at the next reconcile' });
    assert.equal(d.watchSummary(status()).live, false, 'no watch field (an older server): off');
    assert.deepEqual(d.watchSummary(status({ watch: { mode: 'on', reason: null, streams: [stream(), stream({ target: 'dev' })] } })),
      { live: true, text: "streaming to staging, dev: production's changes arrive at once" });
    const reconnecting = stream({ target: 'dev', phase: 'reconnecting', reconnects: 2, lastError: { code: 'E_CONNECT', message: 'production unreachable', hint: null, at: iso(1) } });
    assert.deepEqual(d.watchSummary(status({ watch: { mode: 'on', reason: null, streams: [stream(), reconnecting] } })), { live: false, text: 'not streaming: dev reconnecting (E_CONNECT)' });
  });
  test('the banner warns about a stream that reconnects or failed, not one that is starting', () => {
    const broken = stream({ phase: 'failed', lastError: { code: 'E_WAL_LEVEL', message: 'production (source) has wal_level = replica', hint: null, at: iso(1) } });
    assert.deepEqual(d.summary(status({ watch: { mode: 'on', reason: null, streams: [broken] } })), { level: 'warn', text: 'real-time sync to staging has failed: E_WAL_LEVEL production (source) has wal_level = replica' });
    assert.deepEqual(d.summary(status({ watch: { mode: 'on', reason: null, streams: [stream({ phase: 'snapshot' })] } })), { level: 'ok', text: 'staging is current' });
    assert.deepEqual(d.summary(status({ watch: { mode: 'on', reason: null, streams: [stream()] } })), { level: 'ok', text: 'staging is current' });
  });
  test('formatBytes', () => {
    assert.deepEqual([0, 1023, 2048, 5 * 1024 ** 2, 6 * 1024 ** 3, null].map(d.formatBytes), ['0 B', '1023 B', '2.0 KiB', '5.0 MiB', '6.0 GiB', '–']);
  });
});

describe('fetchStatus', () => {
  test('sends the token as a Bearer header and rejects errors with a message', async () => {
    let seen: any;
    const ok = async (url: string, init: any) => { seen = { url, init }; return new Response(JSON.stringify(status()), { status: 200 }); };
    const body = await d.fetchStatus(ok, 'tok123');
    assert.equal(seen.url, '/api/v2/sync/status');
    assert.equal(seen.init.headers.Authorization, 'Bearer tok123');
    assert.equal(body.tables.length, 1);
    await assert.rejects(d.fetchStatus(async () => new Response('', { status: 401 }), null), /not authorised/);
    await assert.rejects(d.fetchStatus(async () => new Response('<html>', { status: 200 }), null), /JSON|unexpected/i);
    await assert.rejects(d.fetchStatus(async () => { throw new TypeError('fetch failed'); }, null), /fetch failed/);
    const hang = (_u: string, init: any) => new Promise<Response>((_, reject) => init.signal.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' }))));
    await assert.rejects(d.fetchStatus(hang, null, 20), /timed out/);
  });
});

describe('static files', () => {
  test('no external resources, and every id the script uses exists in the page', () => {
    const html = readFileSync(new URL('index.html', dir), 'utf8');
    const js = readFileSync(new URL('dashboard.js', dir), 'utf8');
    assert.doesNotMatch(html + js, /(src|href)=["']?(https?:)?\/\//i);
    assert.doesNotMatch(js, /innerHTML|outerHTML|insertAdjacentHTML|eval\(/);
    const ids = new Set([...html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]));
    const used = [...js.matchAll(/(?:getElementById|\$|text)\('([a-z-]+)'/g)].map((m) => m[1]);
    assert.ok(used.length >= 10);
    for (const id of used) assert.ok(ids.has(id), `index.html lacks id="${id}"`);
    for (const f of ['dashboard.js', 'dashboard.css']) assert.match(html, new RegExp(`/sync/${f.replace('.', '\\.')}`));
  });
});

function fakeDocument() {
  const node = (tag: string): any => ({
    tag, attrs: {} as Record<string, string>, children: [] as any[], textContent: '',
    setAttribute(k: string, v: string) { this.attrs[k] = v; },
    appendChild(c: any) { this.children.push(c); return c; },
  });
  return { createElementNS: (_ns: string, tag: string) => node(tag), createElement: node };
}
