import { displayName, type TableInfo } from '../catalog/introspect.ts';

export interface TableOrder {
  /** Parents before children: the order for inserts and updates. */
  upsertOrder: string[];
  /** Children before parents: the order for deletes. */
  deleteOrder: string[];
  /** Groups of tables that reference each other in a cycle. */
  cycles: string[][];
  /** FKs from a synced table to a table that is not synced (reported, not fatal). */
  outsideReferences: Array<{ table: string; constraint: string; references: string }>;
}

/**
 * Orders tables by their foreign keys (Tarjan's strongly connected components, emitted parents
 * first), so statements and reports read parents first. Correctness does not depend on it: the
 * apply runs with session_replication_role = replica, where FK triggers do not fire, and keeps
 * integrity with its hold rules, so self-references and cycles (deferrable or not) work alike.
 */
export function orderTables(tables: TableInfo[]): TableOrder {
  const byName = new Map(tables.map((t) => [t.qualified, t]));
  const edges = new Map<string, string[]>(); // child -> parents
  const outsideReferences: TableOrder['outsideReferences'] = [];
  for (const t of tables) {
    const parents: string[] = [];
    for (const fk of t.foreignKeys) {
      if (fk.refTable === t.qualified) continue;
      if (byName.has(fk.refTable)) parents.push(fk.refTable);
      else outsideReferences.push({ table: t.display, constraint: fk.name, references: displayName(fk.refTable) });
    }
    edges.set(t.qualified, parents);
  }

  // Tarjan: components come out in reverse topological order of the "child -> parent" graph,
  // i.e. parents first, which is what upserts need.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      components.push(comp.sort());
    }
  };
  // Visit in the configured order so independent tables keep it.
  for (const t of tables) if (!idx.has(t.qualified)) visit(t.qualified);

  const cycles = components.filter((c) => c.length > 1).map((c) => c.map((n) => byName.get(n)!.display));
  const upsertOrder = components.flat();
  return { upsertOrder, deleteOrder: [...upsertOrder].reverse(), cycles, outsideReferences };
}
