// Environment parsing: defaults, every bad field named in one message, values never echoed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../src/config.ts';
import { redactUrl } from '@elara/sync';

test('defaults, frozen', () => {
  const c = loadConfig({ DATABASE_URL: 'postgresql://u@h/db' });
  assert.equal(c.port, 3000);
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.stagingDatabaseUrl, null);
  assert.equal(c.jwt.generated, true);
  assert.ok(c.jwt.secret.length >= 32);
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.jwt) && Object.isFrozen(c.sync));
});

test('every bad field is named in one error, without its value', () => {
  const secret = 'short-secret';
  assert.throws(() => loadConfig({ DATABASE_URL: 'mysql://x', PORT: 'abc', JWT_SECRET: secret, LOG_LEVEL: 'loud', ELARA_FAILPOINT: 'nope' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    for (const f of ['DATABASE_URL', 'PORT', 'JWT_SECRET', 'LOG_LEVEL', 'ELARA_FAILPOINT']) assert.match(err.message, new RegExp(f));
    assert.ok(!err.message.includes(secret));
    return true;
  });
});

test('DATABASE_URL is required; JWT_SECRET is required in production', () => {
  assert.throws(() => loadConfig({}), /DATABASE_URL/);
  assert.throws(() => loadConfig({ DATABASE_URL: 'postgres://u@h/db', NODE_ENV: 'production' }), /JWT_SECRET is required/);
});

test('empty strings count as unset', () => {
  const c = loadConfig({ DATABASE_URL: 'postgres://u@h/db', STAGING_DATABASE_URL: '', PORT: '' });
  assert.equal(c.stagingDatabaseUrl, null);
  assert.equal(c.port, 3000);
});

test('redactUrl hides passwords', () => {
  assert.equal(redactUrl('postgresql://app:hunter2@db:5432/prod?sslmode=require'), 'postgresql://app:***@db:5432/prod?sslmode=require');
  assert.equal(redactUrl('postgres://db/x?password=hunter2'), 'postgres://db/x?password=***');
  assert.ok(!redactUrl('::not a url hunter2').includes('hunter2'));
});
