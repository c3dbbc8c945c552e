import { test } from 'node:test';
import assert from 'node:assert/strict';
import { orderTables } from '../src/plan/table-order.ts';
import type { TableInfo } from '../src/catalog/introspect.ts';
import { SyncError } from '../src/errors.ts';

const table = (name: string, fks: Array<{ ref: string; deferrable?: boolean }> = []): TableInfo => ({
  schema: 'public', name, qualified: `"public"."${name}"`, display: name, columns: [], primaryKey: ['id'], uniques: [],
  foreignKeys: fks.map((f, i) => ({ name: `${name}_fk${i}`, columns: ['x'], refTable: `"public"."${f.ref}"`, refColumns: ['id'], deferrable: f.deferrable ?? false })),
});

test('parents come before children for upserts and after them for deletes', () => {
  const o = orderTables([table('User', [{ ref: 'Organization' }]), table('Organization'), table('Scan', [{ ref: 'User' }, { ref: 'Organization' }])]);
  assert.deepEqual(o.upsertOrder, ['"public"."Organization"', '"public"."User"', '"public"."Scan"']);
  assert.deepEqual(o.deleteOrder, ['"public"."Scan"', '"public"."User"', '"public"."Organization"']);
});

test('a self-reference needs no special order', () => {
  const o = orderTables([table('Employee', [{ ref: 'Employee' }])]);
  assert.deepEqual(o.upsertOrder, ['"public"."Employee"']);
  assert.deepEqual(o.cycles, []);
});

test('a cycle of deferrable foreign keys is accepted and reported', () => {
  const o = orderTables([table('A', [{ ref: 'B', deferrable: true }]), table('B', [{ ref: 'A', deferrable: true }])]);
  assert.deepEqual(o.cycles, [['A', 'B']]);
  assert.equal(o.upsertOrder.length, 2);
});

test('a cycle with a non-deferrable foreign key is a clear error naming the constraint', () => {
  assert.throws(
    () => orderTables([table('A', [{ ref: 'B', deferrable: true }]), table('B', [{ ref: 'A' }])]),
    (e: unknown) => e instanceof SyncError && e.code === 'E_FK_CYCLE' && /B\.B_fk0/.test(e.message) && /DEFERRABLE/.test(e.hint),
  );
});

test('references to tables outside the synced set are listed', () => {
  const o = orderTables([table('User', [{ ref: 'Organization' }])]);
  assert.equal(o.outsideReferences.length, 1);
  assert.equal(o.outsideReferences[0]!.table, 'User');
});
