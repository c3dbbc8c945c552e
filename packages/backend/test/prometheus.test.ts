// /metrics as Prometheus sees it, from a running backend on real production and staging databases:
// `promtool check metrics` finds nothing to say about any metric Elara defines; the reconcile
// counters, derived from staging's run records, are counters that equal the records and never go
// down (not while staging is unreachable either); and every metric that the alert rules and the
// Grafana dashboard read is one the backend exports and the runbook lists.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import client from 'prom-client';
import { parse } from 'yaml';
import { runSync, STREAM_METRICS } from '@elara/sync';
import { exposedMetricNames, metricNamesIn, promtool } from '@elara/testkit/prometheus';
import { dashboardExpressions } from '../../../deploy/grafana/dashboard-queries.ts';
import { createDatabases, json, registration, sql, startProxy, startTestServer, waitFor, type Databases } from './helpers.ts';
import type { RunningServer } from '../src/server.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TABLES = [{ name: 'Organization' }, { name: 'User' }];
const QA_ORG = '00000000-0000-0000-0000-0000000000c1';

/** Names of prom-client's default process metrics with our prefix: left as prom-client makes them. */
function defaultMetricNames(): Set<string> {
  const r = new client.Registry();
  client.collectDefaultMetrics({ register: r, prefix: 'elara_' });
  const names = new Set(r.getMetricsAsArray().map((m) => m.name));
  r.clear();
  return names;
}

/** The exposition without prom-client's default metrics: what Elara itself defines. */
function ownBlocks(exposition: string, defaults: Set<string>): string {
  return exposition.split(/\n(?=# HELP )/).filter((block) => !defaults.has(/^# HELP (\S+)/.exec(block)?.[1] ?? '')).join('\n').trimEnd() + '\n';
}

/** Sample value of a series in an exposition, or undefined when the series is not there. */
function sample(exposition: string, series: string): number | undefined {
  const line = exposition.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** What the counters must show: runs by result and rows by table/op, straight from the records. */
async function fromRecords(stagingUrl: string) {
  const runs = (await sql(stagingUrl, `SELECT status, count(*)::int AS n FROM elara_sync.runs WHERE mode = 'run' AND status <> 'running' GROUP BY status`)).rows;
  const rows = (await sql(stagingUrl, `
    SELECT t->>'table' AS table, sum((t->>'inserted')::int)::int AS inserted, sum((t->>'updated')::int)::int AS updated, sum((t->>'deleted')::int)::int AS deleted
      FROM elara_sync.runs r CROSS JOIN jsonb_array_elements(r.tables) t
     WHERE r.mode = 'run' AND r.status IN ('ok', 'conflicts') GROUP BY 1`)).rows;
  const out: Record<string, number> = {};
  for (const result of ['ok', 'conflicts', 'error']) out[`elara_sync_runs_total{target="staging",result="${result}"}`] = runs.find((r) => r.status === result)?.n ?? 0;
  for (const r of rows) for (const op of ['inserted', 'updated', 'deleted']) out[`elara_sync_rows_total{target="staging",table="${r.table}",op="${op}"}`] = r[op];
  return out;
}

function assertCountersEqual(exposition: string, expected: Record<string, number>, where: string) {
  for (const [series, value] of Object.entries(expected)) assert.equal(sample(exposition, series), value, `${where}: ${series}`);
}

describe('/metrics under promtool, and the reconcile counters from run records', () => {
  let dbs: Databases;
  let proxy: Awaited<ReturnType<typeof startProxy>>;
  let server: RunningServer;
  const scrape = async (s = server) => {
    const res = await fetch(`${s.url}/metrics`);
    assert.equal(res.status, 200);
    return res.text();
  };
  const run = async (tables = TABLES) => runSync({ sourceUrl: dbs.prod.url, targetUrl: dbs.staging.url, tables });

  before(async () => {
    dbs = await createDatabases('backend_prom');
    // The backend reaches staging through a proxy the tests can switch off; the reconcile runs
    // (as a CronJob would) reach it directly.
    proxy = await startProxy(5432);
    server = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: proxy.url(dbs.staging.name) }, 'silent');
    // A registration (immediate sync, its histogram, the HTTP counter), then reconcile runs of
    // every outcome: ok, conflicts (a QA row in staging holds a key production needs), error (a
    // table production lacks).
    const reg = await server.app.inject({ method: 'POST', url: '/api/v2/auth/register', headers: json, payload: registration() });
    assert.equal(reg.statusCode, 201, reg.body);
    await waitFor(async () => sample(await scrape(), 'elara_immediate_sync_total{result="success"}')! >= 1, 15_000, 50);
    assert.equal((await run()).ok, true);
    await sql(dbs.staging.url, `INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES ('${QA_ORG}', 'QA', 'qa-key', 'x')`);
    await sql(dbs.prod.url, `INSERT INTO "Organization" (id, name, "apiKey", "apiSecret") VALUES ('${QA_ORG}', 'Prod', 'prod-key', 'x')`);
    const conflicted = await run();
    assert.equal(conflicted.tables.find((t) => t.table === 'Organization')?.conflicts, 1, JSON.stringify(conflicted));
    assert.ok((await run([...TABLES, { name: 'Missing' }])).error);
  });
  after(async () => {
    await server?.close();
    await proxy?.stop();
    await dbs?.drop();
  });

  test('promtool check metrics: nothing to report on any metric Elara defines', async () => {
    const text = await scrape();
    const defaults = defaultMetricNames();
    const own = [...exposedMetricNames(text)].filter(([name, type]) => !defaults.has(name) && !type.endsWith(' series'));
    assert.ok(own.length >= 12, `only ${own.length} of Elara's own metrics in /metrics`);

    // The whole exposition: the only findings are about prom-client's default process metrics.
    const all = promtool(['check', 'metrics'], text);
    const findings = all.output.split('\n').filter(Boolean);
    const aboutOurs = findings.filter((line) => !defaults.has(line.split(' ')[0]!));
    assert.deepEqual(aboutOurs, [], all.output);

    // Elara's own metrics alone: promtool exits 0 and prints nothing.
    const mine = promtool(['check', 'metrics'], ownBlocks(text, defaults));
    assert.equal(mine.output, '');
    assert.equal(mine.status, 0);
    // ...and it did read them: the same text with one gauge named like a counter is refused.
    const spoilt = promtool(['check', 'metrics'], `${ownBlocks(text, defaults)}# HELP elara_test_bad_total x\n# TYPE elara_test_bad_total gauge\nelara_test_bad_total 1\n`);
    assert.match(spoilt.output, /^elara_test_bad_total non-counter metrics should not have "_total" suffix$/m);

    for (const [name, type] of own) {
      assert.match(name, /^elara_[a-z]+_[a-z_]+$/, name);
      assert.match(text, new RegExp(`^# HELP ${name} \\S.{10,}$`, 'm'), `${name} has help text`);
      if (type === 'counter') assert.match(name, /_total$/, `${name}: a counter ends in _total`);
      else assert.doesNotMatch(name, /_total$/, `${name}: only counters end in _total`);
    }
  });

  test('the run-record counters are counters and equal the records, for every outcome', async () => {
    const text = await scrape();
    const types = exposedMetricNames(text);
    assert.equal(types.get('elara_sync_runs_total'), 'counter');
    assert.equal(types.get('elara_sync_rows_total'), 'counter');
    const expected = await fromRecords(dbs.staging.url);
    assert.deepEqual([expected['elara_sync_runs_total{target="staging",result="ok"}'], expected['elara_sync_runs_total{target="staging",result="conflicts"}'], expected['elara_sync_runs_total{target="staging",result="error"}']], [1, 1, 1]);
    assertCountersEqual(text, expected, 'after ok, conflicts, error');
    assert.equal(sample(text, 'elara_sync_staging_up{target="staging"}'), 1);
  });

  test('a run still in progress is counted when it finishes, not before', async () => {
    // Another process (a CronJob pod) has just started a run: its record says 'running'.
    await sql(dbs.staging.url, `INSERT INTO elara_sync.runs (status, mode) VALUES ('running', 'run')`);
    const before = await fromRecords(dbs.staging.url);
    assertCountersEqual(await scrape(), before, 'with a run in progress');
    // That process died; the next run marks its record 'error' and then finishes ok itself.
    await sql(dbs.staging.url, `DELETE FROM "Organization" WHERE id = '${QA_ORG}'`);
    assert.equal((await run()).ok, true);
    const now = await fromRecords(dbs.staging.url);
    assert.equal(now['elara_sync_runs_total{target="staging",result="error"}'], before['elara_sync_runs_total{target="staging",result="error"}']! + 1);
    assert.equal(now['elara_sync_runs_total{target="staging",result="ok"}'], before['elara_sync_runs_total{target="staging",result="ok"}']! + 1);
    assert.equal(now['elara_sync_rows_total{target="staging",table="Organization",op="inserted"}'], before['elara_sync_rows_total{target="staging",table="Organization",op="inserted"}']! + 1);
    assertCountersEqual(await scrape(), now, 'after the interrupted run and the next');
  });

  test('staging unreachable: counters keep their values, staging_up is 0, lag keeps growing; then they go on', async () => {
    const expected = await fromRecords(dbs.staging.url);
    const up = await scrape();
    const lagBefore = sample(up, 'elara_sync_lag_seconds{target="staging",table="User"}')!;
    assert.ok(lagBefore >= 0);
    await proxy.stop();
    try {
      const down = await scrape();
      assert.equal(sample(down, 'elara_sync_staging_up{target="staging"}'), 0);
      assertCountersEqual(down, expected, 'while staging is unreachable');
      await waitFor(async () => sample(await scrape(), 'elara_sync_lag_seconds{target="staging",table="User"}')! > lagBefore, 10_000, 20);

      // A backend that starts while staging is unreachable has never read the records: it shows
      // no counter samples at all (a 0 now and the real total later would look like a burst of runs).
      const late = await startTestServer({ DATABASE_URL: dbs.prod.url, STAGING_DATABASE_URL: proxy.url(dbs.staging.name) }, 'silent');
      try {
        const text = await scrape(late);
        assert.equal(sample(text, 'elara_sync_staging_up{target="staging"}'), 0);
        assert.match(text, /^# TYPE elara_sync_runs_total counter$/m);
        assert.doesNotMatch(text, /^elara_sync_(runs|rows)_total\{/m);
        await proxy.start();
        assertCountersEqual(await scrape(late), expected, 'a late backend once staging answers');
      } finally {
        await late.close();
      }
    } finally {
      await proxy.start();
    }
    await sql(dbs.prod.url, `UPDATE "Organization" SET name = 'Prod renamed' WHERE id = '${QA_ORG}'`);
    assert.equal((await run()).ok, true);
    const again = await scrape();
    assert.equal(sample(again, 'elara_sync_staging_up{target="staging"}'), 1);
    const after = await fromRecords(dbs.staging.url);
    assert.equal(after['elara_sync_rows_total{target="staging",table="Organization",op="updated"}'], expected['elara_sync_rows_total{target="staging",table="Organization",op="updated"}']! + 1);
    assertCountersEqual(again, after, 'after staging came back and one more run');
  });

  test('the alert rules and the dashboard read only metrics the backend exports, and the runbook lists each', async () => {
    const exported = exposedMetricNames(await scrape());
    const rules = parse(readFileSync(`${ROOT}deploy/prometheus/elara-alerts.yml`, 'utf8')) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
    const uses = [
      ...rules.groups.flatMap((g) => g.rules).map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
      ...dashboardExpressions().map((e) => ({ where: `dashboard ${e.where}`, expr: e.expr })),
    ];
    const unknown = uses.flatMap(({ where, expr }) => metricNamesIn(expr).filter((m) => !exported.has(m)).map((m) => `${where}: ${m}`));
    assert.deepEqual(unknown, []);
    // watch's metrics (STREAM_METRICS, its contract) are declared whether or not this process
    // streams (here it does not: wal_level = replica), with the contract's types.
    for (const m of STREAM_METRICS) assert.equal(exported.get(m.name), m.type, `${m.name} in /metrics`);
    assert.ok(uses.every(({ expr }) => metricNamesIn(expr).length > 0));

    const runbook = readFileSync(`${ROOT}docs/operations.md`, 'utf8');
    const readme = readFileSync(`${ROOT}README.md`, 'utf8');
    const defaults = defaultMetricNames();
    for (const [name, type] of exported) {
      if (defaults.has(name) || type.endsWith(' series')) continue;
      assert.ok(runbook.includes(`\`${name}`), `docs/operations.md lists ${name}`);
      assert.ok(readme.includes(`\`${name}`), `README.md lists ${name}`);
    }
  });
});
