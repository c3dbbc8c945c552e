// The catalog: what pg_catalog says about the synced tables, on one side. Pure data; the table
// plan (plan/table-plan.ts) is compiled from the two sides' catalogs without further I/O.
import type pg from 'pg';
import { SyncError } from '../errors.ts';

export interface ColumnType {
  /** format_type() with typmod, used for casts: "uuid", "character varying(8)", "numeric(6,2)". */
  type: string;
  /** format_type() without typmod: "character varying", "numeric". */
  typeName: string;
  typmod: number;
  /** Type category (pg_type.typcategory): 'S' string, 'N' numeric, 'D' date/time, 'A' array, 'E' enum, … */
  category: string;
  /** For a domain: its base type; for an array: its element type. */
  base: ColumnType | null;
  isDomain: boolean;
  /** Enum labels in sort order, when the (base or element) type is an enum. */
  enumLabels: string[] | null;
}

export interface Column extends ColumnType {
  name: string;
  notNull: boolean;
  /** Generated columns cannot be written; they are not copied. */
  generated: boolean;
  /** pg_attribute.attidentity: '' none, 'a' GENERATED ALWAYS, 'd' BY DEFAULT. */
  identity: '' | 'a' | 'd';
  /** The sequence behind a serial or identity column, quoted and qualified, or null. */
  sequence: string | null;
}

export interface UniqueIndex {
  name: string;
  /** Per key column, the index's expression as pg_get_indexdef prints it: a quoted column or an expression. */
  exprs: string[];
  /** Partial index predicate, or null. */
  predicate: string | null;
  nullsNotDistinct: boolean;
  /** Every table column the index reads (key columns, expressions, predicate). */
  columns: string[];
}

export interface ForeignKey {
  name: string;
  /** Qualified name of the table that holds the constraint (the child). */
  table: string;
  columns: string[];
  /** Qualified name of the referenced table, "schema"."table" as returned by qualifiedName(). */
  refTable: string;
  refColumns: string[];
  deferrable: boolean;
  /** confdeltype / confupdtype: a no action, r restrict, c cascade, n set null, d set default. */
  onDelete: string;
  onUpdate: string;
}

export interface TableInfo {
  oid: number;
  schema: string;
  name: string;
  /** Quoted, qualified name usable in SQL: "public"."User". */
  qualified: string;
  /** Human name: User, or other_schema.User outside public. */
  display: string;
  /** 'r' table, 'p' partitioned table. */
  relkind: 'r' | 'p';
  columns: Column[];
  primaryKey: string[];
  /** Unique indexes other than the primary key, including expression and partial ones. */
  uniques: UniqueIndex[];
  foreignKeys: ForeignKey[];
  /** Foreign keys of any table in the database (this one included) that reference this table. */
  referencedBy: ForeignKey[];
  /** Ordinary (user) triggers and whether they fire on replica-role sessions ('A' always, 'R' replica). */
  triggers: Array<{ name: string; enabled: string }>;
}

export const quoteIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`;
export const qualifiedName = (schema: string, name: string): string => `${quoteIdent(schema)}.${quoteIdent(name)}`;

/** "public"."User" → User; "s"."T" → s.T (for messages). */
export function displayName(qualified: string): string {
  const parts = qualified.match(/"(?:[^"]|"")*"/g)?.map((p) => p.slice(1, -1).replace(/""/g, '"')) ?? [qualified];
  return parts[0] === 'public' && parts.length === 2 ? parts[1]! : parts.join('.');
}

/**
 * Splits "schema.table" or "table" (each part optionally double-quoted, `""` for a quote) into
 * parts; default schema public. Unquoted parts keep their case: `User` is the table "User".
 */
export function parseTableName(input: string): { schema: string; name: string } {
  const m = /^(?:("(?:[^"]|"")+"|[^."]+)\.)?("(?:[^"]|"")+"|[^."]+)$/.exec(input.trim());
  if (!m) throw new SyncError('E_CONFIG', `"${input}" is not a table name`, 'use Table or schema.Table; quote a name that contains a dot: "my.table"');
  const unq = (s: string) => (s.startsWith('"') ? s.slice(1, -1).replace(/""/g, '"') : s);
  return { schema: m[1] ? unq(m[1]) : 'public', name: unq(m[2]!) };
}

const TYPE_JSON = `json_build_object('type', format_type(ty.oid, $TYPMOD), 'typeName', format_type(ty.oid, NULL), 'typmod', $TYPMOD,
  'category', ty.typcategory, 'isDomain', ty.typtype = 'd',
  'enumLabels', (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e
                  WHERE e.enumtypid = coalesce(nullif(bt.typelem, 0), bt.oid)),
  'base', CASE WHEN ty.typtype = 'd' THEN json_build_object('type', format_type(ty.typbasetype, ty.typtypmod), 'typeName', format_type(ty.typbasetype, NULL),
                    'typmod', ty.typtypmod, 'category', bt.typcategory, 'isDomain', false, 'enumLabels', NULL, 'base', NULL)
               WHEN ty.typelem <> 0 AND ty.typcategory = 'A' THEN json_build_object('type', format_type(ty.typelem, $TYPMOD), 'typeName', format_type(ty.typelem, NULL),
                    'typmod', $TYPMOD, 'category', (SELECT typcategory FROM pg_type WHERE oid = ty.typelem), 'isDomain', false, 'enumLabels', NULL, 'base', NULL)
          END)`;

const CATALOG_SQL = `
WITH t AS (
  SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r','p') AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
),
fk AS (
  SELECT con.oid, con.conname, con.conrelid, con.confrelid, con.condeferrable, con.confdeltype, con.confupdtype,
    (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS cols,
    (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
       JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS refcols
  FROM pg_constraint con WHERE con.contype = 'f'
),
fkj AS (
  SELECT fk.*, json_build_object('name', fk.conname, 'table', quote_ident(cn.nspname) || '.' || quote_ident(cc.relname),
      'columns', fk.cols, 'refTable', quote_ident(rn.nspname) || '.' || quote_ident(rc.relname), 'refColumns', fk.refcols,
      'deferrable', fk.condeferrable, 'onDelete', fk.confdeltype, 'onUpdate', fk.confupdtype) AS j
  FROM fk JOIN pg_class cc ON cc.oid = fk.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
          JOIN pg_class rc ON rc.oid = fk.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
)
SELECT t.oid::int AS oid, t.schema, t.name, t.relkind,
  (SELECT coalesce(json_agg(json_build_object('name', a.attname, 'notNull', a.attnotnull, 'generated', a.attgenerated <> '',
            'identity', a.attidentity::text, 't', ${TYPE_JSON.replace(/\$TYPMOD/g, 'a.atttypmod')},
            'sequence', pg_get_serial_sequence(quote_ident(t.schema) || '.' || quote_ident(t.name), a.attname)) ORDER BY a.attnum), '[]')
     FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
     LEFT JOIN pg_type bt ON bt.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
     WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
     FROM pg_constraint con CROSS JOIN unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
     WHERE con.conrelid = t.oid AND con.contype = 'p') AS primary_key,
  (SELECT coalesce(json_agg(json_build_object('name', ic.relname,
            'exprs', (SELECT json_agg(pg_get_indexdef(i.indexrelid, k, true) ORDER BY k) FROM generate_series(1, i.indnkeyatts) k),
            'predicate', pg_get_expr(i.indpred, i.indrelid, true),
            'nullsNotDistinct', i.indnullsnotdistinct,
            'columns', (SELECT coalesce(json_agg(DISTINCT a.attname), '[]') FROM pg_attribute a
                         WHERE a.attrelid = t.oid AND a.attnum > 0 AND (a.attnum = ANY (i.indkey::int2[])
                           OR a.attnum IN (SELECT d.refobjsubid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                             AND d.objid = i.indexrelid AND d.refobjid = t.oid AND d.refobjsubid > 0))))
          ORDER BY ic.relname), '[]')
     FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
     WHERE i.indrelid = t.oid AND i.indisunique AND NOT i.indisprimary AND i.indisvalid) AS uniques,
  (SELECT coalesce(json_agg(fkj.j ORDER BY fkj.conname), '[]') FROM fkj WHERE fkj.conrelid = t.oid) AS foreign_keys,
  (SELECT coalesce(json_agg(fkj.j ORDER BY fkj.conname, fkj.conrelid), '[]') FROM fkj WHERE fkj.confrelid = t.oid) AS referenced_by,
  (SELECT coalesce(json_agg(json_build_object('name', g.tgname, 'enabled', g.tgenabled::text) ORDER BY g.tgname), '[]')
     FROM pg_trigger g WHERE g.tgrelid = t.oid AND NOT g.tgisinternal AND g.tgname NOT LIKE 'elara_sync_track%') AS triggers
FROM t`;

interface RawColumn { name: string; notNull: boolean; generated: boolean; identity: string; t: ColumnType; sequence: string | null }

interface CatalogRow {
  oid: number;
  schema: string;
  name: string;
  relkind: 'r' | 'p';
  columns: RawColumn[];
  primary_key: string[];
  uniques: UniqueIndex[];
  foreign_keys: ForeignKey[];
  referenced_by: ForeignKey[];
  triggers: Array<{ name: string; enabled: string }>;
}

// pg_get_serial_sequence and quote_ident print "schema.name" with quotes only where needed; the
// plan compares and uses names in one canonical form: both parts always quoted.
function canonical(qualified: string | null): string | null {
  if (!qualified) return null;
  const parts = qualified.match(/("(?:[^"]|"")*"|[^.]+)/g) ?? [qualified];
  return parts.map((p) => (p.startsWith('"') ? p : quoteIdent(p))).join('.');
}

function toColumn(c: RawColumn): Column {
  return { ...c.t, name: c.name, notNull: c.notNull, generated: c.generated, identity: (c.identity || '') as Column['identity'], sequence: canonical(c.sequence) };
}

/** Reads tables, columns, keys, indexes and foreign keys for the named tables. Missing tables are absent from the map. */
export async function introspectTables(client: pg.ClientBase | pg.Pool, names: string[]): Promise<Map<string, TableInfo>> {
  const parts = names.map(parseTableName);
  const res = await client.query<CatalogRow>(CATALOG_SQL, [parts.map((p) => p.schema), parts.map((p) => p.name)]);
  const out = new Map<string, TableInfo>();
  for (const r of res.rows) {
    const qualified = qualifiedName(r.schema, r.name);
    const fk = (f: ForeignKey): ForeignKey => ({ ...f, table: canonical(f.table)!, refTable: canonical(f.refTable)! });
    out.set(qualified, {
      oid: r.oid,
      schema: r.schema,
      name: r.name,
      qualified,
      display: displayName(qualified),
      relkind: r.relkind,
      columns: r.columns.map(toColumn),
      primaryKey: r.primary_key,
      uniques: r.uniques,
      foreignKeys: r.foreign_keys.map(fk),
      referencedBy: r.referenced_by.map(fk),
      triggers: r.triggers,
    });
  }
  return out;
}
