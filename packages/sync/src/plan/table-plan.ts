// The table plan: compiled once from elara-sync.yml and both sides' catalogs, and used by every
// path (reconcile, immediate sync, verify, doctor, plan, and later watch). Pure: the catalogs are
// read elsewhere (catalog/introspect.ts); this file only decides. Everything a path needs to read
// the source (columns through their transforms, row filter) and to apply to the target (key,
// unique indexes, FKs in and out, sequences, which changes must be written as delete + insert)
// is here, so no path can forget a rule.
import { createHash } from 'node:crypto';
import { SyncError } from '../errors.ts';
import { parseTableName, qualifiedName, quoteIdent, type Column, type ForeignKey, type TableInfo, type UniqueIndex } from '../catalog/introspect.ts';
import { inspectExpression } from '../sql/expression.ts';
import { isRuleName, RULES, ruleExpression, type Rule } from '../sql/rules.ts';
import { compareTypes } from './types.ts';
import { subsetFilters, type SubsetConfig } from './subset.ts';

export interface TableConfig {
  name: string;
  /** Column name → SQL expression evaluated on the source, for every target. */
  transforms?: Record<string, string>;
  /** SQL boolean expression on the source table (e.g. per-organization sync). */
  where?: string;
  /** Column name → anonymization rule, used by targets with `anonymize: true` (every column needs one there). */
  columns?: Record<string, Rule>;
}

/** What a target changes in the plans: its rules and its subset. */
export interface PlanTarget {
  name: string;
  anonymize: boolean;
  /** A fingerprint of the mask key (never the key), so a new key forces one full compare. */
  maskSig: string | null;
  /** The hash written by the password_hash rule. */
  passwordHash: string | null;
  subset: SubsetConfig | null;
}

export interface PlanColumn {
  name: string;
  /** The target's type (format_type): values are cast to it on the source, so binary COPY matches. */
  type: string;
  /** Source expression: the quoted column, or the configured transform. */
  expr: string;
  transformed: boolean;
  /** Part of the primary key. */
  key: boolean;
  /** GENERATED ALWAYS AS IDENTITY on the target: written with OVERRIDING SYSTEM VALUE, never UPDATE SET. */
  identityAlways: boolean;
  /**
   * A change to this column is written as delete + insert instead of UPDATE: it is read by a
   * unique index (a value can move between rows: swaps, erase and re-register), or cannot be
   * assigned by UPDATE (identity), or is a key column (identity, not `=`, for citext keys).
   */
  rewrite: boolean;
}

export interface PlanSequence {
  column: string;
  /** Quoted, qualified sequence names, or null when that side's column has none. */
  source: string | null;
  target: string;
  /** Largest value the column's type holds. */
  max: bigint;
}

export interface TablePlan {
  /** Stable identity of the table in state and logs: the quoted, qualified name. */
  id: string;
  display: string;
  /** `ONLY` for plain tables (legacy inheritance parents sync their own rows); none for partitioned ones. */
  only: string;
  source: TableInfo;
  target: TableInfo;
  columns: PlanColumn[];
  key: PlanColumn[];
  where: string | null;
  /** Unique indexes of the target (besides the key) whose columns are all synced. */
  uniques: UniqueIndex[];
  /** The target's FKs out of this table, and into it from any table. */
  fksOut: ForeignKey[];
  fksIn: ForeignKey[];
  sequences: PlanSequence[];
  /** What `plan` shows: lossless type differences, staging triggers that do not fire on apply. */
  notes: string[];
  /** Changes when anything that decides a row's synced form changes (forces one full compare). */
  sig: string;
}

const INT_MAX: Record<string, bigint> = { smallint: 32767n, integer: 2147483647n, bigint: 9223372036854775807n };

function checkExpression(field: string, text: string, kind: 'transform' | 'filter'): string | null {
  try {
    const facts = inspectExpression(text);
    if (kind === 'transform' && facts.readsTables) {
      return `${field} reads other tables (a subquery): a transform must depend only on its own row, or changes to the other table would never reach staging`;
    }
    return null;
  } catch (e) {
    return `${field} ${(e as Error).message}`;
  }
}

/** Checks a table config's expressions without a database (used when the config is loaded, too). */
export function expressionProblems(cfg: TableConfig, where = `tables.${cfg.name}`): string[] {
  const out: string[] = [];
  for (const [col, expr] of Object.entries(cfg.transforms ?? {})) {
    const p = checkExpression(`${where}.transforms.${col}`, expr, 'transform');
    if (p) out.push(p);
  }
  for (const [col, rule] of Object.entries(cfg.columns ?? {})) {
    if (typeof rule === 'string') {
      if (!isRuleName(rule)) out.push(`${where}.columns.${col}: unknown rule "${rule}" (one of ${Object.keys(RULES).join(', ')}, { token: <prefix> } or { sql: <expression> })`);
      continue;
    }
    if ('token' in rule) continue;
    const p = checkExpression(`${where}.columns.${col}.sql`, rule.sql, 'transform');
    if (p) out.push(p);
  }
  if (cfg.where !== undefined) {
    const p = checkExpression(`${where}.where`, cfg.where, 'filter');
    if (p) out.push(p);
  }
  return out;
}

/** Compiles the plans, or throws one SyncError listing every problem (never a row value). */
export function compileTablePlans(configs: TableConfig[], source: Map<string, TableInfo>, target: Map<string, TableInfo>, planTarget: PlanTarget | null = null): TablePlan[] {
  const problems: string[] = [];
  const plans: TablePlan[] = [];
  const anonymize = planTarget?.anonymize ?? false;
  for (const cfg of configs) {
    const p = parseTableName(cfg.name);
    const q = qualifiedName(p.schema, p.name);
    const s = source.get(q);
    const d = target.get(q);
    const exprProblems = expressionProblems(cfg);
    problems.push(...exprProblems);
    if (!s) problems.push(`table ${cfg.name} does not exist in production (source)`);
    if (!d) problems.push(`table ${cfg.name} does not exist in staging (target): apply the migrations to staging (npm run db:migrate)`);
    if (!s || !d || exprProblems.length) continue;
    if (d.primaryKey.length === 0) {
      problems.push(`table ${d.display} has no primary key in staging: add one (the engine matches rows by primary key)`);
      continue;
    }
    if (s.primaryKey.join(',') !== d.primaryKey.join(',')) {
      problems.push(`table ${d.display} has primary key (${s.primaryKey.join(', ') || 'none'}) in production but (${d.primaryKey.join(', ')}) in staging`);
      continue;
    }
    if (s.relkind !== d.relkind) {
      problems.push(`table ${d.display} is ${s.relkind === 'p' ? 'partitioned' : 'a plain table'} in production but ${d.relkind === 'p' ? 'partitioned' : 'a plain table'} in staging`);
      continue;
    }
    const srcCols = new Map(s.columns.map((c) => [c.name, c]));
    const dstCols = new Map(d.columns.map((c) => [c.name, c]));
    const transforms = cfg.transforms ?? {};
    const notes: string[] = [];
    let broken = false;
    for (const c of s.columns) if (!dstCols.has(c.name) && !c.generated) problems.push(`column ${d.display}.${c.name} exists in production but not in staging: migrate staging`);
    for (const c of d.columns) {
      if (!srcCols.has(c.name) && !c.generated && !(c.name in transforms)) {
        problems.push(`column ${d.display}.${c.name} exists in staging but not in production: migrate production or drop the column in staging`);
      }
    }
    for (const name of Object.keys(transforms)) {
      const dc = dstCols.get(name);
      if (!dc) problems.push(`transform for ${d.display}.${name}: no such column in staging`);
      else if (dc.generated) problems.push(`transform for ${d.display}.${name}: the column is generated in staging and cannot be written`);
    }
    if (anonymize) {
      for (const name of Object.keys(cfg.columns ?? {})) if (!srcCols.has(name)) problems.push(`tables.${cfg.name}.columns.${name}: no such column in production`);
    }
    const columns: PlanColumn[] = [];
    const uniqueCols = new Set(d.uniques.flatMap((u) => u.columns));
    for (const dc of d.columns) {
      if (dc.generated) continue;
      const sc = srcCols.get(dc.name);
      const transformed = dc.name in transforms;
      if (!sc && !transformed) continue;
      if (sc && !transformed) {
        if (sc.generated) {
          problems.push(`column ${d.display}.${dc.name} is generated in production but not in staging: make them the same`);
          broken = true;
          continue;
        }
        const v = compareTypes(sc, dc);
        if (v.kind === 'lossy') {
          problems.push(`column ${d.display}.${dc.name}: ${v.reason}; values would change or be rejected, so nothing was written (migrate staging to production's type)`);
          broken = true;
          continue;
        }
        if (v.kind === 'lossless') notes.push(`column ${d.display}.${dc.name}: ${v.note} (values are copied unchanged)`);
      }
      const key = d.primaryKey.includes(dc.name);
      if (key && transformed) {
        problems.push(`transform for ${d.display}.${dc.name}: primary-key columns cannot be transformed (rows are matched by key)`);
        broken = true;
        continue;
      }
      let expr = transformed ? transforms[dc.name]! : quoteIdent(dc.name);
      if (anonymize) {
        // Fail closed: on an anonymized target every column needs a rule, so a column added in
        // production later never flows in raw.
        const rule: Rule | undefined = cfg.columns?.[dc.name] ?? (transformed ? { sql: transforms[dc.name]! } : undefined);
        const where = `tables.${cfg.name}.columns.${dc.name}`;
        if (rule === undefined) {
          problems.push(`${where}: column ${d.display}.${dc.name} has no rule for the anonymized target ${planTarget!.name}; add one (keep, null, hash, email, …) so it cannot reach the target raw`);
          broken = true;
          continue;
        }
        if (key && rule !== 'keep') {
          problems.push(`${where}: primary-key columns must be keep (rows are matched by key)`);
          broken = true;
          continue;
        }
        const indexes = d.uniques.filter((u) => u.columns.includes(dc.name));
        const ruleName = typeof rule === 'string' ? rule : 'token' in rule ? 'token' : 'sql';
        const preserving = ruleName !== 'sql' && RULES[ruleName].unique && !(ruleName === 'null' && indexes.some((u) => u.nullsNotDistinct));
        if (indexes.length > 0 && !preserving) {
          problems.push(`${where}: rule ${ruleName} does not keep distinct values distinct, but unique index ${indexes[0]!.name} reads the column (use keep, hash, email or token)`);
          broken = true;
          continue;
        }
        const r = ruleExpression(rule, quoteIdent(dc.name), dc.type, { passwordHash: planTarget!.passwordHash });
        if ('error' in r) {
          problems.push(`${where}: ${r.error}`);
          broken = true;
          continue;
        }
        expr = r.expr;
      }
      columns.push({
        name: dc.name,
        type: dc.type,
        expr,
        transformed: transformed || expr !== quoteIdent(dc.name),
        key,
        identityAlways: dc.identity === 'a',
        rewrite: key || uniqueCols.has(dc.name) || dc.identity === 'a',
      });
    }
    if (broken) continue;
    const byName = new Map(columns.map((c) => [c.name, c]));
    const key = d.primaryKey.map((k) => byName.get(k)!);
    const uniques = d.uniques.filter((u) => u.columns.every((c) => byName.has(c)));
    for (const u of d.uniques) {
      if (!uniques.includes(u)) notes.push(`unique index ${u.name} on ${d.display} reads columns that are not synced; the engine cannot see collisions on it`);
    }
    const prodUniques = new Set(s.uniques.map((u) => `${u.exprs.join(',')}|${u.predicate ?? ''}`));
    for (const u of uniques) {
      if (!prodUniques.has(`${u.exprs.join(',')}|${u.predicate ?? ''}`)) notes.push(`unique index ${u.name} on ${d.display} exists only in staging: production rows may collide on it`);
    }
    for (const t of d.triggers) {
      notes.push(t.enabled === 'A' || t.enabled === 'R'
        ? `staging trigger ${t.name} on ${d.display} is ENABLE ${t.enabled === 'A' ? 'ALWAYS' : 'REPLICA'}: it fires when the engine applies rows`
        : `staging trigger ${t.name} on ${d.display} does not fire when the engine applies rows (as with logical replication)`);
    }
    const sequences: PlanSequence[] = [];
    for (const c of columns) {
      const dc = dstCols.get(c.name)!;
      if (!dc.sequence || !(dc.type in INT_MAX)) continue;
      sequences.push({ column: c.name, source: srcCols.get(c.name)?.sequence ?? null, target: dc.sequence, max: INT_MAX[dc.type]! });
    }
    const where = cfg.where ?? null;
    const fksIn = d.referencedBy;
    const only = d.relkind === 'r' ? 'ONLY ' : '';
    plans.push({
      id: q, display: d.display, only, source: s, target: d, columns, key, where, uniques,
      fksOut: d.foreignKeys, fksIn, sequences, notes, sig: '',
    });
  }
  if (planTarget?.subset && problems.length === 0) {
    const p = parseTableName(planTarget.subset.root);
    const rootId = qualifiedName(p.schema, p.name);
    if (!plans.some((x) => x.id === rootId)) {
      problems.push(`tables: the subset root ${planTarget.subset.root} of target ${planTarget.name} is not one of the synced tables`);
    } else {
      const filters = subsetFilters(plans.map((x) => ({ id: x.id, only: x.only, key: x.key, fks: x.fksOut })), rootId, planTarget.subset.where);
      for (const x of plans) x.where = x.where ? `(${x.where}) AND ${filters.get(x.id)}` : filters.get(x.id)!;
    }
  }
  for (const x of plans) {
    x.sig = createHash('sha1').update(JSON.stringify({
      columns: x.columns.map((c) => [c.name, c.type, c.expr]), key: x.key.map((k) => k.name), where: x.where, only: x.only,
      mask: x.columns.some((c) => c.expr.includes('elara.mask_')) ? planTarget?.maskSig ?? null : null,
    })).digest('hex');
  }
  if (problems.length > 0) {
    const code = problems.some((m) => m.includes('primary key')) ? 'E_NO_PRIMARY_KEY'
      : problems.some((m) => /^tables\./.test(m)) ? 'E_CONFIG' : 'E_SCHEMA_MISMATCH';
    const hint = code === 'E_CONFIG' ? 'fix the expression in elara-sync.yml, then run again'
      : problems.some((m) => m.includes('migrate')) ? 'run npm run db:migrate against both databases, then run again'
        : 'fix the tables or the table list in elara-sync.yml, then run again';
    throw new SyncError(code, `schema problems (nothing was written):\n  - ${problems.join('\n  - ')}`, hint);
  }
  return plans;
}

/** Whether a column list is the table's whole key (for FKs that reference it by primary key). */
export function isKey(plan: TablePlan, columns: string[]): boolean {
  return columns.length === plan.key.length && plan.key.every((k, i) => columns[i] === k.name);
}

export type { Column };
