// The optional Prometheus Operator component (deploy/prometheus/operator), rendered by the real
// `kubectl kustomize` into each overlay the way an operator turns it on (a `components:` entry in
// the overlay). kubernetes-models has no types for the Operator's CRDs, so the fields that decide
// whether Prometheus scrapes and alerts are checked here: the ServiceMonitor selects the backend
// Service and names a port it has (which reaches a container port the NetworkPolicy admits), and
// the PrometheusRule carries exactly the groups of elara-alerts.yml.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';

const here = fileURLToPath(new URL('.', import.meta.url));
const DEPLOY = join(here, '..');
const OVERLAYS = { staging: 'elara-staging', production: 'elara-backend' } as const;
type Env = keyof typeof OVERLAYS;
type K8sObject = Record<string, any> & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } };

function kustomize(dir: string): K8sObject[] {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (r.error) throw new Error(`kubectl could not be run (${r.error.message}): bash .ci/run installs it (apt-get install kubectl)`);
  assert.equal(r.status, 0, `kubectl kustomize ${dir}: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => {
    assert.deepEqual(d.errors, [], dir);
    return d.toJS() as K8sObject;
  });
}

const rendered = {} as Record<Env, { plain: K8sObject[]; monitored: K8sObject[] }>;
let copy: string;

before(() => {
  // A copy of deploy/ whose overlays add the component, exactly the line the component's
  // kustomization.yaml tells operators to add.
  copy = mkdtempSync(join(tmpdir(), 'elara-deploy-'));
  for (const d of ['kubernetes', 'prometheus']) cpSync(join(DEPLOY, d), join(copy, d), { recursive: true });
  for (const env of Object.keys(OVERLAYS) as Env[]) {
    appendFileSync(join(copy, 'kubernetes', 'overlays', env, 'kustomization.yaml'), '\ncomponents:\n  - ../../../prometheus/operator\n');
    rendered[env] = {
      plain: kustomize(join(DEPLOY, 'kubernetes', 'overlays', env)),
      monitored: kustomize(join(copy, 'kubernetes', 'overlays', env)),
    };
  }
});
after(() => rmSync(copy, { recursive: true, force: true }));

const find = (objects: K8sObject[], kind: string, name?: string) => {
  const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
};
const DNS_1123 = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DURATION = /^(\d+(ms|s|m|h))+$/;
const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };
const seconds = (d: string) => [...d.matchAll(/(\d+)(ms|s|m|h)/g)].reduce((n, m) => n + Number(m[1]) * UNIT_SECONDS[m[2]!]!, 0);

test('the component is a kustomize Component and no overlay includes it by default', () => {
  const k = parse(readFileSync(join(here, 'operator', 'kustomization.yaml'), 'utf8'));
  assert.deepEqual([k.apiVersion, k.kind], ['kustomize.config.k8s.io/v1alpha1', 'Component']);
  for (const env of Object.keys(OVERLAYS) as Env[]) {
    assert.ok(!rendered[env].plain.some((o) => o.apiVersion.startsWith('monitoring.coreos.com/')), `${env}: without the component, no Operator objects (clusters without its CRDs would reject them)`);
  }
});

for (const env of Object.keys(OVERLAYS) as Env[]) {
  describe(`overlay ${env} with the component`, () => {
    test('adds exactly a ServiceMonitor and a PrometheusRule, namespaced and labelled like the rest, and changes nothing else', () => {
      const { plain, monitored } = rendered[env];
      const added = monitored.filter((o) => !plain.some((p) => p.kind === o.kind && p.metadata.name === o.metadata.name));
      assert.deepEqual(added.map((o) => `${o.apiVersion} ${o.kind}/${o.metadata.name}`).sort(), [
        'monitoring.coreos.com/v1 PrometheusRule/elara-sync',
        'monitoring.coreos.com/v1 ServiceMonitor/elara-backend',
      ]);
      for (const o of added) {
        assert.match(o.metadata.name, DNS_1123);
        assert.equal(o.metadata.namespace, OVERLAYS[env], `${o.kind} in the overlay's namespace`);
        assert.equal(o.metadata.labels?.['app.kubernetes.io/environment'], env);
        assert.equal(o.metadata.labels?.['app.kubernetes.io/part-of'], 'elara');
      }
      assert.deepEqual(monitored.filter((o) => !added.includes(o)), plain, 'the other objects are as without the component');
    });

    test('the ServiceMonitor selects the backend Service, on a named port that reaches the pods /metrics', () => {
      const objects = rendered[env].monitored;
      const sm = find(objects, 'ServiceMonitor');
      const service = find(objects, 'Service', 'elara-backend');
      assert.equal(sm.spec.namespaceSelector, undefined, 'the Service is in the ServiceMonitor\'s own namespace');
      const selector = sm.spec.selector.matchLabels as Record<string, string>;
      assert.ok(Object.keys(selector).length > 0 && sm.spec.selector.matchExpressions === undefined);
      const selected = objects.filter((o) => o.kind === 'Service' && Object.entries(selector).every(([k, v]) => o.metadata.labels?.[k] === v));
      assert.deepEqual(selected.map((o) => o.metadata.name), ['elara-backend'], 'selects the backend Service and nothing else');

      const deployment = find(objects, 'Deployment', 'elara-backend');
      const podLabels = deployment.spec.template.metadata.labels as Record<string, string>;
      for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>)) assert.equal(podLabels[k], v, 'the Service selects the backend pods');
      const containerPorts = deployment.spec.template.spec.containers.flatMap((c: any) => c.ports ?? []);
      const ingressPorts = find(objects, 'NetworkPolicy', 'elara-backend').spec.ingress.flatMap((r: any) => r.ports.map((p: any) => `${p.protocol}/${p.port}`));

      assert.ok(sm.spec.endpoints.length >= 1);
      for (const e of sm.spec.endpoints) {
        const port = service.spec.ports.find((p: any) => p.name === e.port);
        assert.ok(port, `endpoint port "${e.port}" is a named port of the Service`);
        const target = containerPorts.find((p: any) => p.name === port.targetPort || p.containerPort === port.targetPort);
        assert.ok(target, `the Service port's targetPort ${port.targetPort} is a container port`);
        assert.ok(ingressPorts.includes(`TCP/${target.containerPort}`), `the NetworkPolicy admits scrapes on ${target.containerPort}`);
        assert.equal(e.path, '/metrics');
        assert.ok(['http', undefined].includes(e.scheme));
        assert.match(e.interval, DURATION);
        assert.match(e.scrapeTimeout, DURATION);
        assert.ok(seconds(e.scrapeTimeout) <= seconds(e.interval), 'scrapeTimeout ≤ interval (the Operator rejects it otherwise)');
      }
    });

    test('the PrometheusRule carries exactly the groups of elara-alerts.yml', () => {
      const rule = find(rendered[env].monitored, 'PrometheusRule');
      const alerts = parse(readFileSync(join(here, 'elara-alerts.yml'), 'utf8'));
      assert.deepEqual(Object.keys(rule.spec), ['groups']);
      assert.deepEqual(rule.spec.groups, alerts.groups,
        'deploy/prometheus/operator/prometheusrule.yaml is out of date: run node scripts/build-prometheus-rule.mjs');
    });
  });
}
