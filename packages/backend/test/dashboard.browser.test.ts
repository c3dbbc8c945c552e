// The /sync page in a real browser (playwright-core driving Debian's chromium) against the real
// server on test databases: after a registration and a reconcile it shows both tables green and
// equal, the run and the immediate-sync counters; when staging stops accepting connections it shows
// the outage, and when staging returns, the recovery. Screenshots go to test-artifacts/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { runSync } from '@elara/sync';
import { ADMIN_URL } from '@elara/testkit';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { markProduction, migrateDatabase } from '../src/db/migrate.ts';
import { createDatabases, dbName, json, registration, sql, startTestServer, waitFor, type Databases } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';

const CHROMIUM = '/usr/bin/chromium';
const OPS_TOKEN = 'ops-token-for-browser-tests-0123456789abcdef';
const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/', import.meta.url));
// The page polls every 5 s: each wait below allows a few polls.
const PAGE_WAIT_MS = 20_000;

interface PageState {
  banner: string;
  bannerLevel: string;
  stagingReachable: string;
  tiles: Record<string, { state: string; rows: string; lag: string }>;
  runs: string[];
  successes: number;
  failures: number;
  backlog: number;
  failureRows: number;
  chartPoints: string;
  watch: { mode: string; live: string; text: string };
  streams: Record<string, { phase: string; lsn: string; transactions: number; rows: number; reconnects: number; error: string }>;
}

/**
 * What the page shows, read from the DOM by its data-testid attributes. Passed to the browser as
 * source text: tsx (esbuild keepNames) would wrap a compiled function's inner helpers in `__name`,
 * which does not exist in the page.
 */
const READ_PAGE = `(() => {
  const q = (id) => document.querySelector('[data-testid="' + id + '"]');
  const txt = (id) => q(id)?.textContent?.trim() ?? '';
  const tiles = {};
  for (const el of document.querySelectorAll('[data-testid^="table-tile-"]')) {
    const table = el.getAttribute('data-table') ?? '';
    tiles[table] = { state: el.getAttribute('data-state') ?? '', rows: txt('table-rows-' + table), lag: txt('table-lag-' + table) };
  }
  const streams = {};
  for (const el of document.querySelectorAll('[data-testid^="stream-row-"]')) {
    const t = el.getAttribute('data-target') ?? '';
    streams[t] = { phase: txt('stream-phase-' + t), lsn: txt('stream-lsn-' + t), transactions: Number(txt('stream-transactions-' + t)),
      rows: Number(txt('stream-rows-' + t)), reconnects: Number(txt('stream-reconnects-' + t)), error: txt('stream-error-' + t) };
  }
  return {
    watch: { mode: q('watch-state')?.getAttribute('data-mode') ?? '', live: q('watch-state')?.getAttribute('data-live') ?? '', text: txt('watch-state') },
    streams,
    banner: txt('status-banner'),
    bannerLevel: q('status-banner')?.getAttribute('data-level') ?? '',
    stagingReachable: q('staging-state')?.getAttribute('data-reachable') ?? '',
    tiles,
    runs: [...document.querySelectorAll('[data-testid^="run-row-"]')].map((e) => e.getAttribute('data-testid').slice('run-row-'.length)),
    successes: Number(txt('immediate-successes')),
    failures: Number(txt('immediate-failures')),
    backlog: Number(txt('immediate-backlog')),
    failureRows: document.querySelectorAll('[data-testid="failure-row"]').length,
    chartPoints: q('lag-chart')?.querySelector('svg')?.getAttribute('data-points') ?? '',
  };
})()`;

const readPage = (page: Page): Promise<PageState> => page.evaluate(READ_PAGE) as Promise<PageState>;

/** Polls the page until `ok` holds; on timeout the error shows what the page showed last. */
async function untilPage(page: Page, what: string, ok: (s: PageState) => boolean, timeoutMs = PAGE_WAIT_MS): Promise<PageState> {
  let last: PageState | null = null;
  try {
    return await waitFor(async () => { last = await readPage(page); return ok(last) ? last : null; }, timeoutMs, 250);
  } catch {
    throw new Error(`the page did not show ${what} within ${timeoutMs} ms; it showed ${JSON.stringify(last)}`);
  }
}

/** "production 2 · staging 2" → [2, 2]. */
const counts = (rows: string) => {
  const m = /production (\S+) · staging (\S+)/.exec(rows);
  return m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
};

async function setStagingConnections(database: string, allow: boolean): Promise<void> {
  await sql(ADMIN_URL, `ALTER DATABASE "${database}" ALLOW_CONNECTIONS ${allow}`);
  if (!allow) await sql(ADMIN_URL, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [database]);
}

describe('the /sync dashboard in chromium', () => {
  let dbs: Databases;
  let server: (RunningServer & { logs: { text(): string } }) | null = null;
  let browser: Browser | null = null;
  let page: Page;

  const register = async () => {
    const res = await fetch(`${server!.url}/api/v2/auth/register`, { method: 'POST', headers: json, body: JSON.stringify(registration()) });
    const body = await res.text();
    assert.equal(res.status, 201, body);
    return JSON.parse(body) as { user: { id: string; email: string } };
  };

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: this browser test needs Debian's chromium, which .ci/run installs (apt-get install chromium). It is not skipped on purpose.`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    dbs = await createDatabases('backend_dashboard');
    server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: dbs.staging.url, OPS_TOKEN }, 'info');
    // The worker's start-up warm-up installs staging's write-tracking triggers; a registration synced
    // concurrently on a fresh staging can fail once (a race in @elara/sync's ensureTracking).
    await waitFor(async () => (await sql(dbs.staging.url, `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'elara_sync_track'`)).rows[0].n === 2, 15_000, 50);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  });

  after(async () => {
    try {
      await browser?.close();
    } finally {
      try {
        await server?.close();
      } finally {
        if (dbs) {
          await setStagingConnections(dbs.staging.name, true).catch(() => {});
          await dbs.drop();
        }
      }
    }
  });

  test('after a registration and a reconcile: tiles green and equal, the run row, immediate successes', async () => {
    await register();
    await waitFor(async () => (await sql(dbs.staging.url, 'SELECT count(*)::int AS n FROM "User"')).rows[0].n === 1, 15_000, 50);
    const run = await runSync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables: [{ name: 'Organization' }, { name: 'User' }] });
    assert.equal(run.ok, true, JSON.stringify(run.error));
    assert.ok(run.runId !== null);

    // Without a token the page asks for one; the token typed in goes in a header, never the URL.
    await page.goto(`${server!.url}/sync`);
    await page.getByTestId('token-form').waitFor({ state: 'visible' });
    assert.match(await page.getByTestId('status-banner').textContent() ?? '', /not authorised/);
    await page.getByTestId('token-input').fill(OPS_TOKEN);
    await page.getByTestId('token-submit').click();
    const s = await untilPage(page, 'the run and both tiles green', (p) =>
      p.runs.includes(String(run.runId)) && p.tiles.User?.state === 'green' && p.tiles.Organization?.state === 'green');
    assert.deepEqual(Object.keys(s.tiles).sort(), ['Organization', 'User']);
    assert.deepEqual(counts(s.tiles.User!.rows), [1, 1]);
    assert.deepEqual(counts(s.tiles.Organization!.rows), [1, 1]);
    assert.match(s.tiles.User!.lag, /· 0 rows$/);
    assert.equal(s.bannerLevel, 'ok');
    assert.equal(s.banner, 'staging is current');
    assert.equal(s.stagingReachable, 'true');
    assert.ok(s.successes >= 1, `immediate successes ${s.successes}`);
    assert.equal(s.failures, 0);
    assert.equal(s.backlog, 0);
    assert.equal(s.failureRows, 0);
    assert.equal(s.chartPoints, '1');
    // The default test server has wal_level = replica: watch is off, and the page says why.
    assert.equal(s.watch.mode, 'off');
    assert.equal(s.watch.live, 'false');
    assert.match(s.watch.text, /^off: production has wal_level = replica, not logical \(SYNC_WATCH=auto\); registrations reach staging through the outbox/);
    assert.deepEqual(s.streams, {});
    assert.equal(await page.getByTestId(`run-row-${run.runId}`).getAttribute('data-status'), 'ok');
    assert.equal(await page.getByTestId('token-form').isHidden(), true);
    assert.doesNotMatch(page.url(), /token/);
    // Reloading the tab keeps the token (sessionStorage): no form again.
    await page.reload();
    await untilPage(page, 'the tiles again after a reload', (p) => p.tiles.User?.state === 'green');
    assert.equal(await page.getByTestId('token-form').isHidden(), true);
    assert.ok(!server!.logs.text().includes(OPS_TOKEN), 'the operations token is not in any log line');
    await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
  });

  test('staging stops accepting connections → outage shown; back → reachable, backlog drained', async () => {
    const staging = dbName(dbs.staging.url);
    await setStagingConnections(staging, false);
    let restored = false;
    try {
      await register();
      const down = await untilPage(page, 'staging unreachable and a failed immediate sync', (p) =>
        p.stagingReachable === 'false' && p.failures > 0 && p.backlog >= 1);
      assert.equal(down.bannerLevel, 'error');
      assert.match(down.banner, /^staging unreachable/);
      assert.match(down.banner, /not currently accepting connections/);
      assert.deepEqual(Object.values(down.tiles).map((t) => t.state), ['red', 'red']);
      // Staging's count is unknown: the tile says so rather than claiming 0 rows of lag.
      assert.deepEqual(counts(down.tiles.User!.rows), [2, NaN]);
      assert.match(down.tiles.User!.lag, /· \? rows$/);
      assert.ok(down.failureRows >= 1);
      await page.screenshot({ path: `${ARTIFACTS}dashboard-outage.png`, fullPage: true });

      await setStagingConnections(staging, true);
      restored = true;
      const t0 = Date.now();
      const up = await untilPage(page, 'staging reachable with an empty backlog', (p) => p.stagingReachable === 'true' && p.backlog === 0, 30_000);
      process.stderr.write(`# backlog drained on the page ${Date.now() - t0} ms after staging accepted connections again\n`);
      assert.ok(up.successes >= 2, `immediate successes ${up.successes}`);
      assert.deepEqual(counts(up.tiles.User!.rows), [2, 2]);
      assert.deepEqual(counts(up.tiles.Organization!.rows), [2, 2]);
      await page.screenshot({ path: `${ARTIFACTS}dashboard-recovered.png`, fullPage: true });
      // The outbox worker's probe noticed staging back and retried the waiting job at once (rather
      // than leaving it to its exponential backoff).
      assert.match(server!.logs.text(), /staging reachable again; retrying waiting sync jobs now/);
    } finally {
      if (!restored) await setStagingConnections(staging, true).catch(() => {});
    }
  });
});

describe('the /sync dashboard in chromium, with watch streaming (wal_level = logical production)', () => {
  let lr: LogicalServer;
  let prod: string;
  let staging: string;
  let server: (RunningServer & { logs: { text(): string } }) | null = null;
  let browser: Browser | null = null;

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: this browser test needs Debian's chromium (apt-get install chromium). It is not skipped on purpose.`);
    mkdirSync(ARTIFACTS, { recursive: true });
    lr = await startLogicalServer();
    prod = lr.url(await lr.createDatabase('dash_watch_prod'));
    staging = lr.url(await lr.createDatabase('dash_watch_stg'));
    await migrateDatabase(prod, { outbox: true });
    await markProduction(prod);
    await migrateDatabase(staging);
    server = await startTestServer({ DATABASE_URL: prod, STAGING_DATABASE_URL: staging, SYNC_WATCH: 'on', OPS_TOKEN, ELARA_SYNC_CONFIG: fileURLToPath(new URL('../../../elara-sync.yml', import.meta.url)) }, 'info');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
  });
  after(async () => {
    try {
      await browser?.close();
    } finally {
      try {
        await server?.close();
      } finally {
        await lr?.stop();
      }
    }
  });

  test('the stream row shows streaming, its position, and a psql UPDATE counted as applied', async () => {
    const page = await browser!.newPage({ viewport: { width: 1200, height: 900 } });
    await page.goto(`${server!.url}/sync`);
    await page.getByTestId('token-input').fill(OPS_TOKEN);
    await page.getByTestId('token-submit').click();
    const live = await untilPage(page, 'the staging stream streaming', (p) => p.streams.staging?.phase === 'streaming', 30_000);
    assert.equal(live.watch.mode, 'on');
    assert.equal(live.watch.live, 'true');
    assert.match(live.watch.text, /^streaming to staging/);
    assert.equal(live.streams.staging!.error, '–');

    await sql(prod, `INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES ('00000000-0000-0000-0000-0000000000d1', 'Before', 'k-d1', 'x')`);
    await sql(prod, `UPDATE "Organization" SET name = 'After' WHERE id = '00000000-0000-0000-0000-0000000000d1'`);
    await waitFor(async () => (await sql(staging, `SELECT 1 FROM "Organization" WHERE name = 'After'`)).rowCount, 15_000, 50);
    const applied = await untilPage(page, 'both transactions applied', (p) => (p.streams.staging?.transactions ?? 0) >= 2);
    assert.match(applied.streams.staging!.lsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(applied.streams.staging!.rows >= 2);
    assert.equal(applied.streams.staging!.reconnects, 0);
    await page.screenshot({ path: `${ARTIFACTS}dashboard-watch.png`, fullPage: true });
  });
});
