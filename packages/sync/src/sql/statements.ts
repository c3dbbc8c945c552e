// Statement builders: pure functions from a table plan to SQL text. No I/O here, so unit tests
// need no database and `elara-sync plan` can show what a run would do.
import { quoteIdent } from '../catalog/introspect.ts';
import type { TablePlan } from '../plan/table-plan.ts';

/**
 * Session settings applied on both sides (and inside the tracking trigger) so that key text,
 * hashes and text values are computed identically whatever the server's or the session's defaults.
 */
export const SESSION_SETTINGS = `SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET lc_monetary = 'C'; SET jit = off`;
/** The same settings as `SET LOCAL`, for a transaction on a pooled connection. */
export const LOCAL_SESSION_SETTINGS = SESSION_SETTINGS.replace(/SET /g, 'SET LOCAL ');
/** The same settings as CREATE FUNCTION clauses. */
export const FUNCTION_SETTINGS = SESSION_SETTINGS.replace(/; /g, ' ').replace(/SET jit = off/, '');

const q = quoteIdent;

/** A row's key as text[] (one element per key column): how local (QA) rows are recorded. */
export function keyArray(plan: TablePlan, alias: string): string {
  return `ARRAY[${plan.key.map((c) => `${alias}.${q(c.name)}::text`).join(', ')}]`;
}

/** A row's key for humans and reports: the value, or a row literal for composite keys. */
export function keyLabel(plan: TablePlan, alias: string): string {
  const cols = plan.key.map((c) => `${alias}.${q(c.name)}`);
  return cols.length === 1 ? `${cols[0]}::text` : `ROW(${cols.join(', ')})::text`;
}

/** `a.k = b.k AND …` over the key columns. */
export function keyJoin(plan: TablePlan, a: string, b: string): string {
  return plan.key.map((c) => `${a}.${q(c.name)} = ${b}.${q(c.name)}`).join(' AND ');
}

/** Joins a local-keys row `l` (key text[]) to a row `t` through the typed key, so indexes apply. */
export function localKeyJoin(plan: TablePlan, l: string, t: string): string {
  return plan.key.map((c, i) => `${t}.${q(c.name)} = (${l}.key[${i + 1}])::${c.type}`).join(' AND ');
}

export function keyColumns(plan: TablePlan, alias?: string): string {
  return plan.key.map((c) => (alias ? `${alias}.${q(c.name)}` : q(c.name))).join(', ');
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
export function keyHash(plan: TablePlan, alias: string, seed = '0'): string {
  if (plan.key.length === 1) {
    const fn = TYPE_HASH[plan.key[0]!.type];
    if (fn) return `${fn}(${alias}.${q(plan.key[0]!.name)}, ${seed})`;
  }
  return `hashtextextended(${keyLabel(plan, alias)}, ${seed})`;
}

/**
 * A row version: the key hashed with the row's xmin as seed. Any write to a row gives it a new
 * xmin (a new tuple), so an insert, update or delete changes the xor of these. Computed on the
 * source (production's versions) and on the target (staging's own versions: what the engine
 * wrote, or anything else that wrote there).
 */
export function rowVersionHash(plan: TablePlan, alias: string): string {
  return keyHash(plan, alias, `${alias}.xmin::text::bigint`);
}

export function bucketExpr(plan: TablePlan, alias: string, buckets: number): string {
  return `(${keyHash(plan, alias)} & ${buckets - 1})::int`;
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

export function scopePredicate(plan: TablePlan, alias: string, scope: Scope): string {
  switch (scope.kind) {
    case 'all':
      return 'true';
    case 'buckets':
      return `get_bit(${bitmapLiteral(scope.bitmap)}, ${bucketExpr(plan, alias, scope.buckets)}) = 1`;
    case 'keys':
      return `(${keyColumns(plan, alias)}) IN (SELECT ${keyColumns(plan)} FROM ${scope.keysTable})`;
  }
}

const from = (plan: TablePlan, alias: string) => `${plan.only}${plan.id} ${alias}`;

/**
 * The source query: every synced column as its transform expression cast to the target's type
 * (so binary COPY matches the target exactly), restricted to the row filter and the scope.
 */
export function sourceSelect(plan: TablePlan, scope: Scope): string {
  const cols = plan.columns.map((c) => `(${c.expr})::${c.type} AS ${q(c.name)}`);
  const where = [plan.where ? `(${plan.where})` : null, scope.kind === 'all' ? null : scopePredicate(plan, 's', scope)].filter(Boolean);
  return `SELECT ${cols.join(', ')} FROM ${from(plan, 's')}${where.length ? ` WHERE ${where.join(' AND ')}` : ''}`;
}

/** The source query for given keys (a jsonb array of {keycol: text}), over the extended protocol. */
export function sourceSelectByKeys(plan: TablePlan, param: string): string {
  const keysIn = `(${keyColumns(plan, 's')}) IN (${keysRecordset(plan, param)})`;
  const cols = plan.columns.map((c) => `(${c.expr})::${c.type} AS ${q(c.name)}`);
  return `SELECT ${cols.join(', ')} FROM ${from(plan, 's')} WHERE ${plan.where ? `(${plan.where}) AND ` : ''}${keysIn}`;
}

/** Key values passed as a jsonb array of objects of text, cast back to the key types. */
export function keysRecordset(plan: TablePlan, param: string): string {
  return `SELECT ${plan.key.map((c) => `x.${q(c.name)}::${c.type}`).join(', ')}
    FROM jsonb_to_recordset(${param}::jsonb) AS x(${plan.key.map((c) => `${q(c.name)} text`).join(', ')})`;
}

/** Per-row (key hash, row version hash) on the source, streamed and folded into buckets. */
export function sourceFingerprintSelect(plan: TablePlan): string {
  return `SELECT ${keyHash(plan, 's')}, ${rowVersionHash(plan, 's')} FROM ${from(plan, 's')}${plan.where ? ` WHERE (${plan.where})` : ''}`;
}

/** The whole source table's fingerprint in one aggregate: equal to the xor of all bucket fingerprints. */
export function sourceTotalSelect(plan: TablePlan): string {
  return `SELECT count(*)::bigint AS n, coalesce(bit_xor(${rowVersionHash(plan, 's')}), 0)::text AS x FROM ${from(plan, 's')}${plan.where ? ` WHERE (${plan.where})` : ''}`;
}

/** The same two, over every row of the target table (staging's own row versions). */
export function targetFingerprintSelect(plan: TablePlan): string {
  return `SELECT ${keyHash(plan, 't')}, ${rowVersionHash(plan, 't')} FROM ${from(plan, 't')}`;
}

export function targetTotalSelect(plan: TablePlan): string {
  return `SELECT count(*)::bigint AS n, coalesce(bit_xor(${rowVersionHash(plan, 't')}), 0)::text AS x FROM ${from(plan, 't')}`;
}

/** Target fingerprints of the marked buckets only, per bucket (after an apply wrote there). */
export function targetBucketSelect(plan: TablePlan, buckets: number, bitmap: Uint8Array): string {
  return `SELECT ${bucketExpr(plan, 't', buckets)} AS b, count(*)::bigint AS n, bit_xor(${rowVersionHash(plan, 't')})::text AS x
    FROM ${from(plan, 't')} WHERE ${scopePredicate(plan, 't', { kind: 'buckets', buckets, bitmap })} GROUP BY 1`;
}

export function columnList(plan: TablePlan, alias?: string): string {
  return plan.columns.map((c) => (alias ? `${alias}.${q(c.name)}` : q(c.name))).join(', ');
}
