// lagSeconds(): the one rule for "how far behind is staging", shared by /sync and /metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lagSeconds } from '../src/ops/status.ts';

const now = Date.parse('2026-12-01T12:00:00Z');
const ago = (s: number) => new Date(now - s * 1000);
const idle = { backlog: 0, oldestAgeSeconds: 0 };

test('lag counts from the last run that checked both sides', () => {
  assert.equal(lagSeconds(now, { lastEqualAt: ago(120), lastImmediateAt: null }, idle), 120);
  assert.equal(lagSeconds(now, { lastEqualAt: null, lastImmediateAt: ago(1) }, idle), null, 'no run has checked the table yet');
});

test('an immediate sync after the run counts when nothing older is waiting in the outbox', () => {
  assert.equal(lagSeconds(now, { lastEqualAt: ago(120), lastImmediateAt: ago(2) }, idle), 2);
  assert.equal(lagSeconds(now, { lastEqualAt: ago(120), lastImmediateAt: ago(2) }, { backlog: 1, oldestAgeSeconds: 1 }), 2, 'a job newer than the sync waits');
  assert.equal(lagSeconds(now, { lastEqualAt: ago(120), lastImmediateAt: ago(2) }, { backlog: 3, oldestAgeSeconds: 40 }), 120, 'a job older than the sync waits');
  assert.equal(lagSeconds(now, { lastEqualAt: ago(10), lastImmediateAt: ago(60) }, idle), 10, 'an older immediate sync changes nothing');
});

test('lag is never less than the age of the oldest waiting job', () => {
  assert.equal(lagSeconds(now, { lastEqualAt: ago(5), lastImmediateAt: null }, { backlog: 2, oldestAgeSeconds: 30 }), 30);
});
