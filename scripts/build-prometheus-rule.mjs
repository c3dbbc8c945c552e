#!/usr/bin/env node
// Writes deploy/prometheus/operator/prometheusrule.yaml, the Prometheus Operator form of
// deploy/prometheus/elara-alerts.yml (the same groups under spec.groups). The alert file stays the
// one source: promtool checks and tests it, and deploy/prometheus/operator.test.ts fails when the
// generated file no longer matches it. Run after editing the alerts:
//   node scripts/build-prometheus-rule.mjs
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const rules = parse(readFileSync(join(root, 'deploy/prometheus/elara-alerts.yml'), 'utf8'));
const rule = {
  apiVersion: 'monitoring.coreos.com/v1',
  kind: 'PrometheusRule',
  metadata: {
    name: 'elara-sync',
    labels: { 'app.kubernetes.io/name': 'elara-sync', 'app.kubernetes.io/part-of': 'elara' },
  },
  spec: { groups: rules.groups },
};
const header = [
  '# Generated from deploy/prometheus/elara-alerts.yml by scripts/build-prometheus-rule.mjs: edit the',
  '# alert file, then run `node scripts/build-prometheus-rule.mjs`. What each alert means:',
  '# docs/operations.md ("Alerts").',
  '',
].join('\n');
writeFileSync(join(root, 'deploy/prometheus/operator/prometheusrule.yaml'), header + stringify(rule, { lineWidth: 0 }));
