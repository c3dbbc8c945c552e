import { test } from 'node:test';
import assert from 'node:assert/strict';
import { orderTables } from '../src/plan/table-order.ts';
import type { TableInfo } from '../src/catalog/introspect.ts';

const table = (name: string, fks: Array<{ ref: string; deferrable?: boolean }> = []): TableInfo => ({
  oid: 0, schema: 'public', name, qualified: `"public"."${name}"`, display: name, relkind: 'r', columns: [], primaryKey: ['id'], uniques: [],
  foreignKeys: fks.map((f, i) => ({
    name: `${name}_fk${i}`, table: `"public"."${name}"`, columns: ['x'], refTable: `"public"."${f.ref}"`, refColumns: ['id'],
    deferrable: f.deferrable ?? false, onDelete: 'a', onUpdate: 'a',
  })),
  referencedBy: [], triggers: [],
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

test('a cycle of foreign keys, deferrable or not, is ordered and reported', () => {
  for (const deferrable of [true, false]) {
    const o = orderTables([table('A', [{ ref: 'B', deferrable: true }]), table('B', [{ ref: 'A', deferrable }])]);
    assert.deepEqual(o.cycles, [['A', 'B']]);
    assert.equal(o.upsertOrder.length, 2);
  }
});

test('references to tables outside the synced set are listed', () => {
  const o = orderTables([table('User', [{ ref: 'Organization' }])]);
  assert.equal(o.outsideReferences.length, 1);
  assert.equal(o.outsideReferences[0]!.table, 'User');
});
