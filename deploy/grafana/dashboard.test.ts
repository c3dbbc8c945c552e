// The Grafana dashboard is ready to import (the datasource is an input chosen at import, no
// hard-wired datasource, unique panel ids, panels that do not overlap) and every query in it is
// PromQL that Prometheus accepts: each expression goes through `promtool check rules` as a
// recording rule. That it names only metrics the backend exports is checked against the live
// /metrics of a running backend in packages/backend/test/prometheus.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { metricNamesIn, promtoolOnFiles } from '@elara/testkit/prometheus';
import { STREAM_METRICS } from '@elara/sync';
import { dashboardExpressions, readDashboard } from './dashboard-queries.ts';

const { dashboard, panels } = readDashboard();
const queryPanels = panels.filter((p) => p.type !== 'row');
const DATASOURCE = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };

test('importable: the datasource is an import input, used by every panel, query and variable', () => {
  assert.deepEqual(dashboard.__inputs.map((i: any) => [i.name, i.type, i.pluginId]), [['DS_PROMETHEUS', 'datasource', 'prometheus']]);
  assert.ok(dashboard.__requires.some((r: any) => r.type === 'datasource' && r.id === 'prometheus'));
  for (const type of new Set(queryPanels.map((p) => p.type))) {
    assert.ok(dashboard.__requires.some((r: any) => r.type === 'panel' && r.id === type), `__requires lists panel type ${type}`);
  }
  assert.equal(dashboard.id, null, 'no database id: Grafana assigns one at import');
  assert.match(dashboard.uid, /^[a-z0-9-]{1,40}$/);
  assert.ok(dashboard.title && typeof dashboard.schemaVersion === 'number');
  for (const p of queryPanels) {
    assert.deepEqual(p.datasource, DATASOURCE, `panel ${p.id} "${p.title}"`);
    assert.ok((p.targets ?? []).length > 0, `panel ${p.id} "${p.title}" has a query`);
    for (const t of p.targets!) assert.deepEqual(t.datasource, DATASOURCE, `panel ${p.id} ${t.refId}`);
  }
  for (const v of dashboard.templating.list) assert.deepEqual(v.datasource, DATASOURCE, `variable ${v.name}`);
  // No datasource uid of someone's Grafana anywhere (it would not exist on import).
  const uids = [...JSON.stringify(dashboard).matchAll(/"uid":\s*"([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual([...new Set(uids)].sort(), ['${DS_PROMETHEUS}', dashboard.uid].sort());
});

test('panel ids are unique and panels do not overlap on the 24-column grid', () => {
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length);
  for (const [i, a] of panels.entries()) {
    assert.ok(a.gridPos.x >= 0 && a.gridPos.x + a.gridPos.w <= 24, `panel ${a.id} fits the grid`);
    for (const b of panels.slice(i + 1)) {
      const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w
        && a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h;
      assert.ok(!overlap, `panels ${a.id} and ${b.id} overlap`);
    }
  }
});

test('every query is valid PromQL: promtool check rules accepts each as a recording rule', () => {
  const exprs = dashboardExpressions();
  assert.ok(exprs.length >= 12, `only ${exprs.length} expressions`);
  for (const { where, expr } of exprs) assert.doesNotMatch(expr, /\$/, `${where}: unknown Grafana variable in ${expr}`);
  const queries = stringify({ groups: [{ name: 'dashboard', rules: exprs.map(({ expr }, i) => ({ record: `dashboard:query_${i}`, expr })) }] });
  const r = promtoolOnFiles({ 'dashboard-queries.yml': queries }, (dir) => ['check', 'rules', join(dir, 'dashboard-queries.yml')]);
  assert.equal(r.status, 0, `${r.output}\n${exprs.map((e, i) => `query_${i}: ${e.where}: ${e.expr}`).join('\n')}`);
  assert.match(r.output, new RegExp(`SUCCESS: ${exprs.length} rules found`));
});

test('the check rejects a broken query (promtool really parses them)', () => {
  const broken = stringify({ groups: [{ name: 'x', rules: [{ record: 'dashboard:broken', expr: 'max by (table (elara_sync_lag_seconds)' }] }] });
  const r = promtoolOnFiles({ 'broken.yml': broken }, (dir) => ['check', 'rules', join(dir, 'broken.yml')]);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /could not parse expression/);
});

test('the dashboard shows what the runbook promises: lag, runs, rows, immediate sync, backlog and its age', () => {
  const used = new Set(dashboardExpressions().flatMap((e) => metricNamesIn(e.expr)));
  for (const name of [
    'elara_sync_lag_seconds', 'elara_sync_runs_total', 'elara_sync_rows_total', 'elara_immediate_sync_total',
    'elara_immediate_sync_duration_seconds_bucket', 'elara_outbox_backlog_jobs', 'elara_outbox_oldest_age_seconds',
    'elara_sync_last_success_timestamp_seconds',
  ]) {
    assert.ok(used.has(name), `no panel shows ${name}`);
  }
  for (const name of used) assert.doesNotMatch(name, /^\{/, `a selector without a metric name: ${name}`);
});

test('the real-time row shows every metric of elara-sync watch, and only those', () => {
  const row = panels.find((p) => p.type === 'row' && /elara-sync watch/.test(p.title));
  assert.ok(row, 'a row for elara-sync watch');
  const below = queryPanels.filter((p) => p.gridPos.y > row.gridPos.y);
  const used = new Set(below.flatMap((p) => (p.targets ?? []).flatMap((t) => metricNamesIn(t.expr))));
  assert.deepEqual([...used].sort(), STREAM_METRICS.map((m) => m.name).sort());
});
