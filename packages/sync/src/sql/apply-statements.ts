// Statement builders for the one apply path (apply/apply.ts). Pure functions of a table plan and
// the names of the per-table temp tables:
//   src  the source rows in scope, as the source query produced them (target column types);
//   act  one row per key the apply will touch: op 'i' insert, 'u' update in place, 'r' rewrite
//        (delete, then insert: a unique-indexed or key column changed), 'd' delete; and `held`,
//        NULL when the change is applied, otherwise why it is held back.
// The apply runs with session_replication_role = replica, so staging's own triggers and FK
// actions do not fire (as with native logical replication). FK integrity is kept by the hold
// rules below instead: no applied row points at a parent that will not exist, no deleted row is
// still referenced by a row that stays, and no applied row collides on a unique index with a row
// that stays. Every rule only adds holds, so repeating them until none adds one terminates.
import { quoteIdent, type ForeignKey, type UniqueIndex } from '../catalog/introspect.ts';
import type { TablePlan } from '../plan/table-plan.ts';
import { columnList, keyArray, keyColumns, keyHash, keyJoin, keyLabel, localKeyJoin, scopePredicate, type Scope } from './statements.ts';

const q = quoteIdent;

export const LOCAL_KEYS = 'elara_sync.local_keys';
/** Stand-in used by a dry run on a staging database that has no elara_sync schema yet. */
export const LOCAL_KEYS_DRY = 'pg_temp._elara_local_keys';

export interface Stage {
  plan: TablePlan;
  /** Temp table of source rows (absent for a direct load into an empty table). */
  src: string;
  act: string;
  scope: Scope;
  localKeys: string;
}

export type Sql = { text: string; values: unknown[] };

const target = (s: Stage, alias: string) => `${s.plan.only}${s.plan.id} ${alias}`;
const isLocal = (s: Stage, alias: string) => `EXISTS (SELECT 1 FROM ${s.localKeys} l WHERE l.table_name = $1 AND ${localKeyJoin(s.plan, 'l', alias)})`;
/** Image equality (record_image_eq): identity, not the type's `=` (-0 vs 0, 1.0 vs 1.00, citext case). */
const sameImage = (cols: string[], a: string, b: string) =>
  cols.length === 0 ? 'true' : `record_image_eq(ROW(${cols.map((c) => `${a}.${q(c)}`).join(', ')}), ROW(${cols.map((c) => `${b}.${q(c)}`).join(', ')}))`;

export function createStageTables(plan: TablePlan, src: string, act: string, lifetime: 'DROP' | 'DELETE ROWS'): string {
  return `CREATE TEMP TABLE IF NOT EXISTS ${src} ON COMMIT ${lifetime} AS SELECT ${columnList(plan)} FROM ${plan.only}${plan.id} WITH NO DATA;
    CREATE TEMP TABLE IF NOT EXISTS ${act} ON COMMIT ${lifetime} AS SELECT ${keyColumns(plan)}, NULL::"char" AS op, NULL::text AS held FROM ${plan.only}${plan.id} WITH NO DATA`;
}

/** First run on a table: staging rows production does not have are adopted as local (QA) rows. */
export function adoptLocalRows(s: Stage): Sql {
  return {
    text: `INSERT INTO ${s.localKeys} (table_name, key)
      SELECT $1, ${keyArray(s.plan, 't')} FROM ${target(s, 't')}
      WHERE ${scopePredicate(s.plan, 't', s.scope)} AND NOT EXISTS (SELECT 1 FROM ${s.src} s WHERE ${keyJoin(s.plan, 's', 't')})
      ON CONFLICT DO NOTHING`,
    values: [s.plan.id],
  };
}

/**
 * Local rows that are not QA data after all, forgotten before classifying:
 * - the key is tombstoned: production erased this row once, so a copy that came back (an old dump
 *   restored with triggers on) must not be kept as QA data;
 * - the staging row is identical to production's: a copy of a production row (restored, or
 *   re-inserted by hand), not something QA made.
 */
export function forgetLocalRows(s: Stage): Sql[] {
  return [
    {
      text: `DELETE FROM ${s.localKeys} l USING ${target(s, 't')}
        WHERE l.table_name = $1 AND ${localKeyJoin(s.plan, 'l', 't')} AND ${scopePredicate(s.plan, 't', s.scope)}
          AND EXISTS (SELECT 1 FROM elara_sync.tombstones x WHERE x.table_name = $1 AND x.key_hash = ${keyHash(s.plan, 't')})`,
      values: [s.plan.id],
    },
    {
      text: `DELETE FROM ${s.localKeys} l USING ${s.src} s, ${target(s, 't')}
        WHERE l.table_name = $1 AND ${localKeyJoin(s.plan, 'l', 't')} AND ${keyJoin(s.plan, 's', 't')}
          AND ${sameImage(s.plan.columns.map((c) => c.name), 't', 's')}`,
      values: [s.plan.id],
    },
    {
      // Keys whose staging row is gone (deleted or truncated with triggers bypassed, the table
      // re-created): nothing left to keep.
      text: `DELETE FROM ${s.localKeys} l WHERE l.table_name = $1 AND NOT EXISTS (SELECT 1 FROM ${target(s, 't')} WHERE ${localKeyJoin(s.plan, 'l', 't')})`,
      values: [s.plan.id],
    },
  ];
}

/** The same, without the staging-side statements a dry run on a fresh staging cannot run. */
export function forgetLocalRowsDry(s: Stage): Sql[] {
  return forgetLocalRows(s).slice(1);
}

/**
 * Fills `act`: source rows that are new or differ from staging by image (insert, update or
 * rewrite), and staging rows in scope the source does not have (delete), leaving local rows out
 * of the deletes. Then holds every incoming row whose key a local row holds.
 */
export function classify(s: Stage): Sql[] {
  const p = s.plan;
  const k1 = q(p.key[0]!.name);
  const rewrite = p.columns.filter((c) => c.rewrite).map((c) => c.name);
  const all = p.columns.map((c) => c.name);
  return [
    {
      text: `INSERT INTO ${s.act} (${keyColumns(p)}, op)
        SELECT ${keyColumns(p, 's')}, CASE WHEN t.${k1} IS NULL THEN 'i' WHEN ${sameImage(rewrite, 't', 's')} THEN 'u' ELSE 'r' END
        FROM ${s.src} s LEFT JOIN ${target(s, 't')} ON ${keyJoin(p, 't', 's')}
        WHERE t.${k1} IS NULL OR NOT ${sameImage(all, 't', 's')}`,
      values: [],
    },
    {
      text: `INSERT INTO ${s.act} (${keyColumns(p)}, op)
        SELECT ${keyColumns(p, 't')}, 'd' FROM ${target(s, 't')}
        WHERE ${scopePredicate(p, 't', s.scope)} AND NOT EXISTS (SELECT 1 FROM ${s.src} s WHERE ${keyJoin(p, 's', 't')})
          AND NOT ${isLocal(s, 't')}`,
      values: [p.id],
    },
    {
      text: `UPDATE ${s.act} a SET held = 'key' WHERE a.op <> 'd' AND ${isLocal(s, 'a')}`,
      values: [p.id],
    },
  ];
}

const applied = (a: string, ops: string) => `${a}.held IS NULL AND ${a}.op IN (${[...ops].map((o) => `'${o}'`).join(', ')})`;
const match = (cols: string[], refCols: string[], a: string, b: string) => cols.map((c, i) => `${a}.${q(c)} = ${b}.${q(refCols[i]!)}`).join(' AND ');
const cols = (names: string[], alias: string) => names.map((c) => `${alias}.${q(c)}`).join(', ');

// Every rule below is written with only top-level [NOT] EXISTS / IN sublinks (no OR between
// them), so PostgreSQL plans them as hash semi- and anti-joins; an OR of correlated sublinks
// would run per row against unindexed temp tables, quadratic on a large compare.

/**
 * Where rows with given values in `refCols` of a parent will exist after the apply: staging rows
 * the apply does not remove, and source rows it inserts. As two anti-join conditions for `childAlias`.
 */
function notExistsAfter(parent: Stage | null, refTable: string, refCols: string[], childCols: string[], childAlias: string): string {
  const m = match(refCols, childCols, 'p', childAlias);
  if (!parent) return `NOT EXISTS (SELECT 1 FROM ${refTable} p WHERE ${m})`;
  if (!parent.src) return `NOT EXISTS (SELECT 1 FROM ${target(parent, 'p')} WHERE ${m})`;
  return `NOT EXISTS (SELECT 1 FROM ${target(parent, 'p')} WHERE ${m}
              AND NOT EXISTS (SELECT 1 FROM ${parent.act} x WHERE ${keyJoin(parent.plan, 'x', 'p')} AND ${applied('x', 'dr')}))
      AND NOT EXISTS (SELECT 1 FROM ${parent.src} p JOIN ${parent.act} x ON ${keyJoin(parent.plan, 'x', 'p')} WHERE ${m} AND ${applied('x', 'ir')})`;
}

/**
 * Parent values a child row may lose in this apply: rows deleted or rewritten, and incoming rows
 * held back. Only children pointing at one of these need the existence check.
 */
function atRisk(parent: Stage, refCols: string[]): string {
  return `SELECT ${cols(refCols, 'p')} FROM ${target(parent, 'p')} JOIN ${parent.act} x ON ${keyJoin(parent.plan, 'x', 'p')} WHERE ${applied('x', 'dr')}
    UNION ALL SELECT ${cols(refCols, 'n')} FROM ${parent.src} n JOIN ${parent.act} x ON ${keyJoin(parent.plan, 'x', 'n')} WHERE x.held IS NOT NULL`;
}

/**
 * How rule 1 checks a child's FK: 'all' its incoming rows (the parent is not synced, or the apply
 * is scoped to keys, so its staging rows say nothing); 'at-risk' only rows pointing at a parent
 * value the apply may remove (the parent is staged in a reconcile; everything else of it equals
 * production, which is FK-consistent).
 */
export type OrphanCheck = 'all' | 'at-risk';

/** Rule 1: an incoming row whose parent will not exist is held (and, through later passes, its own children). */
export function holdOrphans(child: Stage, fk: ForeignKey, parent: Stage | null, mode: OrphanCheck): Sql {
  const notNull = fk.columns.map((c) => `s.${q(c)} IS NOT NULL`).join(' AND ');
  const risk = mode === 'at-risk' && parent?.src ? `AND (${cols(fk.columns, 's')}) IN (${atRisk(parent, fk.refColumns)})` : '';
  return {
    text: `UPDATE ${child.act} a SET held = $1 FROM ${child.src} s
      WHERE ${keyJoin(child.plan, 'a', 's')} AND ${applied('a', 'iur')} AND ${notNull} ${risk}
        AND ${notExistsAfter(parent, fk.refTable, fk.refColumns, fk.columns, 's')}`,
    values: [`parent:${fk.name}`],
  };
}

/** Rule 1 for a table loaded directly (it was empty): its orphans are deleted again, counted as held. */
export function deleteDirectOrphans(child: Stage, fk: ForeignKey, parent: Stage | null, mode: OrphanCheck): Sql {
  const notNull = fk.columns.map((c) => `s.${q(c)} IS NOT NULL`).join(' AND ');
  const risk = mode === 'at-risk' && parent?.src ? `AND (${cols(fk.columns, 's')}) IN (${atRisk(parent, fk.refColumns)})` : '';
  return {
    text: `WITH d AS (DELETE FROM ${target(child, 's')} WHERE ${notNull} ${risk} AND ${notExistsAfter(parent, fk.refTable, fk.refColumns, fk.columns, 's')}
        RETURNING ${keyColumns(child.plan, 's')})
      INSERT INTO ${child.act} (${keyColumns(child.plan)}, op, held) SELECT ${keyColumns(child.plan)}, 'i', $1 FROM d`,
    values: [`parent:${fk.name}`],
  };
}

/**
 * Rule 2: a delete (or a rewrite that changes the referenced values) of a row that a staying row
 * still references through `fk` is held. Two statements, one per kind of staying row: rows of the
 * child table the apply does not remove (for a table outside the apply, all its rows), and
 * incoming rows it writes.
 */
export function holdReferencedDeletes(parent: Stage, fk: ForeignKey, child: Stage | null): Sql[] {
  const byKey = fk.refColumns.length === parent.plan.key.length && parent.plan.key.every((k, i) => fk.refColumns[i] === k.name);
  // A rewrite keeps its key, so it only matters for FKs to other (unique) columns whose value changes.
  const changed = byKey ? `a.op = 'd'` : `(a.op = 'd' OR ROW(${cols(fk.refColumns, 'n')}) IS DISTINCT FROM ROW(${cols(fk.refColumns, 'p')}))`;
  const from = byKey ? `${target(parent, 'p')}` : `${target(parent, 'p')} LEFT JOIN ${parent.src} n ON ${keyJoin(parent.plan, 'n', 'p')}`;
  const head = `UPDATE ${parent.act} a SET held = $1 FROM ${from}
      WHERE ${keyJoin(parent.plan, 'a', 'p')} AND ${applied('a', 'dr')} AND ${changed}
        AND (${cols(fk.refColumns, 'p')}) IN`;
  const childTable = child ? `${child.plan.only}${child.plan.id}` : fk.table;
  const values = [`referenced:${fk.name}:${fk.table}`];
  if (!child || !child.src) return [{ text: `${head} (SELECT ${cols(fk.columns, 'c')} FROM ${childTable} c)`, values }];
  return [
    {
      text: `${head} (SELECT ${cols(fk.columns, 'c')} FROM ${childTable} c
          WHERE NOT EXISTS (SELECT 1 FROM ${child.act} x WHERE ${keyJoin(child.plan, 'x', 'c')} AND ${applied('x', 'dur')}))`,
      values,
    },
    {
      text: `${head} (SELECT ${cols(fk.columns, 'c')} FROM ${child.src} c JOIN ${child.act} x ON ${keyJoin(child.plan, 'x', 'c')} WHERE ${applied('x', 'iur')})`,
      values,
    },
  ];
}

/**
 * Rule 3: an incoming row that would collide on a unique index with a row that stays with its
 * current values (a local row, or a held one) is held. The index's own expressions and predicate
 * are evaluated on both, so expression (lower(email)) and partial indexes count as they do in
 * PostgreSQL. The staying rows are found from the (small) local and held sets, by key.
 */
export function holdUniqueCollisions(s: Stage, u: UniqueIndex): Sql {
  const p = s.plan;
  const exprs = u.exprs.map((e, i) => `(${e}) AS _u${i}`).join(', ');
  const pred = u.predicate ? ` AND (${u.predicate})` : '';
  const eq = u.exprs.map((_, i) => (u.nullsNotDistinct ? `n._u${i} IS NOT DISTINCT FROM o._u${i}` : `n._u${i} = o._u${i}`)).join(' AND ');
  // Index expressions name columns unqualified: each is evaluated in a subquery over one table.
  const staying = `SELECT ${keyColumns(p)}, ${exprs} FROM (
        SELECT o0.* FROM ${target(s, 'o0')} JOIN ${s.localKeys} l ON l.table_name = $1 AND ${localKeyJoin(p, 'l', 'o0')}
        UNION ALL SELECT o0.* FROM ${target(s, 'o0')} JOIN ${s.act} x ON ${keyJoin(p, 'x', 'o0')} WHERE x.held IS NOT NULL) o1 WHERE true${pred}`;
  return {
    text: `UPDATE ${s.act} a SET held = $2
      FROM (SELECT ${keyColumns(p)}, ${exprs} FROM ${s.src} WHERE true${pred}) n, (${staying}) o
      WHERE ${keyJoin(p, 'a', 'n')} AND ${applied('a', 'ir')} AND ${eq} AND NOT (${keyJoin(p, 'n', 'o')})`,
    values: [p.id, `unique:${u.name}`],
  };
}

/**
 * For an apply scoped to given keys (immediate sync, watch): staging rows outside the keys that
 * hold a unique value an incoming row needs. Production is unique, so such a row is stale (its
 * value moved: an erasure and a new registration with the same email, a swap); its key joins the
 * scope and its production version is read too. Local rows are left out (they are conflicts).
 * The index expressions and predicate are those of the index, so the lookup can use it.
 */
export function findUniqueColliders(s: Stage & { keys: string }, u: UniqueIndex): Sql {
  const p = s.plan;
  const exprs = u.exprs.map((e, i) => `(${e}) AS _u${i}`).join(', ');
  const pred = u.predicate ? ` AND (${u.predicate})` : '';
  const eq = u.exprs.map((_, i) => (u.nullsNotDistinct ? `n._u${i} IS NOT DISTINCT FROM o._u${i}` : `n._u${i} = o._u${i}`)).join(' AND ');
  return {
    text: `INSERT INTO ${s.keys} (${keyColumns(p)})
      SELECT DISTINCT ${keyColumns(p, 'o')}
      FROM (SELECT ${keyColumns(p)}, ${exprs} FROM ${s.src} WHERE true${pred}) n
      JOIN (SELECT ${keyColumns(p)}, ${exprs} FROM ${target(s, 'o0')} WHERE true${pred}) o ON ${eq} AND NOT (${keyJoin(p, 'n', 'o')})
      WHERE NOT EXISTS (SELECT 1 FROM ${s.keys} x WHERE ${keyJoin(p, 'x', 'o')}) AND NOT ${isLocal(s, 'o')}
      RETURNING ${p.key.map((c) => `${q(c.name)}::text AS ${q(c.name)}`).join(', ')}`,
    values: [p.id],
  };
}

/**
 * For an apply scoped to given keys: rows of a synced child table that reference a row of the
 * parent stage production no longer has (a delete candidate). Their keys join the child's scope,
 * so they are read from the same snapshot and deleted or repointed with their parent, instead of
 * holding its delete back. Local rows are left out (they hold it back, as they should).
 */
export function findReferencingChildren(parent: Stage & { keys: string }, fk: ForeignKey, child: Stage & { keys: string }): Sql {
  const pp = parent.plan;
  const c = child.plan;
  return {
    text: `INSERT INTO ${child.keys} (${keyColumns(c)})
      SELECT DISTINCT ${keyColumns(c, 'c')} FROM ${target(child, 'c')}
      WHERE (${cols(fk.columns, 'c')}) IN (
          SELECT ${cols(fk.refColumns, 'p')} FROM ${target(parent, 'p')}
          WHERE (${keyColumns(pp, 'p')}) IN (SELECT ${keyColumns(pp)} FROM ${parent.keys})
            AND NOT EXISTS (SELECT 1 FROM ${parent.src} s WHERE ${keyJoin(pp, 's', 'p')}))
        AND NOT EXISTS (SELECT 1 FROM ${child.keys} x WHERE ${keyJoin(c, 'x', 'c')}) AND NOT ${isLocal(child, 'c')}
      RETURNING ${c.key.map((k) => `${q(k.name)}::text AS ${q(k.name)}`).join(', ')}`,
    values: [c.id],
  };
}

/** Deletes and rewrites go first (a value moving between rows is free before anyone takes it); erasures leave a tombstone. */
export function applyDeletes(s: Stage): Sql {
  return {
    text: `WITH d AS (DELETE FROM ${target(s, 't')} USING ${s.act} a WHERE ${keyJoin(s.plan, 'a', 't')} AND ${applied('a', 'dr')}
        RETURNING a.op, ${keyHash(s.plan, 't')} AS kh),
      tomb AS (INSERT INTO elara_sync.tombstones (table_name, key_hash) SELECT $1, kh FROM d WHERE op = 'd' ON CONFLICT DO NOTHING)
      SELECT count(*) FILTER (WHERE op = 'd')::int AS deleted FROM d`,
    values: [s.plan.id],
  };
}

/**
 * Changed rows whose unique-indexed and key columns kept their image: an UPDATE joined to the
 * source rows, writing (and locking) only those rows. (INSERT … ON CONFLICT DO UPDATE … WHERE
 * would lock, and so dirty the page of, every conflicting row even when nothing changed: 5x
 * slower on a 1%-changed run.)
 */
export function applyUpdates(s: Stage): Sql | null {
  const cols = s.plan.columns.filter((c) => !c.key && !c.identityAlways);
  if (cols.length === 0) return null;
  return {
    text: `UPDATE ${target(s, 't')} SET ${cols.map((c) => `${q(c.name)} = s.${q(c.name)}`).join(', ')}
      FROM ${s.src} s JOIN ${s.act} a ON ${keyJoin(s.plan, 'a', 's')}
      WHERE ${keyJoin(s.plan, 't', 's')} AND ${applied('a', 'u')}`,
    values: [],
  };
}

/** New rows and the second half of rewrites. OVERRIDING SYSTEM VALUE: identity columns take production's values. */
export function applyInserts(s: Stage): Sql {
  return {
    text: `INSERT INTO ${s.plan.id} (${columnList(s.plan)}) OVERRIDING SYSTEM VALUE
      SELECT ${columnList(s.plan, 's')} FROM ${s.src} s JOIN ${s.act} a ON ${keyJoin(s.plan, 'a', 's')} WHERE ${applied('a', 'ir')}`,
    values: [],
  };
}

/** Per op: changes applied and held. */
export function actCounts(s: Stage): Sql {
  return { text: `SELECT op, count(*) FILTER (WHERE held IS NULL)::int AS applied, count(*) FILTER (WHERE held IS NOT NULL)::int AS held FROM ${s.act} GROUP BY op`, values: [] };
}

/** The first held keys, for the report. */
export function heldRows(s: Stage, limit = 100): Sql {
  return { text: `SELECT ${keyLabel(s.plan, 'a')} AS key, a.op, a.held FROM ${s.act} a WHERE a.held IS NOT NULL ORDER BY 1 LIMIT ${limit}`, values: [] };
}

/** Buckets (under `buckets`) of the held keys, so the next run compares them again. */
export function heldBuckets(s: Stage, buckets: number): Sql {
  return { text: `SELECT DISTINCT (${keyHash(s.plan, 'a')} & ${buckets - 1})::int AS b FROM ${s.act} a WHERE a.held IS NOT NULL`, values: [] };
}
