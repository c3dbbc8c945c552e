// Every manifest parses, validates against the Kubernetes schemas (kubernetes-models), builds into
// the staging and production overlays, and says what the runbook relies on: the CronJob's
// schedule and limits, probes, secrets only by reference, least privilege, no literal credential.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Deployment } from 'kubernetes-models/apps/v1';
import { CronJob } from 'kubernetes-models/batch/v1';
import { ConfigMap, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { resolveTlsSettings } from '@elara/sync';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { buildKustomization, here, podTemplates, readYamlDocuments, type K8sObject } from './kustomize.ts';

const DEPLOY = join(here, '..');
const OVERLAYS = ['staging', 'production'] as const;

// One model class per kind we ship; a kind missing here fails the test instead of going unchecked.
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'batch/v1/CronJob': CronJob,
  'v1/Secret': Secret,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (name === 'node_modules') return [];
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const yamlFiles = walk(here).filter((f) => /\.ya?ml$/.test(f));
const isKustomization = (f: string) => /kustomization\.ya?ml$/.test(f);
const isPatch = (f: string) => f.includes(`${join('overlays', '')}`) && !isKustomization(f);

function validate(o: K8sObject, where: string): void {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  assert.ok(Model, `${where}: no schema model for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(o).validate();
  } catch (err) {
    assert.fail(`${where}: ${o.kind} ${o.metadata?.name} is invalid: ${(err as Error).message}`);
  }
}

const built = Object.fromEntries(OVERLAYS.map((env) => [env, buildKustomization(join(here, 'overlays', env))])) as Record<typeof OVERLAYS[number], K8sObject[]>;

function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `no ${kind} ${name}`);
  return o;
}

function containers(o: K8sObject): Array<Record<string, any>> {
  return podTemplates(o).flatMap((t) => [...(t.spec?.containers ?? []), ...(t.spec?.initContainers ?? [])]);
}

const secretExample = readYamlDocuments(join(here, 'secret.example.yaml')) as K8sObject[];
const caExample = readYamlDocuments(join(here, 'db-ca.example.yaml')) as K8sObject[];

describe('every manifest parses and matches the Kubernetes schemas', () => {
  test('all YAML files parse without errors or warnings', () => {
    assert.ok(yamlFiles.length >= 10, `found only ${yamlFiles.length} YAML files`);
    for (const f of yamlFiles) assert.doesNotThrow(() => readYamlDocuments(f), f);
  });

  test('every base resource and the secret example validate', () => {
    let n = 0;
    for (const f of yamlFiles.filter((x) => !isKustomization(x) && !isPatch(x))) {
      for (const o of readYamlDocuments(f) as K8sObject[]) {
        validate(o, relative(DEPLOY, f));
        n++;
      }
    }
    assert.ok(n >= 8, `validated only ${n} objects`);
  });

  for (const env of OVERLAYS) {
    test(`overlay ${env} builds, every object validates and is namespaced`, () => {
      const objects = built[env];
      assert.deepEqual(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort(), [
        'CronJob/elara-sync', 'Deployment/elara-backend', 'Deployment/elara-sync-watch',
        'NetworkPolicy/elara-backend', 'NetworkPolicy/elara-sync', 'NetworkPolicy/elara-sync-watch',
        'Service/elara-backend', 'ServiceAccount/elara-backend', 'ServiceAccount/elara-sync',
      ]);
      for (const o of objects) {
        validate(o, `overlays/${env}`);
        assert.equal(o.metadata.namespace, env === 'production' ? 'elara-backend' : 'elara-staging');
        assert.equal(o.metadata.labels?.['app.kubernetes.io/environment'], env);
      }
      for (const o of objects) {
        for (const c of containers(o)) {
          assert.match(c.image, /^elara\/backend:[\w.-]+$/);
          assert.doesNotMatch(c.image, /:latest$/, `${env}: ${o.kind} pins a release, not :latest`);
        }
      }
    });
  }

  test('the schema check catches a broken object (the validator is really on)', () => {
    const bad = structuredClone(find(built.production, 'CronJob', 'elara-sync'));
    bad.spec.schedule = 5;
    assert.throws(() => new CronJob(bad as any).validate(), /schedule/);
  });
});

describe('reconcile CronJob', () => {
  for (const env of OVERLAYS) {
    test(`${env}: schedule, concurrency, history, restarts, deadline, command, secrets`, () => {
      const cj = find(built[env], 'CronJob', 'elara-sync');
      assert.equal(cj.spec.schedule, '*/5 * * * *');
      assert.equal(cj.spec.concurrencyPolicy, 'Forbid');
      assert.equal(cj.spec.successfulJobsHistoryLimit, 3);
      assert.equal(cj.spec.failedJobsHistoryLimit, 3);
      const job = cj.spec.jobTemplate.spec;
      assert.ok(Number.isInteger(job.backoffLimit) && job.backoffLimit >= 0 && job.backoffLimit <= 3);
      assert.ok(job.activeDeadlineSeconds > 0 && job.activeDeadlineSeconds < 300, 'a hung run ends before the next is due');
      const pod = job.template.spec;
      assert.equal(pod.restartPolicy, 'OnFailure');
      assert.equal(pod.serviceAccountName, 'elara-sync');
      assert.equal(pod.automountServiceAccountToken, false);
      const [c, ...more] = pod.containers;
      assert.equal(more.length, 0);
      assert.deepEqual(c.command, ['node', '--max-semi-space-size=1', 'packages/sync/bin/elara-sync.js', 'run', '--json']);
      assertSecretEnv(c, { DATABASE_URL: ['elara-sync-credentials', 'source-url'], STAGING_DATABASE_URL: ['elara-sync-credentials', 'target-url'] });
      assertHardened(pod, c);
    });
  }
});

describe('watch Deployment', () => {
  for (const env of OVERLAYS) {
    test(`${env}: one replica, Recreate, the watch command, the CronJob's secrets, no probes, 30 s to stop`, () => {
      const d = find(built[env], 'Deployment', 'elara-sync-watch');
      // Two watchers on one slot would fight over it: one replica, and the old pod gone before the new one starts.
      assert.equal(d.spec.replicas, 1);
      assert.deepEqual(d.spec.strategy, { type: 'Recreate' });
      const pod = d.spec.template.spec;
      assert.equal(pod.terminationGracePeriodSeconds, 30);
      assert.equal(pod.serviceAccountName, 'elara-sync');
      assert.equal(pod.automountServiceAccountToken, false);
      const [c, ...more] = pod.containers;
      assert.equal(more.length, 0);
      assert.deepEqual(c.command, ['node', 'packages/sync/bin/elara-sync.js', 'watch', '--target', 'staging']);
      assertSecretEnv(c, { DATABASE_URL: ['elara-sync-credentials', 'source-url'], STAGING_DATABASE_URL: ['elara-sync-credentials', 'target-url'] });
      // The CLI has no endpoint to probe.
      assert.equal(c.livenessProbe, undefined);
      assert.equal(c.readinessProbe, undefined);
      assert.ok(c.resources.requests.cpu && c.resources.requests.memory);
      assertHardened(pod, c);
      for (const [k, v] of Object.entries(d.spec.selector.matchLabels as Record<string, string>)) assert.equal(d.spec.template.metadata.labels[k], v);
    });
  }

  test('the reconcile CronJob stays next to it (the safety net)', () => {
    for (const env of OVERLAYS) assert.ok(find(built[env], 'CronJob', 'elara-sync'));
  });
});

describe('backend Deployment and Service', () => {
  for (const env of OVERLAYS) {
    test(`${env}: command, probes, env from the Secret, resources, security context`, () => {
      const d = find(built[env], 'Deployment', 'elara-backend');
      assert.equal(d.spec.replicas, env === 'production' ? 3 : 1);
      const pod = d.spec.template.spec;
      assert.equal(pod.serviceAccountName, 'elara-backend');
      assert.equal(pod.automountServiceAccountToken, false);
      const c = pod.containers.find((x: any) => x.name === 'backend');
      assert.ok(c);
      assert.deepEqual(c.command, ['node', '--import', 'tsx', 'packages/backend/src/serve.ts']);
      assert.ok(!JSON.stringify(c).includes('npm'), 'npm start boots the embedded database: not for Kubernetes');
      const port = c.ports.find((p: any) => p.name === 'http');
      assert.equal(port.containerPort, 3000);
      assert.deepEqual([c.livenessProbe.httpGet.path, c.livenessProbe.httpGet.port], ['/health', 'http']);
      assert.deepEqual([c.readinessProbe.httpGet.path, c.readinessProbe.httpGet.port], ['/ready', 'http']);
      assertSecretEnv(c, {
        DATABASE_URL: ['elara-secrets', 'database-url'],
        STAGING_DATABASE_URL: ['elara-secrets', 'staging-database-url'],
        JWT_SECRET: ['elara-secrets', 'jwt-secret'],
      });
      assertHardened(pod, c);
      // The overlay patch merged by container name instead of replacing the container.
      assert.ok(c.image && c.env.length >= 6);
    });

    test(`${env}: the Service selects the backend pods on its http port`, () => {
      const d = find(built[env], 'Deployment', 'elara-backend');
      const s = find(built[env], 'Service', 'elara-backend');
      for (const [k, v] of Object.entries(s.spec.selector as Record<string, string>)) {
        assert.equal(d.spec.template.metadata.labels[k], v);
        assert.equal(d.spec.selector.matchLabels[k], v);
      }
      assert.equal(s.spec.ports[0].targetPort, 'http');
    });
  }
});

describe('NetworkPolicy and ServiceAccounts', () => {
  const policy = (name: string) => find(built.production, 'NetworkPolicy', name);
  const egressPorts = (p: K8sObject) => p.spec.egress.flatMap((r: any) => r.ports.map((x: any) => `${x.protocol}/${x.port}`)).sort();

  test('backend: ingress only on 3000, egress only to PostgreSQL and DNS', () => {
    const p = policy('elara-backend');
    assert.deepEqual(p.spec.policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual(p.spec.podSelector.matchLabels, { 'app.kubernetes.io/name': 'elara-backend' });
    assert.deepEqual(p.spec.ingress.flatMap((r: any) => r.ports.map((x: any) => `${x.protocol}/${x.port}`)), ['TCP/3000']);
    assert.deepEqual(egressPorts(p), ['TCP/53', 'TCP/5432', 'UDP/53']);
  });

  test('sync job: no ingress, egress only to PostgreSQL and DNS', () => {
    const p = policy('elara-sync');
    assert.deepEqual(p.spec.policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual(p.spec.ingress, []);
    assert.deepEqual(egressPorts(p), ['TCP/53', 'TCP/5432', 'UDP/53']);
    const cj = find(built.production, 'CronJob', 'elara-sync');
    assert.equal(cj.spec.jobTemplate.spec.template.metadata.labels['app.kubernetes.io/name'], 'elara-sync');
  });

  test('watch: no ingress, egress only to PostgreSQL and DNS', () => {
    const p = policy('elara-sync-watch');
    assert.deepEqual(p.spec.policyTypes, ['Ingress', 'Egress']);
    assert.deepEqual(p.spec.ingress, []);
    assert.deepEqual(egressPorts(p), ['TCP/53', 'TCP/5432', 'UDP/53']);
    const d = find(built.production, 'Deployment', 'elara-sync-watch');
    assert.deepEqual(p.spec.podSelector.matchLabels, { 'app.kubernetes.io/name': d.spec.template.metadata.labels['app.kubernetes.io/name'] });
  });

  test('service accounts do not mount API tokens', () => {
    for (const name of ['elara-backend', 'elara-sync']) {
      assert.equal(find(built.production, 'ServiceAccount', name).automountServiceAccountToken, false);
    }
  });
});

describe('secrets', () => {
  test('every secretKeyRef names a Secret and key of the example; the example holds placeholders only', () => {
    const keys = new Map<string, Set<string>>();
    for (const s of secretExample) {
      assert.equal(s.kind, 'Secret');
      assert.equal(s.data, undefined, 'use stringData placeholders, not base64 data');
      keys.set(s.metadata.name, new Set(Object.keys(s.stringData)));
      for (const [k, v] of Object.entries(s.stringData as Record<string, string>)) {
        assert.match(v, /REPLACE_ME/, `${s.metadata.name}.${k} must be a placeholder`);
        if (/url/.test(k)) assert.match(v, /:REPLACE_ME[A-Z_]*@/, `${k}: the password part is a placeholder`);
      }
    }
    for (const env of OVERLAYS) {
      for (const o of built[env]) {
        for (const c of containers(o)) {
          for (const e of c.env ?? []) {
            const ref = e.valueFrom?.secretKeyRef;
            if (!ref) continue;
            assert.ok(keys.get(ref.name)?.has(ref.key), `${o.kind} ${o.metadata.name}: ${e.name} → ${ref.name}/${ref.key} not in secret.example.yaml`);
          }
        }
      }
    }
  });

  test('no literal credential anywhere under deploy/', () => {
    // A URL with user info (user, colon, password, at-sign) whose password is not a placeholder.
    const urlWithPassword = /[a-z][a-z0-9+.-]*:\/\/[^\s:/@'"]+:([^\s@'"]+)@/gi;
    const placeholder = /^(REPLACE_ME\w*|\.\.\.|…|\*\*\*|<[^>]+>|\$\{?\w+\}?|:'\w+')$/;
    const offenders: string[] = [];
    for (const f of walk(DEPLOY)) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(urlWithPassword)) {
        if (!placeholder.test(m[1] ?? '')) offenders.push(`${relative(DEPLOY, f)}: ${m[0]}`);
      }
      // In YAML and SQL: a password, secret or token key with a value that is not a placeholder or variable.
      for (const m of text.matchAll(/\b(password|passwd|secret|token)\b["']?\s*[:=]\s*["']?([^\s"',)]+)/gi)) {
        const value = m[2] ?? '';
        const psqlVariable = /:'\w+$/.test(m[0]);
        if (!psqlVariable && !placeholder.test(value) && !/^(\{|\[|true|false|null)$/.test(value) && /\.(ya?ml|sql|env)$/.test(f)) {
          offenders.push(`${relative(DEPLOY, f)}: ${m[0]}`);
        }
      }
      // In SQL and docs: a role password given as a quoted literal instead of a psql variable.
      if (/\.(sql|md)$/.test(f)) {
        for (const m of text.matchAll(/\bPASSWORD\s+'([^']*)'/gi)) offenders.push(`${relative(DEPLOY, f)}: ${m[0]}`);
      }
    }
    assert.deepEqual(offenders, []);
  });

  test('no container sets a credential-looking env var by value', () => {
    for (const env of OVERLAYS) {
      for (const o of built[env]) {
        for (const c of containers(o)) {
          for (const e of c.env ?? []) {
            if (/URL|PASSWORD|SECRET|TOKEN|KEY/i.test(e.name)) {
              assert.equal(e.value, undefined, `${o.kind} ${o.metadata.name}: ${e.name} must come from a Secret`);
              assert.ok(e.valueFrom?.secretKeyRef, `${e.name} uses secretKeyRef`);
            }
          }
        }
      }
    }
  });
});

describe('TLS to the databases: the CA reaches the pods as a file that sslrootcert names', () => {
  const CA_DIR = '/etc/elara/db-ca';
  const workloads = (env: typeof OVERLAYS[number]) => [find(built[env], 'Deployment', 'elara-backend'), find(built[env], 'CronJob', 'elara-sync'), find(built[env], 'Deployment', 'elara-sync-watch')];

  for (const env of OVERLAYS) {
    test(`${env}: the backend and the sync job mount ConfigMap elara-db-ca read-only at ${CA_DIR}, without subPath`, () => {
      for (const o of workloads(env)) {
        const [pod] = podTemplates(o);
        const vol = pod!.spec.volumes.find((v: any) => v.name === 'db-ca');
        assert.ok(vol, `${o.kind} ${o.metadata.name}: a db-ca volume`);
        assert.equal(vol.configMap?.name, 'elara-db-ca');
        assert.equal(vol.configMap?.optional, undefined, 'not optional: no CA, no verified connection');
        assert.deepEqual(vol.configMap.items, [{ key: 'ca.crt', path: 'ca.crt' }]);
        for (const c of containers(o)) {
          const m = c.volumeMounts.find((x: any) => x.name === 'db-ca');
          assert.ok(m, `${c.name} mounts db-ca`);
          assert.equal(m.mountPath, CA_DIR);
          assert.equal(m.readOnly, true);
          // A subPath mount never sees an updated ConfigMap: rotation would need a restart.
          assert.equal(m.subPath, undefined);
          assert.equal(c.env.find((e: any) => e.name === 'NODE_ENV')?.value, 'production', `${o.kind}: NODE_ENV=production refuses plaintext`);
        }
      }
    });
  }

  test('every database URL of the Secret example is verify-full with sslrootcert at the mounted file; the ConfigMap example has that key', () => {
    const [cm, ...more] = caExample;
    assert.equal(more.length, 0);
    assert.equal(cm!.kind, 'ConfigMap');
    assert.equal(cm!.metadata.name, 'elara-db-ca');
    assert.match(cm!.data['ca.crt'], /-----BEGIN CERTIFICATE-----[\s\S]*REPLACE_ME[\s\S]*-----END CERTIFICATE-----/);
    let urls = 0;
    for (const s of secretExample) {
      for (const [k, v] of Object.entries(s.stringData as Record<string, string>)) {
        if (!/url/.test(k)) continue;
        urls++;
        // Read as the backend and elara-sync read it.
        const tls = resolveTlsSettings(v, {});
        assert.equal(tls.mode, 'verify-full', `${s.metadata.name}.${k}`);
        assert.equal(tls.verify, 'full');
        assert.equal(tls.rootCert, `${CA_DIR}/ca.crt`, `${s.metadata.name}.${k} names the mounted CA file`);
      }
    }
    assert.equal(urls, 4);
  });
});

function assertSecretEnv(c: Record<string, any>, expected: Record<string, [string, string]>): void {
  for (const [name, [secret, key]] of Object.entries(expected)) {
    const e = (c.env ?? []).find((x: any) => x.name === name);
    assert.ok(e, `env ${name} missing`);
    assert.equal(e.value, undefined, `${name} must not be a literal`);
    assert.deepEqual(e.valueFrom, { secretKeyRef: { name: secret, key } }, `${name} from ${secret}/${key}`);
  }
}

function assertHardened(pod: Record<string, any>, c: Record<string, any>): void {
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.ok(pod.securityContext.runAsUser > 0);
  assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  const sc = c.securityContext;
  assert.equal(sc.runAsNonRoot, true);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.equal(sc.privileged, false);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  assert.equal(sc.capabilities.add, undefined);
  for (const kind of ['requests', 'limits'] as const) {
    assert.ok(c.resources?.[kind]?.cpu && c.resources?.[kind]?.memory, `${c.name}: resources.${kind} cpu and memory`);
  }
  // A read-only root filesystem needs a writable /tmp (tsx's cache).
  assert.ok(c.volumeMounts.some((m: any) => m.mountPath === '/tmp'));
}
