import { SyncError } from '../errors.ts';
import type { TableInfo } from '../catalog/introspect.ts';

/** "public"."User" → User; "s"."T" → s.T (for messages). */
function displayName(qualified: string): string {
  const parts = qualified.match(/"(?:[^"]|"")*"/g)?.map((p) => p.slice(1, -1).replace(/""/g, '"')) ?? [qualified];
  return parts[0] === 'public' && parts.length === 2 ? parts[1]! : parts.join('.');
}

export interface TableOrder {
  /** Parents before children: the order for inserts and updates. */
  upsertOrder: string[];
  /** Children before parents: the order for deletes. */
  deleteOrder: string[];
  /** Groups of tables that reference each other in a cycle (all FKs in them are deferrable). */
  cycles: string[][];
  /** FKs from a synced table to a table that is not synced (reported, not fatal). */
  outsideReferences: Array<{ table: string; constraint: string; references: string }>;
}

/**
 * Orders tables by their foreign keys (Tarjan's strongly connected components, emitted parents
 * first). A self-reference needs nothing: PostgreSQL checks immediate FKs at the end of each
 * statement, and each table is written by one statement per phase. A cycle between tables works
 * only when every FK inside it is DEFERRABLE, since the whole run is one transaction with
 * SET CONSTRAINTS ALL DEFERRED.
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

  const cycles: string[][] = [];
  for (const comp of components) {
    if (comp.length < 2) continue;
    const members = new Set(comp);
    const blocking: string[] = [];
    for (const name of comp) {
      const t = byName.get(name)!;
      for (const fk of t.foreignKeys) {
        if (members.has(fk.refTable) && fk.refTable !== name && !fk.deferrable) blocking.push(`${t.display}.${fk.name}`);
      }
    }
    const names = comp.map((n) => byName.get(n)!.display);
    if (blocking.length > 0) {
      throw new SyncError(
        'E_FK_CYCLE',
        `tables ${names.join(', ')} reference each other in a cycle and these foreign keys are not deferrable: ${blocking.join(', ')}`,
        `make them deferrable in staging (ALTER TABLE … ALTER CONSTRAINT <name> DEFERRABLE), or sync the tables in separate runs`,
      );
    }
    cycles.push(names);
  }
  const upsertOrder = components.flat();
  return { upsertOrder, deleteOrder: [...upsertOrder].reverse(), cycles, outsideReferences };
}
