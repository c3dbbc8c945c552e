// Statement builders: pure functions from catalog data to SQL text. No I/O here, so unit tests
// need no database and `elara-sync plan` can show what a run would do.
import { quoteIdent, type SyncedTable, type TableInfo } from '../catalog/introspect.ts';

/** Session settings applied on both sides so that key text and hashes are computed identically. */
export const SESSION_SETTINGS = `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET jit = off`;

/** Text of a row's primary key: the value itself, or a row literal for composite keys. */
export function keyText(table: TableInfo, alias: string): string {
  const cols = table.primaryKey.map((c) => `${alias}.${quoteIdent(c)}`);
  return cols.length === 1 ? `${cols[0]}::text` : `ROW(${cols.join(', ')})::text`;
}

// Hash functions PostgreSQL keeps stable across versions (hash partitioning depends on them).
// A type's own function avoids converting the key to text, which is most of the cost.
const TYPE_HASH: Record<string, string> = {
  uuid: 'uuid_hash_extended',
  integer: 'hashint4extended',
  bigint: 'hashint8extended',
  smallint: 'hashint2extended',
  text: 'hashtextextended',
};

/** A 64-bit hash of the key; its low bits choose the row's bucket. Same expression on both sides. */
export function keyHash(table: TableInfo, alias: string, seed = '0'): string {
  if (table.primaryKey.length === 1) {
    const col = table.columns.find((c) => c.name === table.primaryKey[0]);
    const fn = col ? TYPE_HASH[col.type] : undefined;
    if (fn) return `${fn}(${alias}.${quoteIdent(col!.name)}, ${seed})`;
  }
  return `hashtextextended(${keyText(table, alias)}, ${seed})`;
}

/**
 * A row version on the source: the key hashed with the row's xmin as seed. Any write to a row
 * gives it a new xmin (a new tuple), so an insert, update or delete changes the xor of these.
 */
export function rowVersionHash(table: TableInfo, alias: string): string {
  return keyHash(table, alias, `${alias}.xmin::text::bigint`);
}

export function bucketExpr(table: TableInfo, alias: string, buckets: number): string {
  return `(${keyHash(table, alias)} & ${buckets - 1})::int`;
}

/** A bytea literal for a bucket bitmap, tested in SQL with get_bit(). */
export function bitmapLiteral(bitmap: Uint8Array): string {
  return `'\\x${Buffer.from(bitmap).toString('hex')}'::bytea`;
}

/** Which rows a statement covers: every row, rows in marked buckets, or rows whose keys are in a temp table. */
export type Scope =
  | { kind: 'all' }
  | { kind: 'buckets'; buckets: number; bitmap: Uint8Array }
  | { kind: 'keys'; keysTable: string };

export function scopePredicate(table: TableInfo, alias: string, scope: Scope): string {
  switch (scope.kind) {
    case 'all':
      return 'true';
    case 'buckets':
      return `get_bit(${bitmapLiteral(scope.bitmap)}, ${bucketExpr(table, alias, scope.buckets)}) = 1`;
    case 'keys': {
      const pk = table.primaryKey.map(quoteIdent);
      return `(${pk.map((c) => `${alias}.${c}`).join(', ')}) IN (SELECT ${pk.join(', ')} FROM ${scope.keysTable})`;
    }
  }
}

/**
 * The source query: every synced column as its transform expression cast to the target's type
 * (so binary COPY matches the target exactly), restricted to the row filter and the scope.
 */
export function sourceSelect(t: SyncedTable, scope: Scope): string {
  const cols = t.columns.map((c) => `(${t.expressions.get(c.name)})::${c.type} AS ${quoteIdent(c.name)}`);
  const where = [t.where ? `(${t.where})` : null, scope.kind === 'all' ? null : scopePredicate(t.target, 's', scope)].filter(Boolean);
  return `SELECT ${cols.join(', ')} FROM ${t.target.qualified} s${where.length ? ` WHERE ${where.join(' AND ')}` : ''}`;
}

/** Per-row (key hash, row version hash) on the source, streamed and folded into buckets. */
export function fingerprintSelect(t: SyncedTable): string {
  return `SELECT ${keyHash(t.target, 's')}, ${rowVersionHash(t.target, 's')} FROM ${t.target.qualified} s${t.where ? ` WHERE (${t.where})` : ''}`;
}

/** The whole table's fingerprint in one aggregate: equal to the xor of all bucket fingerprints. */
export function totalSelect(t: SyncedTable): string {
  return `SELECT count(*)::bigint AS n, coalesce(bit_xor(${rowVersionHash(t.target, 's')}), 0)::text AS x FROM ${t.target.qualified} s${t.where ? ` WHERE (${t.where})` : ''}`;
}

export function columnList(t: SyncedTable): string {
  return t.columns.map((c) => quoteIdent(c.name)).join(', ');
}

export function createTempTable(t: SyncedTable, name: string): string {
  return `CREATE TEMP TABLE ${name} ON COMMIT DROP AS SELECT ${columnList(t)} FROM ${t.target.qualified} WITH NO DATA`;
}

const NO_EQUALITY = /^(json|xml|point|line|lseg|box|path|polygon|circle)(\[\])?$/;
function comparable(type: string, expr: string): string {
  return NO_EQUALITY.test(type) ? `${expr}::text` : expr;
}

function pkJoin(table: TableInfo, a: string, b: string): string {
  return table.primaryKey.map((c) => `${a}.${quoteIdent(c)} = ${b}.${quoteIdent(c)}`).join(' AND ');
}

export const LOCAL_ROWS = 'elara_sync.local_rows';
/** Stand-in used by a dry run on a staging database that has no elara_sync schema yet. */
export const LOCAL_ROWS_DRY = 'pg_temp._elara_local_rows';

/** Marks target rows not present at the source as local (first run on a table: we cannot know their origin). */
export function adoptLocalRows(t: SyncedTable, tmp: string, scope: Scope, localRows = LOCAL_ROWS): { text: string; values: unknown[] } {
  const k = keyText(t.target, 't');
  return {
    text: `INSERT INTO ${localRows} (table_name, key)
      SELECT $1, ${k} FROM ${t.target.qualified} t
      WHERE ${scopePredicate(t.target, 't', scope)} AND NOT EXISTS (SELECT 1 FROM ${tmp} s WHERE ${pkJoin(t.target, 's', 't')})
      ON CONFLICT DO NOTHING`,
    values: [t.target.display],
  };
}

/**
 * Source rows that would overwrite or collide with a local (QA) row: the same key, or the same
 * value of a unique constraint. They are moved to the conflicts table and not applied.
 */
export function findConflicts(t: SyncedTable, tmp: string, conflicts: string, localRows = LOCAL_ROWS): Array<{ text: string; values: unknown[] }> {
  const ks = keyText(t.target, 's');
  const out = [{
    text: `INSERT INTO ${conflicts} (key, reason)
      SELECT ${ks}, 'key' FROM ${tmp} s JOIN ${localRows} l ON l.table_name = $1 AND l.key = ${ks}
      ON CONFLICT DO NOTHING`,
    values: [t.target.display] as unknown[],
  }];
  for (const u of t.target.uniques) {
    if (!u.every((c) => t.columns.some((col) => col.name === c))) continue;
    const eq = u.map((c) => `t.${quoteIdent(c)} = s.${quoteIdent(c)}`).join(' AND ');
    out.push({
      text: `INSERT INTO ${conflicts} (key, reason)
        SELECT ${ks}, 'unique (' || $2 || ')' FROM ${tmp} s JOIN ${t.target.qualified} t ON ${eq} AND NOT (${pkJoin(t.target, 's', 't')})
        WHERE EXISTS (SELECT 1 FROM ${localRows} l WHERE l.table_name = $1 AND l.key = ${keyText(t.target, 't')})
        ON CONFLICT DO NOTHING`,
      values: [t.target.display, u.join(', ')],
    });
  }
  return out;
}

/**
 * New rows: one INSERT of every source row whose key staging does not have. Runs before
 * updateChanged, so an updated row may reference a row inserted in the same run (FKs are checked
 * at the end of each statement; across tables they are deferred when deferrable).
 */
export function insertNew(t: SyncedTable, tmp: string, conflicts: string): string {
  const cols = columnList(t);
  return `INSERT INTO ${t.target.qualified} (${cols})
    SELECT ${cols} FROM ${tmp} s
    WHERE NOT EXISTS (SELECT 1 FROM ${t.target.qualified} t WHERE ${pkJoin(t.target, 't', 's')})
      AND NOT EXISTS (SELECT 1 FROM ${conflicts} c WHERE c.key = ${keyText(t.target, 's')})`;
}

/** Unique constraints whose columns are all synced (the others cannot collide through us). */
export function syncedUniques(t: SyncedTable): string[][] {
  return t.target.uniques.filter((u) => u.every((c) => t.columns.some((col) => col.name === c)));
}

function uniqueJoin(u: string[], a: string, b: string): string {
  return u.map((c) => `${a}.${quoteIdent(c)} = ${b}.${quoteIdent(c)}`).join(' AND ');
}

/**
 * Frees unique values before rows are written. Unique indexes are checked row by row, so a value
 * production moved from one row to another (an erased user's email registered again, two users
 * swapping emails, an organization re-created with the apiKey of a deleted one) would collide
 * with the row staging still has. A staging row that holds a value some other incoming row needs
 * cannot keep it (production is unique), so it is given a placeholder: a text column of the
 * constraint set to a marker plus the row's own key. The row is then updated or deleted later in
 * the same transaction, in FK order. (No delete here: a doomed parent may still have children in
 * staging until the children-first delete phase.) Constraints without a text column fall back to
 * deleting such rows early, when production no longer has them.
 */
export function freeUniqueValues(t: SyncedTable, tmp: string, conflicts: string, scope: Scope, localRows = LOCAL_ROWS): Array<{ text: string; values: unknown[]; kind: 'delete' | 'placeholder' }> {
  const out: Array<{ text: string; values: unknown[]; kind: 'delete' | 'placeholder' }> = [];
  const k = keyText(t.target, 't');
  const wanted = (u: string[]) => `EXISTS (SELECT 1 FROM ${tmp} s2 WHERE ${uniqueJoin(u, 's2', 't')} AND NOT (${pkJoin(t.target, 's2', 't')})
            AND NOT EXISTS (SELECT 1 FROM ${conflicts} c2 WHERE c2.key = ${keyText(t.target, 's2')}))`;
  const notLocal = `NOT EXISTS (SELECT 1 FROM ${localRows} l WHERE l.table_name = $1 AND l.key = ${k})
          AND NOT EXISTS (SELECT 1 FROM ${conflicts} c WHERE c.key = ${k})`;
  for (const u of syncedUniques(t)) {
    const textCol = u.map((c) => t.columns.find((x) => x.name === c)!).find((c) => /^(text|character varying.*|citext)$/.test(c.type));
    if (textCol) {
      out.push({
        kind: 'placeholder',
        text: `UPDATE ${t.target.qualified} t SET ${quoteIdent(textCol.name)} = E'\\u0001elara-sync ' || ${k}
          WHERE ${wanted(u)} AND ${notLocal}`,
        values: [t.target.display],
      });
    } else {
      out.push({
        kind: 'delete',
        text: `DELETE FROM ${t.target.qualified} t
          WHERE ${scopePredicate(t.target, 't', scope)} AND ${wanted(u)}
            AND NOT EXISTS (SELECT 1 FROM ${tmp} s WHERE ${pkJoin(t.target, 's', 't')}) AND ${notLocal}`,
        values: [t.target.display],
      });
    }
  }
  return out;
}

/**
 * Changed rows: an UPDATE joined to the source rows that writes (and locks) only rows whose synced
 * columns differ. (INSERT … ON CONFLICT DO UPDATE … WHERE would lock, and so dirty the page of,
 * every conflicting row even when nothing changed: 5x slower on a 1%-changed run.)
 */
export function updateChanged(t: SyncedTable, tmp: string, conflicts: string): string | null {
  const nonKey = t.columns.filter((c) => !t.target.primaryKey.includes(c.name));
  if (nonKey.length === 0) return null;
  const set = nonKey.map((c) => `${quoteIdent(c.name)} = s.${quoteIdent(c.name)}`).join(', ');
  const lhs = nonKey.map((c) => comparable(c.type, `t.${quoteIdent(c.name)}`)).join(', ');
  const rhs = nonKey.map((c) => comparable(c.type, `s.${quoteIdent(c.name)}`)).join(', ');
  return `UPDATE ${t.target.qualified} t SET ${set} FROM ${tmp} s
    WHERE ${pkJoin(t.target, 't', 's')} AND ROW(${lhs}) IS DISTINCT FROM ROW(${rhs})
      AND NOT EXISTS (SELECT 1 FROM ${conflicts} c WHERE c.key = ${keyText(t.target, 's')})`;
}

/** Deletes target rows in scope that the source no longer has, unless they are local or in conflict. */
export function deleteMissing(t: SyncedTable, tmp: string, conflicts: string, scope: Scope, localRows = LOCAL_ROWS): { text: string; values: unknown[] } {
  const k = keyText(t.target, 't');
  return {
    text: `DELETE FROM ${t.target.qualified} t
      WHERE ${scopePredicate(t.target, 't', scope)}
        AND NOT EXISTS (SELECT 1 FROM ${tmp} s WHERE ${pkJoin(t.target, 's', 't')})
        AND NOT EXISTS (SELECT 1 FROM ${localRows} l WHERE l.table_name = $1 AND l.key = ${k})
        AND NOT EXISTS (SELECT 1 FROM ${conflicts} c WHERE c.key = ${k})`,
    values: [t.target.display],
  };
}

/** Counts for a dry run: what insertNew, updateChanged and deleteMissing would do, without writing. */
export function planCounts(t: SyncedTable, tmp: string, conflicts: string, scope: Scope, localRows = LOCAL_ROWS): { text: string; values: unknown[] } {
  const nonKey = t.columns.filter((c) => !t.target.primaryKey.includes(c.name));
  const differs = nonKey.length === 0 ? 'false'
    : `ROW(${nonKey.map((c) => comparable(c.type, `t.${quoteIdent(c.name)}`)).join(', ')}) IS DISTINCT FROM ROW(${nonKey.map((c) => comparable(c.type, `s.${quoteIdent(c.name)}`)).join(', ')})`;
  const del = deleteMissing(t, tmp, conflicts, scope, localRows);
  const ks = keyText(t.target, 's');
  return {
    text: `SELECT
      (SELECT count(*) FROM ${tmp} s WHERE NOT EXISTS (SELECT 1 FROM ${conflicts} c WHERE c.key = ${ks})
         AND NOT EXISTS (SELECT 1 FROM ${t.target.qualified} t WHERE ${pkJoin(t.target, 's', 't')}))::int AS inserted,
      (SELECT count(*) FROM ${tmp} s JOIN ${t.target.qualified} t ON ${pkJoin(t.target, 's', 't')}
         WHERE NOT EXISTS (SELECT 1 FROM ${conflicts} c WHERE c.key = ${ks}) AND ${differs})::int AS updated,
      (SELECT count(*) FROM (${del.text.replace(/^DELETE FROM/, 'SELECT 1 FROM')}) d)::int AS deleted`,
    values: del.values,
  };
}

/**
 * DDL for the trigger that records writes made to a staging table by anyone but the engine:
 * inserts become local rows (kept, never overwritten), and every write marks the row's bucket
 * for re-comparison on the next run. The engine's own sessions set elara_sync.writer = 'on'.
 */
export function trackingTriggerDdl(t: TableInfo, fnName: string): string[] {
  const fn = `elara_sync.${quoteIdent(fnName)}`;
  const newKey = keyText(t, 'NEW');
  const oldKey = keyText(t, 'OLD');
  const lit = `'${t.display.replace(/'/g, "''")}'`;
  return [
    // SECURITY DEFINER: the trigger fires for QA and app sessions that have no rights on the
    // engine's schema; it runs as the engine's role with a fixed search_path.
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM elara_sync.local_rows WHERE table_name = ${lit};
    UPDATE elara_sync.table_state SET config_sig = 'truncated' WHERE table_name = ${lit};
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO elara_sync.local_rows (table_name, key) VALUES (${lit}, ${newKey}) ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP = 'DELETE' THEN
    DELETE FROM elara_sync.local_rows WHERE table_name = ${lit} AND key = ${oldKey};
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO elara_sync.edits (table_name, key_hash) VALUES (${lit}, ${keyHash(t, 'NEW')});
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    INSERT INTO elara_sync.edits (table_name, key_hash) VALUES (${lit}, ${keyHash(t, 'OLD')});
  END IF;
  RETURN NULL;
END $fn$`,
    `CREATE OR REPLACE TRIGGER elara_sync_track AFTER INSERT OR UPDATE OR DELETE ON ${t.qualified}
       FOR EACH ROW WHEN (current_setting('elara_sync.writer', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION ${fn}()`,
    `CREATE OR REPLACE TRIGGER elara_sync_track_truncate AFTER TRUNCATE ON ${t.qualified}
       FOR EACH STATEMENT WHEN (current_setting('elara_sync.writer', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION ${fn}()`,
  ];
}
