// Per-organization subsets: a target may hold only the root rows a filter selects, every row of
// the synced tables that depends on them through FK chains, and the parent rows those need (so FK
// integrity holds in the target). Pure: builds, per table, a row filter for the source query.
//
// The scope is one recursive query on production: `d` walks from the roots down (a child joins
// when its FK points at a row in scope), then `a` walks from everything in `d` up (a parent joins
// when a row in scope points at it). Keys travel as text[] and are compared typed, so each step
// is an index lookup. Membership changes over time (an organization upgraded, a user moved) change
// the filtered rows, and so the fingerprints, so they reach the target on the next run.
import { quoteIdent, type ForeignKey } from '../catalog/introspect.ts';
import type { PlanColumn } from './table-plan.ts';

export interface SubsetConfig {
  /** The root table, as in `tables` (e.g. Organization). */
  root: string;
  /** A boolean SQL expression over the root table's columns. */
  where: string;
}

export interface SubsetTable {
  id: string;
  only: string;
  key: PlanColumn[];
  /** FKs out of this table (the target's). */
  fks: ForeignKey[];
}

const q = quoteIdent;
const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
const keyArray = (t: SubsetTable, alias: string) => `ARRAY[${t.key.map((c) => `${alias}.${q(c.name)}::text`).join(', ')}]`;
const keyFrom = (t: SubsetTable, alias: string, arr: string) => t.key.map((c, i) => `${alias}.${q(c.name)} = (${arr}[${i + 1}])::${c.type}`).join(' AND ');
const fkJoin = (fk: ForeignKey, child: string, parent: string) => fk.columns.map((c, i) => `${child}.${q(c)} = ${parent}.${q(fk.refColumns[i]!)}`).join(' AND ');

/** The recursive scope query (rows `tbl, k`), for the tables of one sync and a subset. */
export function scopeQuery(tables: SubsetTable[], rootId: string, where: string): string {
  const byId = new Map(tables.map((t) => [t.id, t]));
  const root = byId.get(rootId)!;
  const edges = tables.flatMap((child) => child.fks.filter((f) => byId.has(f.refTable)).map((fk) => ({ child, parent: byId.get(fk.refTable)!, fk })));
  const down = edges.map(({ child, parent, fk }) => `SELECT ${lit(child.id)}::text AS tbl, ${keyArray(child, 'c')} AS k
        FROM ${parent.only}${parent.id} p JOIN ${child.only}${child.id} c ON ${fkJoin(fk, 'c', 'p')}
        WHERE d.tbl = ${lit(parent.id)} AND ${keyFrom(parent, 'p', 'd.k')}`);
  const up = edges.map(({ child, parent, fk }) => `SELECT ${lit(parent.id)}::text AS tbl, ${keyArray(parent, 'p')} AS k
        FROM ${child.only}${child.id} c JOIN ${parent.only}${parent.id} p ON ${fkJoin(fk, 'c', 'p')}
        WHERE a.tbl = ${lit(child.id)} AND ${keyFrom(child, 'c', 'a.k')}`);
  const seed = `SELECT ${lit(root.id)}::text AS tbl, ${keyArray(root, 'r')} AS k FROM ${root.only}${root.id} r WHERE (${where})`;
  if (edges.length === 0) return `WITH a AS (${seed}) SELECT tbl, k FROM a`;
  return `WITH RECURSIVE d(tbl, k) AS (
      ${seed}
      UNION SELECT e.tbl, e.k FROM d CROSS JOIN LATERAL (${down.join(' UNION ALL ')}) e
    ), a(tbl, k) AS (
      SELECT tbl, k FROM d
      UNION SELECT e.tbl, e.k FROM a CROSS JOIN LATERAL (${up.join(' UNION ALL ')}) e
    ) SELECT tbl, k FROM a`;
}

/** Per table, the row filter (over the source query's alias `s`) that keeps only rows in scope. */
export function subsetFilters(tables: SubsetTable[], rootId: string, where: string): Map<string, string> {
  const scope = scopeQuery(tables, rootId, where);
  return new Map(tables.map((t) => [t.id,
    `(${t.key.map((c) => `s.${q(c.name)}`).join(', ')}) IN (SELECT ${t.key.map((c, i) => `(k[${i + 1}])::${c.type}`).join(', ')} FROM (${scope}) x WHERE tbl = ${lit(t.id)})`]));
}
