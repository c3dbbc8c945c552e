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

test('NODE_ENV=production refuses a database URL that reaches the network without TLS, unless DB_ALLOW_PLAINTEXT=true', () => {
  const base = { NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(40) };
  const remote = 'postgresql://app:hunter2@db.example.com:5432/prod';
  assert.throws(() => loadConfig({ ...base, DATABASE_URL: remote, STAGING_DATABASE_URL: `${remote}?sslmode=disable` }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /DATABASE_URL connects to a host on the network without TLS \(sslmode=prefer \(the default\)/);
    assert.match(err.message, /STAGING_DATABASE_URL connects to a host on the network without TLS \(sslmode=disable\)/);
    assert.match(err.message, /use sslmode=verify-full&sslrootcert=<the server's CA file>, or set DB_ALLOW_PLAINTEXT=true/);
    assert.ok(!err.message.includes('hunter2') && !err.message.includes('db.example.com'), 'names the variable, not its value');
    return true;
  });
  // Encrypted modes, loopback hosts, the explicit opt-out, and anything outside production pass.
  assert.equal(loadConfig({ ...base, DATABASE_URL: `${remote}?sslmode=require` }).tls.production.mode, 'require');
  assert.equal(loadConfig({ ...base, DATABASE_URL: 'postgresql://app@127.0.0.1:5432/prod' }).tls.production.mode, 'prefer');
  const allowed = loadConfig({ ...base, DATABASE_URL: remote, DB_ALLOW_PLAINTEXT: 'true' });
  assert.equal(allowed.tls.allowPlaintext, true);
  assert.equal(loadConfig({ DATABASE_URL: remote }).tls.production.mode, 'prefer');
});

test('TLS settings are checked at start-up: a bad sslmode, verify-full without a CA, a missing CA file', () => {
  assert.throws(() => loadConfig({ DATABASE_URL: 'postgresql://u:pw@h/db?sslmode=verify-full', STAGING_DATABASE_URL: 'postgresql://u:pw@h/db?sslmode=always' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /DATABASE_URL sslmode=verify-full needs a CA/);
    assert.match(err.message, /STAGING_DATABASE_URL sslmode=always is not a valid mode/);
    return true;
  });
  assert.throws(() => loadConfig({ DATABASE_URL: 'postgresql://u:pw@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem' }), /DATABASE_URL cannot read sslrootcert \/nonexistent\/ca\.pem \(ENOENT\)/);
});

test('PGSSL* are folded into the URLs, so the pools and the in-process reconcile read the same settings', () => {
  const c = loadConfig({ DATABASE_URL: 'postgresql://u@h/db', STAGING_DATABASE_URL: 'postgresql://u@h/stg?sslmode=disable', PGSSLMODE: 'require' });
  assert.equal(new URL(c.databaseUrl).searchParams.get('sslmode'), 'require');
  assert.equal(new URL(c.stagingDatabaseUrl!).searchParams.get('sslmode'), 'disable', 'the URL wins');
  assert.equal(c.tls.production.modeFrom, 'url');
});
