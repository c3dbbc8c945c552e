// Anonymized targets (real PostgreSQL): every masked production value is absent from the target
// (pii_matches = 0, in any column of any table); the same key gives the same output on every run
// and target and another key other outputs; unique columns stay unique; FK integrity holds; a
// column without a rule stops the run before any write; a lossy rule on a unique column is
// refused; the immediate sync applies the same rules; the mask key never appears in SQL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';

/** A pool whose idle clients may be ended by a forced DROP DATABASE at teardown (pool.end resolves before their sockets close). */
const quietPool = (config: pg.PoolConfig) => {
  const pool = new pg.Pool(config);
  pool.on('error', () => {});
  return pool;
};
import { verify as argon2Verify } from '@node-rs/argon2';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { maskOptions, parseConfig, resolveTarget, runSync, syncKeys, verifySync, type TableConfig } from '../src/index.ts';
import { RULES } from '../src/sql/rules.ts';
import { fkOrphans } from './cases.ts';
import { PRIVACY_SCHEMA, PRIVACY_TABLE_RULES } from './helpers.ts';

const SCHEMA = PRIVACY_SCHEMA;

const RULES_CFG = `${PRIVACY_TABLE_RULES}targets:
  staging: { url: "\${STAGING_URL}" }
  dev: { url: "\${DEV_URL}", anonymize: true }
  dev2: { url: "\${DEV2_URL}", anonymize: true }
`;
const config = parseConfig(RULES_CFG, 'privacy.yml');
const KEY = 'a-mask-key-of-32-characters-long!';
const PASSWORD = 'qa test password 123';

let prod: TestDatabase;
const targets: Record<string, TestDatabase> = {};
const env = (extra: Record<string, string> = {}) => ({
  STAGING_URL: targets.staging!.url, DEV_URL: targets.dev!.url, DEV2_URL: targets.dev2!.url, OTHER_URL: targets.other!.url,
  ELARA_SYNC_MASK_KEY: KEY, ELARA_TEST_PASSWORD: PASSWORD, ...extra,
});
const run = (name: string, e = env(), cfg = config) => {
  const target = resolveTarget(cfg.targets, name, { env: e });
  return runSync({ sourceUrl: prod.url, targetUrl: target.url, target, tables: [...cfg.tables] });
};

before(async () => {
  prod = await createTestDatabase('privacy_prod');
  for (const t of ['staging', 'dev', 'dev2', 'other']) targets[t] = await createTestDatabase(`privacy_${t}`);
  for (const db of [prod, ...Object.values(targets)]) await sql(db.url, SCHEMA);
  await sql(prod.url, `
    INSERT INTO "Organization" (id, name, tier, "apiKey", "apiSecret")
      SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'Real Company ' || g || ' GmbH', CASE WHEN g % 3 = 0 THEN 'enterprise' ELSE 'free' END,
             'elara_pk_' || md5('key' || g), md5('secret' || g) FROM generate_series(1, 30) g;
    INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", "organizationId", "managerId")
      SELECT ('00000000-0000-4000-9000-' || lpad(g::text, 12, '0'))::uuid, 'Person.' || g || '@RealMail.example.org', '$argon2id$v=19$m=19456,t=2,p=1$' || md5('pw' || g),
             'Firstname' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'Surname' || g END,
             ('00000000-0000-4000-8000-' || lpad((1 + g % 30)::text, 12, '0'))::uuid, NULL FROM generate_series(1, 120) g;
    UPDATE "User" SET "managerId" = ('00000000-0000-4000-9000-' || lpad((1 + (substring(id::text, 25)::int % 20))::text, 12, '0'))::uuid
      WHERE substring(id::text, 25)::int > 20;`);
});
after(async () => {
  await prod.drop();
  for (const t of Object.values(targets)) await t.drop();
});

/** Every production value of the masked columns, and every text value of every column of every table of the target. */
async function piiMatches(targetUrl: string): Promise<string[]> {
  const masked = await sql(prod.url, `SELECT name AS v FROM "Organization" UNION SELECT "apiKey" FROM "Organization" UNION SELECT "apiSecret" FROM "Organization"
    UNION SELECT email FROM "User" UNION SELECT lower(email) FROM "User" UNION SELECT "passwordHash" FROM "User" UNION SELECT "firstName" FROM "User" UNION SELECT "lastName" FROM "User"`);
  const values = new Set(masked.rows.map((r) => r.v).filter((v) => v !== null));
  const tables = await sql(targetUrl, `SELECT format('%I.%I', table_schema, table_name) AS t FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'`);
  const found: string[] = [];
  for (const { t } of tables.rows) {
    const rows = await sql(targetUrl, `SELECT row_to_json(x)::text AS j FROM ${t} x`);
    for (const { j } of rows.rows) for (const v of Object.values(JSON.parse(j))) if (typeof v === 'string' && values.has(v)) found.push(`${t}: ${v}`);
    // Inside a json/jsonb value or an array too.
    for (const { j } of rows.rows) for (const v of values) if (j.includes(JSON.stringify(v).slice(1, -1)) && v.length > 6) found.push(`${t} (inside a value): ${v}`);
  }
  return [...new Set(found)];
}

test('pii_matches = 0: no masked production value is in the anonymized target, in any column of any table; FK integrity holds; verify compares masked production', async () => {
  const r = await run('dev');
  assert.equal(r.error, undefined, r.error?.message);
  assert.equal(r.ok, true);
  const pii = await piiMatches(targets.dev!.url);
  console.log(`# pii_matches=${pii.length} (target dev, ${r.tables.map((t) => `${t.table} ${t.inserted}`).join(', ')} rows)`);
  assert.deepEqual(pii, []);
  assert.deepEqual(await fkOrphans(targets.dev!.url), []);
  const t = resolveTarget(config.targets, 'dev', { env: env() });
  assert.equal((await verifySync({ sourceUrl: prod.url, targetUrl: t.url, target: t, tables: [...config.tables] })).equal, true);
  // Masked values look real enough for QA.
  const u = (await sql(targets.dev!.url, `SELECT email, "firstName", "lastName", "passwordHash" FROM "User" WHERE "lastName" IS NOT NULL LIMIT 1`)).rows[0];
  assert.match(u.email, /^user_[0-9a-f]{20}@example\.com$/);
  assert.match(u.firstName, /^[A-Z][a-z]+$/);
  assert.ok(u.lastName.length > 1);
  assert.equal(await argon2Verify(u.passwordHash, PASSWORD), true, 'QA logs in with ELARA_TEST_PASSWORD');
  const o = (await sql(targets.dev!.url, `SELECT "apiKey", name FROM "Organization" LIMIT 1`)).rows[0];
  assert.match(o.apiKey, /^elara_pk_[0-9a-f]{32}$/, 'a token keeps its prefix and length');
  assert.match(o.name, /^\w+ \w+ \w+$/);
  // NULLs stay NULL (a masked value is no more informative than the absence of one).
  assert.equal((await sql(targets.dev!.url, `SELECT count(*)::int AS n FROM "User" WHERE "lastName" IS NULL`)).rows[0].n, 17);
});

test('deterministic and keyed: two targets with one key are identical, another key gives other values; unique columns stay unique', async () => {
  await run('dev');
  await run('dev2');
  const dump = async (url: string) => (await sql(url, `SELECT row_to_json(u)::text AS j FROM "User" u ORDER BY id`)).rows.map((r) => r.j);
  assert.deepEqual(await dump(targets.dev2!.url), await dump(targets.dev!.url));
  const other = parseConfig(RULES_CFG.replace('dev2: { url: "${DEV2_URL}", anonymize: true }', 'other: { url: "${OTHER_URL}", anonymize: true }'), 'other.yml');
  const r = await run('other', env({ ELARA_SYNC_MASK_KEY: 'another-mask-key-entirely-different' }), other);
  assert.equal(r.error, undefined, r.error?.message);
  const a = new Set((await sql(targets.dev!.url, `SELECT email FROM "User"`)).rows.map((x) => x.email));
  const b = (await sql(targets.other!.url, `SELECT email FROM "User"`)).rows.map((x) => x.email);
  assert.equal(b.filter((e) => a.has(e)).length, 0, 'no masked email is the same under another key');
  for (const url of [targets.dev!.url, targets.other!.url]) {
    const c = (await sql(url, `SELECT count(DISTINCT email)::int AS e, count(DISTINCT lower(email))::int AS l, count(*)::int AS n,
      (SELECT count(DISTINCT "apiKey")::int FROM "Organization") AS k, (SELECT count(*)::int FROM "Organization") AS o FROM "User"`)).rows[0];
    assert.deepEqual([c.e, c.l, c.k], [c.n, c.n, c.o]);
  }
  // A second run with the same key writes nothing: masked values do not change between runs.
  const again = await run('dev');
  for (const t of again.tables) assert.equal(t.inserted + t.updated + t.deleted, 0, t.table);
});

test('a raw target with the same config gets production values (rules apply to anonymized targets only)', async () => {
  const r = await run('staging');
  assert.equal(r.error, undefined, r.error?.message);
  assert.equal((await sql(targets.staging!.url, `SELECT count(*)::int AS n FROM "User" WHERE email LIKE '%@RealMail.example.org'`)).rows[0].n, 120);
});

test('fail closed: a column added in production without a rule stops the anonymized target before any write, naming table.column', async () => {
  const fresh = await createTestDatabase('privacy_fresh');
  try {
    await sql(fresh.url, SCHEMA);
    await sql(prod.url, `ALTER TABLE "User" ADD COLUMN phone text; UPDATE "User" SET phone = '+49 170 ' || substring(id::text, 30)`);
    await sql(fresh.url, `ALTER TABLE "User" ADD COLUMN phone text`);
    await sql(targets.dev!.url, `ALTER TABLE "User" ADD COLUMN phone text`);
    const before = (await sql(targets.dev!.url, `SELECT count(*)::int AS n FROM "User"`)).rows[0].n;
    for (const url of [targets.dev!.url, fresh.url]) {
      const t = { ...resolveTarget(config.targets, 'dev', { env: env() }), url };
      const r = await runSync({ sourceUrl: prod.url, targetUrl: url, target: t, tables: [...config.tables] });
      assert.equal(r.error?.code, 'E_CONFIG');
      assert.match(r.error!.message, /tables\.User\.columns\.phone: column User\.phone has no rule for the anonymized target dev/);
    }
    assert.equal((await sql(fresh.url, `SELECT count(*)::int AS n FROM "User"`)).rows[0].n, 0, 'nothing was written');
    assert.equal((await sql(targets.dev!.url, `SELECT count(*)::int AS n FROM "User"`)).rows[0].n, before, 'the target is as it was');
    // The raw staging target is not affected by the missing rule.
    await sql(targets.staging!.url, `ALTER TABLE "User" ADD COLUMN phone text`);
    assert.equal((await run('staging')).error, undefined);
    // With a rule, the anonymized target syncs again.
    const withRule = parseConfig(RULES_CFG.replace('lastLoginAt: keep }', 'lastLoginAt: keep, phone: "null" }'), 'rule.yml');
    const ok = await run('dev', env(), withRule);
    assert.equal(ok.error, undefined, ok.error?.message);
    assert.equal((await sql(targets.dev!.url, `SELECT count(*)::int AS n FROM "User" WHERE phone IS NOT NULL`)).rows[0].n, 0);
  } finally {
    await sql(prod.url, `ALTER TABLE "User" DROP COLUMN phone`);
    for (const t of ['dev', 'staging']) await sql(targets[t]!.url, `ALTER TABLE "User" DROP COLUMN IF EXISTS phone`);
    await fresh.drop();
  }
});

test('refused before anything runs: a lossy rule on a unique column, a non-keep key, an unknown rule, a missing mask key', async () => {
  const bad: Array<[string, RegExp]> = [
    [RULES_CFG.replace('email: email', 'email: first_name'), /tables\.User\.columns\.email: rule first_name does not keep distinct values distinct, but unique index (User_email_key|user_email_lower) reads the column/],
    [RULES_CFG.replace('apiKey: token', 'apiKey: { sql: "\'x\'" }'), /tables\.Organization\.columns\.apiKey: rule sql does not keep distinct values distinct/],
    [RULES_CFG.replace('columns: { id: keep, email', 'columns: { id: hash, email'), /tables\.User\.columns\.id: primary-key columns must be keep/],
    [RULES_CFG.replace('isActive: keep', 'isActive: hash'), /rule hash writes hex text or a uuid, not boolean/],
  ];
  for (const [text, message] of bad) {
    const r = await run('dev', env(), parseConfig(text, 'bad.yml'));
    assert.equal(r.error?.code, 'E_CONFIG', text);
    assert.match(r.error!.message, message);
  }
  assert.throws(() => parseConfig(RULES_CFG.replace('email: email', 'email: shuffle'), 'bad.yml'), /tables\.1\.columns\.email/);
  assert.throws(() => resolveTarget(config.targets, 'dev', { env: { ...env(), ELARA_SYNC_MASK_KEY: '' } }), /target dev is anonymized, but ELARA_SYNC_MASK_KEY is not set/);
  assert.throws(() => resolveTarget(config.targets, 'dev', { env: { ...env(), DEV_URL: '' } }), /target dev has no database URL: DEV_URL is not set/);
  assert.throws(() => resolveTarget(config.targets, 'nope', { env: env() }), /no target "nope" in elara-sync\.yml \(targets: staging, dev, dev2\)/);
  assert.ok(Object.keys(RULES).length >= 10);
});

test('the immediate sync applies the target\'s rules: a new user arrives masked; a pool without the mask options is refused', async () => {
  const t = resolveTarget(config.targets, 'dev', { env: env() });
  await run('dev');
  const id = '00000000-0000-4000-9000-000000009999';
  await sql(prod.url, `INSERT INTO "User" (id, email, "passwordHash", "firstName", "organizationId") VALUES ('${id}', 'New.Person@RealMail.example.org', 'hash', 'Newname', '00000000-0000-4000-8000-000000000001')`);
  const plain = quietPool({ connectionString: prod.url });
  const masked = quietPool({ connectionString: prod.url, options: maskOptions(t.mask) });
  const target = quietPool({ connectionString: t.url });
  try {
    await assert.rejects(syncKeys(plain, target, [{ table: 'User', keys: [{ id }] }], { tables: [...config.tables], target: t }), /has no mask key/);
    const r = await syncKeys(masked, target, [{ table: 'User', keys: [{ id }] }], { tables: [...config.tables], target: t });
    assert.equal(r[0]!.upserted, 1);
    const u = (await sql(t.url, `SELECT email, "firstName" FROM "User" WHERE id = '${id}'`)).rows[0];
    assert.match(u.email, /^user_[0-9a-f]{20}@example\.com$/);
    assert.notEqual(u.firstName, 'Newname');
    assert.deepEqual(await piiMatches(t.url), []);
    // The reconcile with the same key finds the immediate sync's masked row equal.
    const again = await run('dev');
    assert.equal(again.tables.find((x) => x.table === 'User')!.updated, 0);
  } finally {
    await plain.end();
    await masked.end();
    await target.end();
    await sql(prod.url, `DELETE FROM "User" WHERE id = '${id}'`);
  }
});

test('the mask key is never in SQL text: only its pads, in the connection\'s startup options', async () => {
  const t = resolveTarget(config.targets, 'dev', { env: env() });
  const { compileTablePlans } = await import('../src/plan/table-plan.ts');
  const { introspectTables } = await import('../src/catalog/introspect.ts');
  const { sourceSelect } = await import('../src/sql/statements.ts');
  const c = new pg.Client({ connectionString: prod.url });
  await c.connect();
  try {
    const names = config.tables.map((x: TableConfig) => x.name);
    const cat = await introspectTables(c, names);
    const plans = compileTablePlans([...config.tables], cat, cat, { name: 'dev', anonymize: true, maskSig: t.mask!.sig, passwordHash: 'h', subset: null });
    for (const p of plans) {
      const text = sourceSelect(p, { kind: 'all' });
      assert.ok(!text.includes(KEY) && !text.includes(t.mask!.ipadHex) && !text.includes(t.mask!.opadHex));
      assert.match(text, /current_setting\('elara\.mask_i'\)/);
    }
  } finally {
    await c.end();
  }
});

test('the token rule keeps only the prefix: no part of a random body survives, even when it contains _ or -', async () => {
  const { ruleExpression } = await import('../src/sql/rules.ts');
  const t = resolveTarget(config.targets, 'dev', { env: env() });
  const c = new pg.Client({ connectionString: prod.url, options: maskOptions(t.mask) });
  await c.connect();
  try {
    const evalRule = async (rule: Parameters<typeof ruleExpression>[0], v: string) => {
      const r = ruleExpression(rule, '$1::text', 'text', { passwordHash: null });
      assert.ok('expr' in r);
      return (await c.query(`SELECT (${r.expr}) AS v`, [v])).rows[0].v as string;
    };
    for (const key of ['elara_pk_gG4c_f298f706e121ebe31', 'elara_pk_-_-abcdefghijklmnop', 'sk_live_XYZ_123_abc']) {
      for (const rule of ['token', { token: 'elara_pk_' }] as const) {
        const out = await evalRule(rule, key);
        assert.equal(out.length, key.length);
        const prefix = typeof rule === 'string' ? /^((?:[a-z]{2,10}[_-]){1,2})/.exec(key)?.[1] ?? '' : key.startsWith(rule.token) ? rule.token : '';
        assert.ok(out.startsWith(prefix), `${out} keeps ${prefix}`);
        assert.match(out.slice(prefix.length), /^[0-9a-f]*$/, `${key} → ${out}: the body is hex only`);
      }
    }
    assert.equal((await evalRule({ token: 'elara_pk_' }, 'elara_pk_gG4c_f298f706e121ebe31')).startsWith('elara_pk_gG4c'), false);
    assert.equal(await evalRule('token', 'x'), await evalRule('token', 'x'), 'deterministic');
  } finally {
    await c.end();
  }
});
