// The pure parts of the table plan: the single-expression guard and the type-drift verdicts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspectExpression } from '../src/sql/expression.ts';
import { compareTypes } from '../src/plan/types.ts';
import type { ColumnType } from '../src/catalog/introspect.ts';

test('inspectExpression: one expression passes, with its function calls and whether it reads tables', () => {
  assert.deepEqual(inspectExpression(`'user_' || md5(email) || '@example.invalid'`), { functions: ['md5'], readsTables: false });
  assert.deepEqual(inspectExpression(`pg_catalog.left("firstName", 1)`).functions, ['pg_catalog.left']);
  assert.deepEqual(inspectExpression(`"we;ird"(x)`).functions, ['we;ird']);
  assert.equal(inspectExpression(`id IN (SELECT id FROM "Organization" WHERE tier = 'pro')`).readsTables, true);
  assert.equal(inspectExpression(`'select' || $$ ) ; -- $$ || E'\\';'`).readsTables, false);
  assert.equal(inspectExpression(`$tag$ ; $tag$`).functions.length, 0);
});

test('inspectExpression: anything that could end, start or escape a statement is refused, saying what and where', () => {
  for (const [text, what] of [
    [`1; DROP TABLE x`, /";"/], [`x -- y`, /-- comment/], [`x /* y */`, /\/\* comment/], [`x) OR (true`, /closes a "\)"/],
    [`(x`, /unclosed/], [`'abc`, /unterminated string/], [`$a$ x`, /unterminated dollar/], [`"x`, /unterminated quoted identifier/],
    [`$1`, /\$n parameter/], [`E'\\'`, /unterminated string/], [`  `, /empty/],
  ] as const) {
    assert.throws(() => inspectExpression(text), what, text);
  }
});

const t = (type: string, typeName: string, typmod = -1, extra: Partial<ColumnType> = {}): ColumnType =>
  ({ type, typeName, typmod, category: 'X', base: null, isDomain: false, enumLabels: null, ...extra });

test('compareTypes: widenings that keep every value and its text pass; the rest is lossy', () => {
  const vc = (n: number) => t(`character varying(${n})`, 'character varying', n + 4);
  const num = (p: number, s: number) => t(`numeric(${p},${s})`, 'numeric', ((p << 16) | s) + 4);
  const cases: Array<[ColumnType, ColumnType, string]> = [
    [t('text', 'text'), t('text', 'text'), 'same'],
    [vc(8), t('text', 'text'), 'lossless'],
    [vc(8), vc(16), 'lossless'],
    [vc(16), vc(8), 'lossy'],
    [t('text', 'text'), vc(8), 'lossy'],
    [num(6, 2), t('numeric', 'numeric'), 'lossless'],
    [num(6, 2), num(8, 2), 'lossless'],
    [num(6, 2), num(6, 3), 'lossy'],
    [t('numeric', 'numeric'), num(6, 2), 'lossy'],
    [t('integer', 'integer'), t('bigint', 'bigint'), 'lossless'],
    [t('bigint', 'bigint'), t('integer', 'integer'), 'lossy'],
    [t('double precision', 'double precision'), t('integer', 'integer'), 'lossy'],
    [t('real', 'real'), t('double precision', 'double precision'), 'lossy'],
    [t('timestamp(3) without time zone', 'timestamp without time zone', 3), t('timestamp without time zone', 'timestamp without time zone'), 'lossless'],
    [t('timestamp with time zone', 'timestamp with time zone'), t('timestamp(0) with time zone', 'timestamp with time zone', 0), 'lossy'],
  ];
  for (const [a, b, kind] of cases) assert.equal(compareTypes(a, b).kind, kind, `${a.type} → ${b.type}`);
});

test('compareTypes: enums need every production label in staging; domains are compared by their base type', () => {
  const e = (labels: string[]) => t('mood', 'mood', -1, { category: 'E', enumLabels: labels });
  assert.equal(compareTypes(e(['a', 'b']), e(['a', 'b'])).kind, 'same');
  assert.equal(compareTypes(e(['a', 'b']), e(['a', 'b', 'c'])).kind, 'lossless');
  const lossy = compareTypes(e(['a', 'b', 'c']), e(['a', 'b']));
  assert.equal(lossy.kind, 'lossy');
  assert.match((lossy as { reason: string }).reason, /'c'/);
  const domain = t('email', 'email', -1, { isDomain: true, base: t('text', 'text') });
  assert.equal(compareTypes(domain, t('text', 'text')).kind, 'lossless');
  assert.equal(compareTypes(t('text', 'text'), t('email8', 'email8', -1, { isDomain: true, base: t('character varying(8)', 'character varying', 12) })).kind, 'lossy');
});
