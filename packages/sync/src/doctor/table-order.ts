// Pure: parent-first order of the synced tables from their foreign keys. No I/O, so the unit tests
// need no database. The engine has its own planner; the doctor only has to say whether an order exists.

export interface ForeignKeyEdge {
  constraint: string;
  /** The referencing table (child), as `schema.table`. */
  from: string;
  /** The referenced table (parent), as `schema.table`. */
  to: string;
  /** DEFERRABLE constraints can be checked at commit, so a cycle through one can still be applied. */
  deferrable: boolean;
  /** All referencing columns nullable: a two-pass apply (insert with NULL, then update) can break a cycle here. */
  nullable: boolean;
}

export interface TableOrder {
  /** Parents first. Complete only when `unresolvedCycle` is empty. */
  order: string[];
  /** FKs from a synced table to a table that is not synced. */
  outside: ForeignKeyEdge[];
  /** Self-referencing FKs (allowed: rows are applied parent-first within the table or with deferral). */
  selfReferences: ForeignKeyEdge[];
  /** FKs that had to be set aside to break a cycle (deferrable or nullable ones). */
  brokenAt: ForeignKeyEdge[];
  /** Tables in a cycle that no deferrable or nullable FK can break. */
  unresolvedCycle: string[];
}

/** Kahn's algorithm; ties keep the configured order so the result is stable. */
export function orderTables(tables: string[], edges: ForeignKeyEdge[]): TableOrder {
  const synced = new Set(tables);
  const outside = edges.filter((e) => synced.has(e.from) && !synced.has(e.to));
  const selfReferences = edges.filter((e) => synced.has(e.from) && e.from === e.to);
  let inner = edges.filter((e) => synced.has(e.from) && synced.has(e.to) && e.from !== e.to);

  let sorted = kahn(tables, inner);
  const brokenAt: ForeignKeyEdge[] = [];
  if (sorted.rest.length > 0) {
    const stuck = new Set(sorted.rest);
    const breakable = inner.filter((e) => stuck.has(e.from) && stuck.has(e.to) && (e.deferrable || e.nullable));
    brokenAt.push(...breakable);
    inner = inner.filter((e) => !breakable.includes(e));
    sorted = kahn(tables, inner);
  }
  return { order: sorted.order, outside, selfReferences, brokenAt, unresolvedCycle: sorted.rest };
}

function kahn(tables: string[], edges: ForeignKeyEdge[]): { order: string[]; rest: string[] } {
  const parents = new Map<string, Set<string>>(tables.map((t) => [t, new Set<string>()]));
  for (const e of edges) parents.get(e.from)?.add(e.to);
  const order: string[] = [];
  const done = new Set<string>();
  for (;;) {
    const next = tables.find((t) => !done.has(t) && [...(parents.get(t) ?? [])].every((p) => done.has(p)));
    if (next === undefined) break;
    order.push(next);
    done.add(next);
  }
  return { order, rest: tables.filter((t) => !done.has(t)) };
}
