import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, parseDuration } from '../src/config.ts';
import { SyncError } from '../src/errors.ts';

test('the default config file syncs Organization and User every five minutes', async () => {
  const { readFileSync } = await import('node:fs');
  const c = parseConfig(readFileSync(new URL('../../../elara-sync.yml', import.meta.url), 'utf8'), 'elara-sync.yml');
  assert.deepEqual(c.tables.map((t) => t.name), ['Organization', 'User']);
  assert.equal(c.intervalMs, 300_000);
});

test('tables may carry transforms and row filters', () => {
  const c = parseConfig(`tables:\n  - name: User\n    transforms: { email: "md5(email)" }\n    where: "\\"isActive\\""\n`, 'x.yml');
  assert.deepEqual(c.tables[0], { name: 'User', transforms: { email: 'md5(email)' }, where: '"isActive"' });
});

test('every bad field is named in one message', () => {
  assert.throws(
    () => parseConfig(`tables: []\ninterval: soon\ncolour: blue\n`, 'bad.yml'),
    (e: unknown) => e instanceof SyncError && e.code === 'E_CONFIG' && /bad\.yml has 3 problem/.test(e.message)
      && /tables/.test(e.message) && /interval/.test(e.message) && /colour/.test(e.message),
  );
});

test('invalid YAML is reported with the file name', () => {
  assert.throws(() => parseConfig('tables: [', 'broken.yml'), /broken\.yml is not valid YAML/);
});

test('durations', () => {
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('30s'), 30_000);
  assert.throws(() => parseDuration('5 minutes'), /not a duration/);
});
