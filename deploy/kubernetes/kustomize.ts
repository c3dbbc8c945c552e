// The overlays are built by the real kustomize (`kubectl kustomize`, Debian's kubectl package,
// which .ci/run installs), so the tests check exactly what `kubectl apply -k` would send.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export type K8sObject = Record<string, any> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
};

export const here = dirname(fileURLToPath(import.meta.url));

/** Every YAML document of a text, as plain objects; fails on any parse error or warning. */
export function parseYamlDocuments(text: string, where: string): unknown[] {
  const out: unknown[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0 || doc.warnings.length > 0) {
      throw new Error(`${where}: ${[...doc.errors, ...doc.warnings].map((e) => e.message).join('; ')}`);
    }
    const value = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

export const readYamlDocuments = (file: string): unknown[] => parseYamlDocuments(readFileSync(file, 'utf8'), file);

/** `kubectl kustomize <dir>`: the objects an overlay renders to. */
export function buildKustomization(dir: string): K8sObject[] {
  let out: string;
  try {
    out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('kubectl is not installed: these tests need `kubectl kustomize` (apt-get install kubectl; .ci/run does it)', { cause: err });
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
  return parseYamlDocuments(out, `kubectl kustomize ${dir}`) as K8sObject[];
}

/** The pod templates inside a workload (Deployment, Job, CronJob, …). */
export function podTemplates(o: K8sObject): Array<Record<string, any>> {
  if (o.kind === 'CronJob') return o.spec?.jobTemplate?.spec?.template ? [o.spec.jobTemplate.spec.template] : [];
  if (o.spec?.template) return [o.spec.template];
  return [];
}
