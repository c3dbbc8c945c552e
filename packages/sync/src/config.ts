// elara-sync.yml: parsed once at the boundary, every bad field named in one message.
import { readFileSync, existsSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { SyncError } from './errors.ts';
import { expressionProblems, type TableConfig } from './plan/table-plan.ts';
import { DEFAULT_TARGETS, type TargetConfig } from './engine/targets.ts';
import { inspectExpression } from './sql/expression.ts';
import { RULES, type RuleName } from './sql/rules.ts';

const durationRe = /^(\d+)(ms|s|m|h)$/;
export function parseDuration(s: string): number {
  const m = durationRe.exec(s.trim());
  if (!m) throw new SyncError('E_CONFIG', `"${s}" is not a duration`, 'write it like 30s, 5m or 1h');
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
}

const ruleSchema = z.union([
  z.enum(Object.keys(RULES) as [RuleName, ...RuleName[]]),
  z.object({ sql: z.string().min(1) }).strict(),
  z.object({ token: z.string().min(1).regex(/^[A-Za-z0-9_-]+$/, 'a prefix of letters, digits, _ and -') }).strict(),
]);
const tableSchema = z.union([
  z.string().min(1),
  z.object({
    name: z.string().min(1),
    transforms: z.record(z.string(), z.string().min(1)).optional(),
    where: z.string().min(1).optional(),
    columns: z.record(z.string(), ruleSchema).optional(),
  }).strict(),
]);
const targetSchema = z.object({
  url: z.string().min(1).optional(),
  anonymize: z.boolean().optional(),
  subset: z.object({ root: z.string().min(1), where: z.string().min(1) }).strict().optional(),
}).strict();

const fileSchema = z.object({
  tables: z.array(tableSchema).min(1),
  targets: z.record(z.string().regex(/^[a-z][a-z0-9_-]*$/, 'a target name: lower case letters, digits, - and _'), targetSchema).optional(),
  interval: z.string().regex(durationRe, 'a duration like 30s, 5m or 1h').optional(),
  statementTimeout: z.string().regex(durationRe, 'a duration like 30s, 5m or 1h').optional(),
  allowProductionTarget: z.boolean().optional(),
  sequenceHeadroom: z.number().int().positive().optional(),
}).strict();

export interface SyncConfig {
  tables: TableConfig[];
  /** Named targets (default: staging at STAGING_DATABASE_URL). URLs are expanded when a target is resolved. */
  targets: TargetConfig[];
  intervalMs: number;
  statementTimeoutMs: number;
  allowProductionTarget: boolean;
  /** How far staging's sequences are kept ahead of production's. */
  sequenceHeadroom?: number;
  /** Where the config came from, for messages. */
  origin: string;
}

export const DEFAULT_TABLES = ['Organization', 'User'];

export function defaultConfig(): SyncConfig {
  return { tables: DEFAULT_TABLES.map((name) => ({ name })), targets: DEFAULT_TARGETS, intervalMs: 300_000, statementTimeoutMs: 1_800_000, allowProductionTarget: false, origin: 'defaults' };
}

type Issue = { path: PropertyKey[]; message: string; code?: string; errors?: Issue[][] };

/**
 * zod reports a value matching no branch of a union (a table is a name or an object) as one
 * "Invalid input" at the table; the branch that got furthest says which field is wrong.
 */
function flattenIssues(issues: readonly Issue[], prefix: PropertyKey[] = []): Array<{ path: PropertyKey[]; message: string }> {
  return issues.flatMap((i) => {
    if (i.code === 'invalid_union' && i.errors?.length) {
      const best = [...i.errors].sort((a, b) => Math.max(0, ...b.map((x) => x.path.length)) - Math.max(0, ...a.map((x) => x.path.length)))[0]!;
      if (best.some((x) => x.path.length > 0)) return flattenIssues(best, [...prefix, ...i.path]);
      // No branch got further: the first one (here a rule name) lists what is allowed.
      return flattenIssues(i.errors[0]!, [...prefix, ...i.path]);
    }
    return [{ path: [...prefix, ...i.path], message: i.message }];
  });
}

export function parseConfig(text: string, origin: string): SyncConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new SyncError('E_CONFIG', `${origin} is not valid YAML: ${(e as Error).message}`, 'fix the file and run again');
  }
  const r = fileSchema.safeParse(raw ?? {});
  if (!r.success) {
    const lines = flattenIssues(r.error.issues).map((i) => `  - ${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw new SyncError('E_CONFIG', `${origin} has ${lines.length} problem(s):\n${lines.join('\n')}`, 'see elara-sync.yml in the repository for an example');
  }
  const c = r.data;
  const tables = c.tables.map((t) => (typeof t === 'string' ? { name: t } : t));
  // Transforms and filters are pasted into the source query: each must be one SQL expression.
  const problems = tables.flatMap((t, i) => expressionProblems(t, `tables.${i} (${t.name})`));
  const targets: TargetConfig[] = c.targets
    ? Object.entries(c.targets).map(([name, t]) => ({ name, url: t.url ?? null, anonymize: t.anonymize ?? false, subset: t.subset ?? null }))
    : DEFAULT_TARGETS;
  for (const t of targets) {
    if (!t.subset) continue;
    try {
      inspectExpression(t.subset.where);
    } catch (e) {
      problems.push(`targets.${t.name}.subset.where ${(e as Error).message}`);
    }
    if (!tables.some((x) => x.name === t.subset!.root)) problems.push(`targets.${t.name}.subset.root: ${t.subset.root} is not in tables`);
  }
  if (problems.length) {
    throw new SyncError('E_CONFIG', `${origin} has ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      'a transform or row filter is one SQL expression: no ";", no comments, balanced parentheses');
  }
  return Object.freeze({
    tables,
    targets,
    intervalMs: c.interval ? parseDuration(c.interval) : 300_000,
    statementTimeoutMs: c.statementTimeout ? parseDuration(c.statementTimeout) : 1_800_000,
    allowProductionTarget: c.allowProductionTarget ?? false,
    ...(c.sequenceHeadroom ? { sequenceHeadroom: c.sequenceHeadroom } : {}),
    origin,
  });
}

/**
 * Reads the config file: `path` (--config), else ELARA_SYNC_CONFIG, else ./elara-sync.yml when
 * present, else the defaults. The CLI and the backend both load it this way.
 */
export function loadConfig(path?: string, env: NodeJS.ProcessEnv = process.env): SyncConfig {
  const p = path ?? (env.ELARA_SYNC_CONFIG || undefined) ?? (existsSync('elara-sync.yml') ? 'elara-sync.yml' : undefined);
  if (!p) return defaultConfig();
  if (!existsSync(p)) throw new SyncError('E_CONFIG', `config file ${p} does not exist`, 'pass an existing file with --config, or omit it to use elara-sync.yml / the defaults');
  return parseConfig(readFileSync(p, 'utf8'), p);
}
