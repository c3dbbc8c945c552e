// The alert rules as Prometheus itself reads them: `promtool check rules` accepts the file,
// `promtool test rules` passes its unit tests, every alert has a case where it fires and one where
// it stays quiet, and every alert has a severity, a summary and its own section in the runbook.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { promtool, promtoolOnFiles } from '@elara/testkit/prometheus';

const here = fileURLToPath(new URL('.', import.meta.url));
const RULES = join(here, 'elara-alerts.yml');
const TESTS = join(here, 'elara-alerts.test.yml');
const RUNBOOK = join(here, '..', '..', 'docs', 'operations.md');

interface AlertRule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface AlertTest { eval_time: string; alertname: string; exp_alerts?: unknown[] }

const rules = parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: AlertRule[] }> };
const alerts = rules.groups.flatMap((g) => g.rules);
const unitTests = parse(readFileSync(TESTS, 'utf8')) as { tests: Array<{ name: string; alert_rule_test?: AlertTest[] }> };
const runbook = readFileSync(RUNBOOK, 'utf8');

/** GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
const runbookAnchors = new Map([...runbook.matchAll(/^#{1,6} (.+)$/gm)].map((m) => [anchorOf(m[1]!), m[1]!]));

test('promtool check rules accepts the alert file', () => {
  const r = promtool(['check', 'rules', RULES]);
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, new RegExp(`SUCCESS: ${alerts.length} rules found`));
});

test('promtool test rules: the unit tests pass', () => {
  const r = promtool(['test', 'rules', TESTS]);
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /SUCCESS/);
});

test('the unit tests see a failure (a wrong expectation fails promtool)', () => {
  // Guards against a test file promtool would pass without evaluating anything.
  const wrong = readFileSync(TESTS, 'utf8')
    .replace('rule_files:\n  - elara-alerts.yml', `rule_files:\n  - ${RULES}`)
    .replace('exp_labels: { severity: critical, job: elara-backend }', 'exp_labels: { severity: warning, job: elara-backend }');
  assert.notEqual(wrong, readFileSync(TESTS, 'utf8'));
  const r = promtoolOnFiles({ 'wrong.test.yml': wrong }, (dir) => ['test', 'rules', join(dir, 'wrong.test.yml')]);
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /alertname: ElaraSyncStale[\s\S]*exp:[\s\S]*severity="warning"[\s\S]*got:[\s\S]*severity="critical"/);
});

test('every alert has a test where it fires and one where it stays quiet', () => {
  const cases = unitTests.tests.flatMap((t) => t.alert_rule_test ?? []);
  const missing: string[] = [];
  for (const { alert } of alerts) {
    const mine = cases.filter((c) => c.alertname === alert);
    if (!mine.some((c) => (c.exp_alerts ?? []).length > 0)) missing.push(`${alert}: no case where it fires`);
    if (!mine.some((c) => (c.exp_alerts ?? []).length === 0)) missing.push(`${alert}: no case where it stays quiet`);
  }
  assert.deepEqual(missing, []);
  const names = new Set(alerts.map((a) => a.alert));
  for (const c of cases) assert.ok(names.has(c.alertname), `a test names ${c.alertname}, which is not an alert`);
});

test('every alert has a unique name, a severity, a summary and a runbook section of its own', () => {
  assert.ok(alerts.length >= 10, `only ${alerts.length} alerts`);
  assert.equal(new Set(alerts.map((a) => a.alert)).size, alerts.length, 'alert names are unique');
  for (const a of alerts) {
    assert.match(a.alert, /^Elara[A-Z]\w+$/, a.alert);
    assert.ok(['warning', 'critical'].includes(a.labels?.severity ?? ''), `${a.alert}: severity warning or critical`);
    assert.ok((a.annotations?.summary ?? '').length > 20, `${a.alert}: a summary`);
    const url = a.annotations?.runbook_url ?? '';
    assert.match(url, /^docs\/operations\.md#[a-z0-9-]+$/, `${a.alert}: runbook_url`);
    const heading = runbookAnchors.get(url.split('#')[1]!);
    assert.ok(heading, `${a.alert}: docs/operations.md has no heading for ${url}`);
    assert.equal(heading, a.alert, `${a.alert}: its runbook section is titled with the alert's name`);
  }
});

test('the runbook links to the alert file and does not carry a copy of it', () => {
  assert.match(runbook, /\]\(\.\.\/deploy\/prometheus\/elara-alerts\.yml\)/);
  assert.doesNotMatch(runbook, /^\s*-? *alert: /m, 'docs/operations.md must link to the rules, not copy them');
  assert.doesNotMatch(runbook, /^\s*expr: /m);
});
