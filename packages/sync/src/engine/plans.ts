// Compiling the table plans: the catalog I/O around the pure compiler, and the checks only the
// source can answer (does each expression parse as one expression of the right type; does it call
// a volatile function).
import type pg from 'pg';
import { introspectTables } from '../catalog/introspect.ts';
import { compileTablePlans, type PlanTarget, type TableConfig, type TablePlan } from '../plan/table-plan.ts';
import { inspectExpression } from '../sql/expression.ts';
import { sourceSelect } from '../sql/statements.ts';
import { SyncError } from '../errors.ts';
import { describeDatabaseError } from './errors.ts';

/** Reads both catalogs and compiles the plans (throws one SyncError listing every problem). */
export async function compilePlans(source: pg.ClientBase | pg.Pool, target: pg.ClientBase | pg.Pool, tables: TableConfig[], planTarget: PlanTarget | null = null): Promise<TablePlan[]> {
  const names = tables.map((t) => t.name);
  const [src, dst] = await Promise.all([introspectTables(source, names), introspectTables(target, names)]);
  return compileTablePlans(tables, src, dst, planTarget);
}

/** A source session that must evaluate anonymization rules has the mask pads (set at connect). */
export async function assertMaskSession(source: pg.ClientBase | pg.Pool, plans: TablePlan[]): Promise<void> {
  if (!plans.some((p) => p.columns.some((c) => c.expr.includes('elara.mask_')))) return;
  const r = await source.query(`SELECT current_setting('elara.mask_i', true) IS NOT NULL AND current_setting('elara.mask_o', true) IS NOT NULL AS ok`);
  if (!r.rows[0].ok) {
    throw new SyncError('E_CONFIG', 'the production connection for an anonymized target has no mask key: its rules cannot run; nothing was read',
      'open it with the mask options: createPool(url, { options: maskOptions(target.mask) }) (the CLI and the backend do this)', { side: 'source' });
  }
}

/**
 * Checks every configured expression on the source, over the extended protocol (which takes
 * exactly one statement): it must parse, have a type that casts to the target column's, and call
 * no volatile function (a transform must give the same output for the same row on every run).
 * Transforms may not call user-defined functions that are not IMMUTABLE (they could read other
 * tables). Problems name the table and field, and say it was production that refused.
 */
export async function validateOnSource(source: pg.ClientBase | pg.Pool, plans: TablePlan[]): Promise<void> {
  const problems: string[] = [];
  const fields: Array<{ plan: TablePlan; field: string; expr: string; kind: 'transform' | 'filter'; sql: string }> = [];
  for (const p of plans) {
    for (const c of p.columns.filter((x) => x.transformed)) {
      fields.push({ plan: p, field: `${p.display}.transforms.${c.name}`, expr: c.expr, kind: 'transform', sql: `SELECT (${c.expr})::${c.type} FROM ${p.only}${p.id} s LIMIT 0` });
    }
    if (p.where) fields.push({ plan: p, field: `${p.display}.where`, expr: p.where, kind: 'filter', sql: `SELECT 1 FROM ${p.only}${p.id} s WHERE (${p.where}) LIMIT 0` });
  }
  if (fields.length === 0) return;
  const names = [...new Set(fields.flatMap((f) => inspectExpression(f.expr).functions))];
  const procs = names.length === 0 ? [] : (await source.query({
    text: `SELECT lower(p.proname) AS name, lower(n.nspname) AS schema, p.provolatile AS v FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE lower(p.proname) = ANY($1)`,
    values: [names.map((n) => n.split('.').pop()!)],
  })).rows as Array<{ name: string; schema: string; v: string }>;
  for (const f of fields) {
    try {
      await source.query({ text: f.sql, values: [], queryMode: 'extended' } as pg.QueryConfig);
    } catch (e) {
      problems.push(`production (source) rejected ${f.field}: ${describeDatabaseError(e)}`);
      continue;
    }
    for (const fn of inspectExpression(f.expr).functions) {
      const [schema, name] = fn.includes('.') ? fn.split('.') : [null, fn];
      const matches = procs.filter((p) => p.name === name && (schema === null || p.schema === schema));
      if (matches.some((m) => m.v === 'v')) {
        problems.push(`${f.field} calls ${fn}(), which is volatile: its output changes between runs for the same row, so staging would never settle (use a deterministic expression)`);
      } else if (f.kind === 'transform' && matches.some((m) => m.schema !== 'pg_catalog' && m.v !== 'i')) {
        problems.push(`${f.field} calls ${fn}(), a function that is not IMMUTABLE and may read other tables: a transform must depend only on its own row (declare the function IMMUTABLE if it is)`);
      }
    }
  }
  // The whole source query, once, as the server will see it inside COPY: one statement.
  for (const p of plans) {
    if (problems.some((m) => m.includes(`${p.display}.`))) continue;
    try {
      await source.query({ text: `${sourceSelect(p, { kind: 'all' })} LIMIT 0`, values: [], queryMode: 'extended' } as pg.QueryConfig);
    } catch (e) {
      problems.push(`production (source) rejected the source query of ${p.display}: ${describeDatabaseError(e)}`);
    }
  }
  if (problems.length) {
    throw new SyncError('E_CONFIG', `elara-sync.yml has ${problems.length} problem(s) (nothing was written):\n  - ${problems.join('\n  - ')}`,
      'fix the transforms and row filters named, then run again', { side: 'source' });
  }
}

/**
 * Source queries go to production over the extended protocol, which takes exactly one statement.
 * COPY (SELECT …) TO STDOUT cannot (pg-copy-streams sends a simple query), so the SELECT inside it
 * is first parsed on its own this way, with LIMIT 0: the text COPY wraps is one statement.
 */
export async function sourceQuery(source: pg.ClientBase, text: string): Promise<pg.QueryResult> {
  return source.query({ text, values: [], queryMode: 'extended' } as pg.QueryConfig);
}

export async function assertOneStatement(source: pg.ClientBase, select: string): Promise<void> {
  await sourceQuery(source, `${select} LIMIT 0`);
}

/**
 * After production rejected a source query at run time (a transform that fails on some row, e.g.
 * a division by zero or a bad cast), finds which field it was: each transform and the filter is
 * evaluated alone over the same rows, on a fresh read-only connection.
 */
export async function findFailingField(source: pg.ClientBase, plan: TablePlan): Promise<string | null> {
  const probes = [
    ...(plan.where ? [{ field: 'where', sql: `SELECT count(*) FROM ${plan.only}${plan.id} s WHERE (${plan.where})` }] : []),
    ...plan.columns.filter((c) => c.transformed).map((c) => ({
      field: `transforms.${c.name}`,
      sql: `SELECT count((${c.expr})::${c.type}) FROM ${plan.only}${plan.id} s${plan.where ? ` WHERE (${plan.where})` : ''}`,
    })),
  ];
  for (const p of probes) {
    try {
      await source.query({ text: p.sql, values: [], queryMode: 'extended' } as pg.QueryConfig);
    } catch {
      return p.field;
    }
  }
  return null;
}
