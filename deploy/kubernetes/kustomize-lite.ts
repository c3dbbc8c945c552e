// A small subset of kustomize, enough to build our own overlays in tests without the kustomize
// binary: resources (files and directories), namespace, labels (includeSelectors: false), images,
// replicas and strategic-merge patches by file. Any other kustomization field is an error, so an
// overlay cannot silently use something these tests would not apply.
import { readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type K8sObject = Record<string, any> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
};

const SUPPORTED = new Set(['apiVersion', 'kind', 'resources', 'namespace', 'labels', 'images', 'replicas', 'patches']);
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'PersistentVolume', 'StorageClass']);

/** Every YAML document of a file, as plain objects; fails on any parse error or warning. */
export function readYamlDocuments(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: unknown[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0 || doc.warnings.length > 0) {
      throw new Error(`${file}: ${[...doc.errors, ...doc.warnings].map((e) => e.message).join('; ')}`);
    }
    const value = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

export function buildKustomization(dir: string): K8sObject[] {
  const file = ['kustomization.yaml', 'kustomization.yml'].map((f) => join(dir, f)).find(exists);
  if (!file) throw new Error(`no kustomization.yaml in ${dir}`);
  const k = readYamlDocuments(file)[0] as Record<string, any>;
  for (const key of Object.keys(k)) {
    if (!SUPPORTED.has(key)) throw new Error(`${file}: kustomize-lite does not support "${key}"`);
  }

  let objects: K8sObject[] = [];
  for (const r of (k.resources ?? []) as string[]) {
    const p = resolve(dir, r);
    if (statSync(p).isDirectory()) objects.push(...buildKustomization(p));
    else objects.push(...(readYamlDocuments(p) as K8sObject[]));
  }
  objects = structuredClone(objects);

  for (const patch of (k.patches ?? []) as Array<Record<string, unknown>>) {
    if (typeof patch.path !== 'string' || Object.keys(patch).length !== 1) {
      throw new Error(`${file}: only "patches: - path: <file>" is supported`);
    }
    for (const doc of readYamlDocuments(resolve(dir, patch.path)) as K8sObject[]) {
      const target = objects.find((o) => o.apiVersion === doc.apiVersion && o.kind === doc.kind && o.metadata.name === doc.metadata.name);
      if (!target) throw new Error(`${patch.path}: no ${doc.kind} ${doc.metadata.name} to patch`);
      objects[objects.indexOf(target)] = mergePatch(target, doc) as K8sObject;
    }
  }

  if (k.namespace) {
    for (const o of objects) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }

  for (const l of (k.labels ?? []) as Array<{ pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }>) {
    if (l.includeSelectors) throw new Error(`${file}: labels with includeSelectors are not supported`);
    for (const o of objects) {
      o.metadata.labels = { ...(o.metadata.labels ?? {}), ...l.pairs };
      if (l.includeTemplates) {
        for (const t of podTemplates(o)) {
          t.metadata = t.metadata ?? {};
          t.metadata.labels = { ...(t.metadata.labels ?? {}), ...l.pairs };
        }
      }
    }
  }

  for (const img of (k.images ?? []) as Array<{ name: string; newName?: string; newTag?: string; digest?: string }>) {
    for (const o of objects) {
      for (const t of podTemplates(o)) {
        for (const c of [...(t.spec?.containers ?? []), ...(t.spec?.initContainers ?? [])]) {
          const { name, tag, digest } = splitImage(c.image);
          if (name !== img.name) continue;
          const newName = img.newName ?? name;
          c.image = img.digest ? `${newName}@${img.digest}` : `${newName}${img.newTag ? `:${img.newTag}` : tag ? `:${tag}` : ''}${!img.newTag && digest ? `@${digest}` : ''}`;
        }
      }
    }
  }

  for (const r of (k.replicas ?? []) as Array<{ name: string; count: number }>) {
    const target = objects.find((o) => ['Deployment', 'StatefulSet', 'ReplicaSet'].includes(o.kind) && o.metadata.name === r.name);
    if (!target) throw new Error(`${file}: replicas for unknown ${r.name}`);
    target.spec.replicas = r.count;
  }
  return objects;
}

/** The pod templates inside a workload (Deployment, Job, CronJob, …). */
export function podTemplates(o: K8sObject): Array<Record<string, any>> {
  if (o.kind === 'CronJob') return o.spec?.jobTemplate?.spec?.template ? [o.spec.jobTemplate.spec.template] : [];
  if (o.spec?.template) return [o.spec.template];
  return [];
}

function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  const [rest = '', digest] = image.split('@');
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) return { name: rest.slice(0, colon), tag: rest.slice(colon + 1), digest };
  return { name: rest, digest };
}

/**
 * Strategic merge as kustomize applies it to the fields we patch: maps merge key by key; lists of
 * objects that all have a `name` merge by name (containers, env, volumes, volumeMounts); other
 * lists are replaced. `$patch` directives are not supported.
 */
export function mergePatch(base: unknown, patch: unknown): unknown {
  if (isMap(patch) && '$patch' in patch) throw new Error('$patch directives are not supported');
  if (isMap(base) && isMap(patch)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(patch)) out[k] = k in base ? mergePatch(base[k], v) : v;
    return out;
  }
  if (Array.isArray(base) && Array.isArray(patch) && [...base, ...patch].every((x) => isMap(x) && typeof x.name === 'string')) {
    const out = base.map((x) => ({ ...(x as Record<string, unknown>) }));
    for (const p of patch as Array<Record<string, unknown>>) {
      const i = out.findIndex((x) => x.name === p.name);
      if (i >= 0) out[i] = mergePatch(out[i], p) as Record<string, unknown>;
      else out.push(p);
    }
    return out;
  }
  return patch;
}

function isMap(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function exists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}

export const here = dirname(new URL(import.meta.url).pathname);
