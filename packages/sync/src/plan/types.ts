// Column type drift between production and staging, decided from catalog data alone (pure).
// Values travel cast to staging's type, so a difference that can change or reject a value
// (text → varchar(8), numeric → numeric(6,2), float8 → int, an enum without some label) is
// refused before any write. A difference that loses nothing (varchar(8) → text, int → bigint,
// numeric(6,2) → numeric) passes and is shown by `plan`.
import type { ColumnType } from '../catalog/introspect.ts';

export type TypeVerdict = { kind: 'same' } | { kind: 'lossless'; note: string } | { kind: 'lossy'; reason: string };

// typmod encodings (src/backend/utils/adt): varchar/char/bit: length + 4 (VARHDRSZ) for char types,
// the bit count for bit types; numeric: ((precision << 16) | scale) + 4; time types: the precision.
const charLength = (t: ColumnType) => (t.typmod < 0 ? Infinity : t.typmod - 4);
const numericPS = (t: ColumnType) => (t.typmod < 0 ? null : { p: ((t.typmod - 4) >> 16) & 0xffff, s: (t.typmod - 4) & 0xffff });

const INT_RANK: Record<string, number> = { smallint: 1, integer: 2, bigint: 3 };
const TIME_TYPES = new Set(['timestamp without time zone', 'timestamp with time zone', 'time without time zone', 'time with time zone']);

/** Unwraps domains: values of a domain over X travel as X. */
function unwrap(t: ColumnType): ColumnType {
  return t.isDomain && t.base ? unwrap(t.base) : t;
}

/** Can every value of `src` be stored in `dst` unchanged (same text form)? */
function widens(src: ColumnType, dst: ColumnType): boolean | 'unknown' {
  if (src.typeName === dst.typeName) {
    if (src.typmod === dst.typmod) return true;
    if (src.typeName === 'character varying' || src.typeName === 'bit varying') return charLength(dst) >= charLength(src);
    if (src.typeName === 'numeric') {
      const s = numericPS(src);
      const d = numericPS(dst);
      if (d === null) return true;
      if (s === null) return false;
      return d.s === s.s && d.p - d.s >= s.p - s.s;
    }
    if (TIME_TYPES.has(src.typeName)) return dst.typmod < 0 || (src.typmod >= 0 && dst.typmod >= src.typmod);
    return false;
  }
  if (src.typeName === 'character varying' && dst.typeName === 'text') return true;
  if (src.typeName in INT_RANK && dst.typeName in INT_RANK) return INT_RANK[dst.typeName]! >= INT_RANK[src.typeName]!;
  return 'unknown';
}

export function compareTypes(src: ColumnType, dst: ColumnType): TypeVerdict {
  if (src.type === dst.type && !src.enumLabels && !dst.enumLabels) return { kind: 'same' };
  const s = unwrap(src);
  const d = unwrap(dst);
  const domainNote = src.type !== dst.type && (src.isDomain || dst.isDomain) ? ` (domain ${src.isDomain ? src.type : dst.type} over ${s.type})` : '';
  if (s.enumLabels || d.enumLabels) {
    if (!s.enumLabels || !d.enumLabels) return { kind: 'lossy', reason: `type ${src.type} in production but ${dst.type} in staging` };
    const missing = s.enumLabels.filter((l) => !d.enumLabels!.includes(l));
    if (missing.length > 0) {
      return { kind: 'lossy', reason: `enum ${src.type} has label(s) ${missing.map((l) => `'${l}'`).join(', ')} in production that ${dst.type} in staging lacks` };
    }
    if (s.typeName !== d.typeName) return { kind: 'lossy', reason: `enum type ${src.type} in production but ${dst.type} in staging` };
    if (d.enumLabels.length > s.enumLabels.length) return { kind: 'lossless', note: `enum ${dst.type} has extra labels in staging` };
    if (s.enumLabels.join('\u0000') !== d.enumLabels.join('\u0000')) return { kind: 'lossless', note: `enum ${dst.type} orders its labels differently in staging` };
    return src.type === dst.type ? { kind: 'same' } : { kind: 'lossless', note: `${src.type} → ${dst.type}${domainNote}` };
  }
  if (s.category === 'A' || d.category === 'A') {
    if (s.category !== d.category || !s.base || !d.base) return { kind: 'lossy', reason: `type ${src.type} in production but ${dst.type} in staging` };
    const inner = compareTypes(s.base, d.base);
    if (inner.kind === 'lossy') return { kind: 'lossy', reason: `array type ${src.type} in production but ${dst.type} in staging` };
    return inner.kind === 'same' && s.type === d.type ? (domainNote ? { kind: 'lossless', note: `${src.type} → ${dst.type}${domainNote}` } : { kind: 'same' }) : { kind: 'lossless', note: `${src.type} → ${dst.type}` };
  }
  const w = widens(s, d);
  if (w === true) return s.type === d.type && !domainNote ? { kind: 'same' } : { kind: 'lossless', note: `${src.type} → ${dst.type}${domainNote}` };
  return { kind: 'lossy', reason: `type ${src.type} in production but ${dst.type} in staging` };
}
