import type pg from 'pg';
import { SyncError } from '../errors.ts';

export interface Column {
  name: string;
  /** format_type() of the column, used for casts, e.g. "uuid", "timestamp(3) without time zone". */
  type: string;
  notNull: boolean;
  /** Generated columns cannot be written; they are skipped when copying. */
  generated: boolean;
}

export interface ForeignKey {
  name: string;
  columns: string[];
  /** Qualified name of the referenced table, "schema"."table" as returned by qualifiedName(). */
  refTable: string;
  refColumns: string[];
  deferrable: boolean;
}

export interface TableInfo {
  schema: string;
  name: string;
  /** Quoted, qualified name usable in SQL: "public"."User". */
  qualified: string;
  /** Human name: User, or other_schema.User outside public. */
  display: string;
  columns: Column[];
  primaryKey: string[];
  /** Non-primary unique constraints and unique indexes (column lists; expression indexes are skipped). */
  uniques: string[][];
  foreignKeys: ForeignKey[];
}

export const quoteIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`;
export const qualifiedName = (schema: string, name: string): string => `${quoteIdent(schema)}.${quoteIdent(name)}`;

/** Splits "schema.table" or "table" (optionally with double quotes) into parts; default schema public. */
export function parseTableName(input: string): { schema: string; name: string } {
  const m = /^(?:("(?:[^"]|"")+"|[^."]+)\.)?("(?:[^"]|"")+"|[^."]+)$/.exec(input.trim());
  if (!m) throw new SyncError('E_CONFIG', `"${input}" is not a table name`, 'use Table or schema.Table');
  const unq = (s: string) => (s.startsWith('"') ? s.slice(1, -1).replace(/""/g, '"') : s);
  return { schema: m[1] ? unq(m[1]) : 'public', name: unq(m[2]!) };
}

const CATALOG_SQL = `
WITH t AS (
  SELECT c.oid, n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r','p') AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
)
SELECT t.schema, t.name,
  (SELECT coalesce(json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
            'notNull', a.attnotnull, 'generated', a.attgenerated <> '') ORDER BY a.attnum), '[]')
     FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
     FROM pg_constraint con CROSS JOIN unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
     WHERE con.conrelid = t.oid AND con.contype = 'p') AS primary_key,
  (SELECT coalesce(json_agg(cols), '[]') FROM (
     SELECT (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) AS cols
     FROM pg_index i WHERE i.indrelid = t.oid AND i.indisunique AND NOT i.indisprimary
       AND i.indexprs IS NULL AND i.indpred IS NULL) u) AS uniques,
  (SELECT coalesce(json_agg(json_build_object('name', con.conname,
            'columns', (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
            'refSchema', rn.nspname, 'refName', rc.relname,
            'refColumns', (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum),
            'deferrable', con.condeferrable)), '[]')
     FROM pg_constraint con JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
     WHERE con.conrelid = t.oid AND con.contype = 'f') AS foreign_keys
FROM t`;

interface CatalogRow {
  schema: string;
  name: string;
  columns: Column[];
  primary_key: string[];
  uniques: string[][];
  foreign_keys: Array<{ name: string; columns: string[]; refSchema: string; refName: string; refColumns: string[]; deferrable: boolean }>;
}

/** Reads tables, columns, keys and foreign keys for the named tables. Missing tables are absent from the map. */
export async function introspectTables(client: pg.ClientBase | pg.Pool, names: string[]): Promise<Map<string, TableInfo>> {
  const parts = names.map(parseTableName);
  const res = await client.query<CatalogRow>(CATALOG_SQL, [parts.map((p) => p.schema), parts.map((p) => p.name)]);
  const out = new Map<string, TableInfo>();
  for (const r of res.rows) {
    const qualified = qualifiedName(r.schema, r.name);
    out.set(qualified, {
      schema: r.schema,
      name: r.name,
      qualified,
      display: r.schema === 'public' ? r.name : `${r.schema}.${r.name}`,
      columns: r.columns,
      primaryKey: r.primary_key,
      uniques: r.uniques,
      foreignKeys: r.foreign_keys.map((f) => ({
        name: f.name,
        columns: f.columns,
        refTable: qualifiedName(f.refSchema, f.refName),
        refColumns: f.refColumns,
        deferrable: f.deferrable,
      })),
    });
  }
  return out;
}

export interface SyncedTable {
  /** The target's view of the table (columns written, keys, FKs used for ordering). */
  target: TableInfo;
  /** Columns copied: present on both sides, not generated, in target order. */
  columns: Column[];
  /** Source expression per column (a transform), default the quoted column. */
  expressions: Map<string, string>;
  /** Row filter appended to the source query, or null. */
  where: string | null;
}

export interface TableConfig {
  name: string;
  /** Column name → SQL expression evaluated on the source (e.g. anonymisation). */
  transforms?: Record<string, string>;
  /** SQL boolean expression on the source table (e.g. per-organization sync). */
  where?: string;
}

/**
 * Matches the configured tables on both sides. Every problem is collected and reported in one
 * error: a table missing on a side, no primary key, different primary keys, a column on one side only.
 */
export async function resolveTables(
  source: pg.ClientBase | pg.Pool,
  target: pg.ClientBase | pg.Pool,
  configs: TableConfig[],
): Promise<SyncedTable[]> {
  const names = configs.map((c) => c.name);
  const [src, dst] = await Promise.all([introspectTables(source, names), introspectTables(target, names)]);
  const problems: string[] = [];
  const out: SyncedTable[] = [];
  for (const cfg of configs) {
    const p = parseTableName(cfg.name);
    const q = qualifiedName(p.schema, p.name);
    const s = src.get(q);
    const d = dst.get(q);
    if (!s) problems.push(`table ${cfg.name} does not exist in production (source)`);
    if (!d) problems.push(`table ${cfg.name} does not exist in staging (target): apply the migrations to staging (npm run db:migrate)`);
    if (!s || !d) continue;
    if (d.primaryKey.length === 0) {
      problems.push(`table ${d.display} has no primary key in staging: add one (the engine matches rows by primary key)`);
      continue;
    }
    if (s.primaryKey.join(',') !== d.primaryKey.join(',')) {
      problems.push(`table ${d.display} has primary key (${s.primaryKey.join(', ') || 'none'}) in production but (${d.primaryKey.join(', ')}) in staging`);
      continue;
    }
    const srcCols = new Map(s.columns.map((c) => [c.name, c]));
    const dstCols = new Map(d.columns.map((c) => [c.name, c]));
    const typeDiff = d.primaryKey.filter((k) => srcCols.get(k)?.type !== dstCols.get(k)?.type);
    if (typeDiff.length) {
      problems.push(`table ${d.display}: primary-key column ${typeDiff.join(', ')} has type ${typeDiff.map((k) => srcCols.get(k)?.type).join(', ')} in production but ${typeDiff.map((k) => dstCols.get(k)?.type).join(', ')} in staging`);
      continue;
    }
    for (const c of s.columns) if (!dstCols.has(c.name) && !c.generated) problems.push(`column ${d.display}.${c.name} exists in production but not in staging: migrate staging`);
    for (const c of d.columns) if (!srcCols.has(c.name) && !c.generated && !(cfg.transforms && c.name in cfg.transforms)) problems.push(`column ${d.display}.${c.name} exists in staging but not in production: migrate production or drop the column in staging`);
    for (const name of Object.keys(cfg.transforms ?? {})) if (!dstCols.has(name)) problems.push(`transform for ${d.display}.${name}: no such column in staging`);
    const columns = d.columns.filter((c) => !c.generated && (srcCols.has(c.name) || (cfg.transforms && c.name in cfg.transforms)));
    const expressions = new Map(columns.map((c) => [c.name, cfg.transforms?.[c.name] ?? quoteIdent(c.name)]));
    out.push({ target: d, columns, expressions, where: cfg.where ?? null });
  }
  if (problems.length > 0) {
    const hint = problems.some((m) => m.includes('migrate')) ? 'run npm run db:migrate against both databases, then run again' : 'fix the tables or the table list in elara-sync.yml, then run again';
    throw new SyncError(problems.some((m) => m.includes('primary key')) ? 'E_NO_PRIMARY_KEY' : 'E_SCHEMA_MISMATCH', `schema problems:\n  - ${problems.join('\n  - ')}`, hint);
  }
  return out;
}
