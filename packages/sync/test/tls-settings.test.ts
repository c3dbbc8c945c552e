// What each connection string (+ PGSSL* environment) means for TLS, as a table: libpq's sslmode
// semantics, the environment variables, libpq's ~/.postgresql defaults, and the settings that are
// refused with a reason. Pure: no database (tls.test.ts connects to a real TLS server).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import pg from 'pg';
import {
  applyTlsEnv, describeTls, isLoopbackHost, plaintextRisk, refusedInProduction, resolveTlsSettings, stripTlsParams, TlsConfigError,
} from '../src/tls/settings.ts';
import { createClient, loadTlsOptions, pgConfig } from '../src/tls/client.ts';

// An empty HOME, so a developer's own ~/.postgresql cannot change the results.
const home = mkdtempSync(join(tmpdir(), 'elara-tls-home-'));
after(() => rmSync(home, { recursive: true, force: true }));
const ENV = { HOME: home };
const CA = join(home, 'ca.pem');
writeFileSync(CA, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');

type Row = [url: string, env: Record<string, string>, expected: { mode: string; verify: string; rootCert?: string | null; modeFrom?: string }];
const H = 'postgresql://u:pw@db.example.com:5432/app';

const TABLE: Row[] = [
  // libpq's default is prefer: TLS when offered, nothing verified.
  [H, {}, { mode: 'prefer', verify: 'none', rootCert: null, modeFrom: 'default' }],
  [`${H}?sslmode=disable`, {}, { mode: 'disable', verify: 'none' }],
  [`${H}?sslmode=allow`, {}, { mode: 'allow', verify: 'none' }],
  // require encrypts without verifying (node-postgres would verify the full chain and host here)…
  [`${H}?sslmode=require`, {}, { mode: 'require', verify: 'none', rootCert: null }],
  // …unless a root certificate is given: then it checks the chain, as verify-ca does (libpq).
  [`${H}?sslmode=require&sslrootcert=${CA}`, {}, { mode: 'require', verify: 'ca', rootCert: CA }],
  [`${H}?sslmode=verify-ca&sslrootcert=${CA}`, {}, { mode: 'verify-ca', verify: 'ca' }],
  [`${H}?sslmode=verify-full&sslrootcert=${CA}`, {}, { mode: 'verify-full', verify: 'full' }],
  // sslrootcert=system (libpq 16): the public CAs, and verify-full by default.
  [`${H}?sslrootcert=system`, {}, { mode: 'verify-full', verify: 'full', rootCert: 'system', modeFrom: 'default' }],
  // The environment, when the URL says nothing; the URL wins when it does.
  [H, { PGSSLMODE: 'require' }, { mode: 'require', verify: 'none', modeFrom: 'env' }],
  [H, { PGSSLMODE: 'verify-full', PGSSLROOTCERT: CA }, { mode: 'verify-full', verify: 'full', rootCert: CA, modeFrom: 'env' }],
  [`${H}?sslmode=disable`, { PGSSLMODE: 'verify-full', PGSSLROOTCERT: CA }, { mode: 'disable', verify: 'none', modeFrom: 'url' }],
  // node-postgres's own ssl= parameter keeps its meaning.
  [`${H}?ssl=true`, {}, { mode: 'verify-full', verify: 'full', rootCert: 'system' }],
  [`${H}?ssl=no-verify`, {}, { mode: 'require', verify: 'none' }],
  [`${H}?ssl=0`, {}, { mode: 'disable', verify: 'none' }],
];

describe('sslmode as libpq means it', () => {
  for (const [url, env, want] of TABLE) {
    const label = `${url.replace(H, 'URL').replace(home, '~')}${Object.keys(env).length ? ` with ${Object.entries(env).map(([k, v]) => `${k}=${v.replace(home, '~')}`).join(' ')}` : ''}`;
    test(`${label} → ${want.mode}, verifies ${want.verify}`, () => {
      const s = resolveTlsSettings(url, { ...ENV, ...env });
      assert.equal(s.mode, want.mode);
      assert.equal(s.verify, want.verify);
      if ('rootCert' in want) assert.equal(s.rootCert, want.rootCert);
      if (want.modeFrom) assert.equal(s.modeFrom, want.modeFrom);
      assert.equal(s.host, 'db.example.com');
    });
  }

  test('the ssl options handed to Node: require does not verify, verify-ca skips the host name, verify-full checks both', () => {
    const opts = (q: string) => loadTlsOptions(resolveTlsSettings(`${H}?${q}`, ENV));
    assert.equal(opts('sslmode=require').rejectUnauthorized, false);
    assert.equal(opts('sslmode=require').ca, undefined);
    const ca = opts(`sslmode=verify-ca&sslrootcert=${CA}`);
    assert.equal(ca.rejectUnauthorized, true);
    assert.equal(typeof ca.checkServerIdentity, 'function');
    assert.equal(ca.checkServerIdentity!('other.host', {} as never), undefined);
    const full = opts(`sslmode=verify-full&sslrootcert=${CA}`);
    assert.equal(full.rejectUnauthorized, true);
    assert.equal(full.checkServerIdentity, undefined, 'Node\'s own host-name check');
    assert.ok(String(full.ca).includes('BEGIN CERTIFICATE'));
    assert.equal(full.minVersion, 'TLSv1.2');
    assert.equal(opts('sslmode=require&ssl_min_protocol_version=TLSv1.3').minVersion, 'TLSv1.3');
    // system: Node's own CA list (no ca option).
    assert.equal(opts('sslrootcert=system').ca, undefined);
  });

  test('libpq defaults from ~/.postgresql: root.crt makes require verify the chain; postgresql.crt/.key are the client certificate', () => {
    const h = mkdtempSync(join(tmpdir(), 'elara-tls-home-'));
    try {
      mkdirSync(join(h, '.postgresql'));
      writeFileSync(join(h, '.postgresql', 'root.crt'), '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n');
      writeFileSync(join(h, '.postgresql', 'postgresql.crt'), '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n');
      const s = resolveTlsSettings(`${H}?sslmode=require`, { HOME: h });
      assert.equal(s.verify, 'ca');
      assert.equal(s.rootCert, join(h, '.postgresql', 'root.crt'));
      assert.equal(s.cert, join(h, '.postgresql', 'postgresql.crt'));
      assert.equal(s.key, join(h, '.postgresql', 'postgresql.key'));
      // verify-full works without sslrootcert because root.crt exists.
      assert.equal(resolveTlsSettings(`${H}?sslmode=verify-full`, { HOME: h }).rootCert, join(h, '.postgresql', 'root.crt'));
    } finally {
      rmSync(h, { recursive: true, force: true });
    }
  });
});

describe('settings that cannot work are refused, saying what to change', () => {
  const REFUSED: Array<[string, Record<string, string>, RegExp, RegExp]> = [
    [`${H}?sslmode=verify-full`, {}, /sslmode=verify-full needs a CA/, /sslrootcert=\/path\/to\/ca\.pem/],
    [`${H}?sslmode=verify-ca`, {}, /needs a CA/, /provider's CA bundle/],
    [H, { PGSSLMODE: 'verify-full' }, /needs a CA/, /sslrootcert/],
    [`${H}?sslmode=verify_full`, {}, /sslmode=verify_full is not a valid mode/, /disable, allow, prefer, require, verify-ca, verify-full/],
    [`${H}?sslmode=require&sslrootcert=system`, {}, /sslrootcert=system needs sslmode=verify-full/, /host-name check/],
    [`${H}?sslcrldir=/etc/crl`, {}, /sslcrldir=\/etc\/crl is not supported/, /remove sslcrldir/],
    [`${H}?sslmode=require&ssl_min_protocol_version=TLSv1.4`, {}, /not a TLS version/, /TLSv1\.3/],
    [`${H}?sslnegotiation=direct`, {}, /sslnegotiation=direct needs sslmode=require/, /verify-full/],
  ];
  for (const [url, env, message, hint] of REFUSED) {
    test(url.replace(H, 'URL'), () => {
      assert.throws(() => resolveTlsSettings(url, { ...ENV, ...env }), (e: unknown) => {
        assert.ok(e instanceof TlsConfigError);
        assert.match(e.message, message);
        assert.match(e.hint, hint);
        assert.ok(!e.message.includes('pw') && !e.hint.includes(':pw@'), 'no password');
        return true;
      });
    });
  }

  test('a file named in the URL must exist and be PEM; a key readable by others is refused (as libpq does)', () => {
    const load = (q: string) => () => loadTlsOptions(resolveTlsSettings(`${H}?${q}`, ENV));
    assert.throws(load(`sslmode=verify-full&sslrootcert=${home}/missing.pem`), /cannot read sslrootcert .*missing\.pem \(ENOENT\)/);
    const der = join(home, 'der.crt');
    writeFileSync(der, Buffer.from([0x30, 0x82, 0x01, 0x0a]));
    assert.throws(load(`sslmode=verify-full&sslrootcert=${der}`), /sslrootcert .*der\.crt is not a PEM file/);
    const cert = join(home, 'client.crt');
    const key = join(home, 'client.key');
    writeFileSync(cert, '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n');
    writeFileSync(key, '-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n');
    chmodSync(key, 0o644);
    assert.throws(load(`sslmode=require&sslcert=${cert}&sslkey=${key}`), (e: Error) => {
      assert.match(e.message, /sslkey .*client\.key has group or world access \(mode 0644\)/);
      assert.match((e as TlsConfigError).hint, /chmod 0600/);
      assert.ok(!e.message.includes('secret-key-material'));
      return true;
    });
    chmodSync(key, 0o600);
    const o = loadTlsOptions(resolveTlsSettings(`${H}?sslmode=require&sslcert=${cert}&sslkey=${key}&sslpassword=hunter2`, ENV));
    // pg copies the options with Object.assign: the key and passphrase must come through…
    const copied = Object.assign({}, o) as { key?: Buffer; passphrase?: string };
    assert.match(String(copied.key), /secret-key-material/);
    assert.equal(copied.passphrase, 'hunter2');
    // …but printing the options (a logged client) shows neither.
    const shown = inspect(o, { depth: 5 });
    assert.ok(!shown.includes('secret-key-material') && !shown.includes('hunter2'), shown);
  });
});

describe('the URL pg sees and what it prints', () => {
  test('TLS parameters are removed (no SECURITY WARNING from pg-connection-string); the rest is kept', () => {
    const url = `postgresql://u:p%40ss@db.example.com:6543/app?sslmode=require&sslrootcert=${CA}&application_name=x&options=-c%20statement_timeout%3D5000`;
    const stripped = stripTlsParams(url);
    assert.doesNotMatch(stripped, /ssl/);
    const parsed = new URL(stripped);
    assert.equal(parsed.password, 'p%40ss');
    assert.equal(parsed.searchParams.get('application_name'), 'x');
    assert.equal(parsed.searchParams.get('options'), '-c statement_timeout=5000');
    assert.equal(stripTlsParams(H), H, 'a URL without TLS parameters is passed on untouched');
    // A Unix-domain socket URL (empty host) survives.
    assert.equal(stripTlsParams('postgresql://u@/app?host=/var/run/postgresql&sslmode=disable'), 'postgresql://u@/app?host=%2Fvar%2Frun%2Fpostgresql');

    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      for (const mode of ['prefer', 'require', 'verify-ca']) {
        const config = pgConfig(`${H}?sslmode=${mode}${mode === 'verify-ca' ? `&sslrootcert=${CA}` : ''}`, {}, { env: ENV });
        // What pg itself makes of it: no TLS options of its own (ours are applied at connect).
        const client = new config.Client(config);
        assert.equal((client as unknown as { ssl: unknown }).ssl, false);
      }
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings.filter((w) => /SECURITY WARNING/.test(w)), []);
  });

  test('pg never reads PGSSLMODE itself: ours decides', () => {
    const before = process.env.PGSSLMODE;
    process.env.PGSSLMODE = 'no-verify';
    try {
      const c = createClient(`${H}?sslmode=disable`);
      assert.equal((c as unknown as { ssl: unknown }).ssl, false);
      assert.ok(c instanceof pg.Client);
    } finally {
      if (before === undefined) delete process.env.PGSSLMODE;
      else process.env.PGSSLMODE = before;
    }
  });

  test('PGSSL* folded into the URL (a URL parameter wins), so a URL handed on means the same', () => {
    assert.equal(applyTlsEnv(H, {}), H);
    const u = new URL(applyTlsEnv(`${H}?sslmode=verify-ca`, { PGSSLMODE: 'disable', PGSSLROOTCERT: CA }));
    assert.equal(u.searchParams.get('sslmode'), 'verify-ca');
    assert.equal(u.searchParams.get('sslrootcert'), CA);
    assert.equal(u.password, 'pw');
  });

  test('describeTls says what is checked, with paths only', () => {
    assert.equal(describeTls(resolveTlsSettings(`${H}?sslmode=verify-full&sslrootcert=${CA}`, ENV)), `sslmode=verify-full: server certificate and host name verified against ${CA}`);
    assert.equal(describeTls(resolveTlsSettings(`${H}?sslmode=require`, ENV)), 'sslmode=require: server certificate not verified');
    assert.equal(describeTls(resolveTlsSettings(H, ENV)), 'sslmode=prefer (the default): TLS if the server offers it, server certificate not verified');
    assert.equal(describeTls(resolveTlsSettings(`${H}?sslmode=disable`, ENV)), 'sslmode=disable: no TLS');
  });
});

describe('plaintext over the network (the production rule)', () => {
  const LOOPBACK = ['localhost', '127.0.0.1', '127.1.2.3', '[::1]', 'db.localhost'];
  const REMOTE = ['db.example.com', '10.0.0.5', '[2001:db8::1]', 'localhost.example.com'];
  test('loopback hosts and Unix-domain sockets are this machine; others are not', () => {
    for (const h of LOOPBACK) assert.equal(isLoopbackHost(h), true, h);
    for (const h of REMOTE) assert.equal(isLoopbackHost(h), false, h);
    assert.equal(isLoopbackHost('/var/run/postgresql'), true);
  });

  test('a remote host without a mode that guarantees TLS is a risk; require and stronger are not', () => {
    assert.match(plaintextRisk(H, ENV) ?? '', /without TLS \(sslmode=prefer \(the default\), which falls back to plaintext/);
    assert.match(plaintextRisk(`${H}?sslmode=disable`, ENV) ?? '', /without TLS \(sslmode=disable\)/);
    assert.match(plaintextRisk(`${H}?sslmode=allow`, ENV) ?? '', /sslmode=allow/);
    assert.equal(plaintextRisk(`${H}?sslmode=require`, ENV), null);
    assert.equal(plaintextRisk(`${H}?sslmode=verify-full&sslrootcert=${CA}`, ENV), null);
    assert.equal(plaintextRisk(H, { ...ENV, PGSSLMODE: 'require' }), null);
    assert.equal(plaintextRisk('postgresql://u:pw@127.0.0.1:5432/app?sslmode=disable', ENV), null);
    assert.equal(plaintextRisk('postgresql://u@/app?host=/var/run/postgresql', ENV), null);
    assert.ok(!(plaintextRisk(H, ENV) ?? '').includes('db.example.com'), 'names the mode, not the host');
  });

  test('refused only with NODE_ENV=production, and not with DB_ALLOW_PLAINTEXT=true', () => {
    assert.equal(refusedInProduction(H, ENV), null);
    assert.match(refusedInProduction(H, { ...ENV, NODE_ENV: 'production' }) ?? '', /without TLS/);
    assert.equal(refusedInProduction(H, { ...ENV, NODE_ENV: 'production', DB_ALLOW_PLAINTEXT: 'true' }), null);
    assert.equal(refusedInProduction(`${H}?sslmode=verify-full&sslrootcert=${CA}`, { ...ENV, NODE_ENV: 'production' }), null);
  });
});
