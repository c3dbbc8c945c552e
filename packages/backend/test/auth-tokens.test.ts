// Login, /me, JWT negatives, refresh rotation with reuse detection, logout.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT, UnsecuredJWT, base64url } from 'jose';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';
import { migrateDatabase } from '../src/db/migrate.ts';
import { FAST_ENV, json, registration, startTestServer } from './helpers.ts';
import type { InjectOptions } from 'fastify';
import type { RunningServer } from '../src/server.ts';

const A = '/api/v2/auth';
const key = new TextEncoder().encode(FAST_ENV.JWT_SECRET);

describe('tokens', () => {
  let prod: TestDatabase;
  let server: RunningServer & { logs: { text(): string } };
  const seen: string[] = [];
  let reg: any;
  let body: ReturnType<typeof registration>;

  // Every token and secret the API hands out is kept, to check the logs against at the end.
  const inject = async (opts: InjectOptions) => {
    const res = await server.app.inject(opts);
    for (const m of res.body.matchAll(/"(accessToken|refreshToken|apiSecret)":"([^"]+)"/g)) seen.push(m[2]!);
    return res;
  };
  const me = (token: string) => inject({ url: `${A}/me`, headers: { authorization: `Bearer ${token}` } });
  const refresh = (refreshToken: string) => inject({ method: 'POST', url: `${A}/refresh`, headers: json, payload: { refreshToken } });

  before(async () => {
    prod = await createTestDatabase('backend_tokens_prod');
    await migrateDatabase(prod.url, { outbox: true });
    server = await startTestServer({ DATABASE_URL: prod.url }, 'trace');
    body = registration();
    seen.push(body.password);
    const res = await inject({ method: 'POST', url: `${A}/register`, headers: json, payload: body });
    assert.equal(res.statusCode, 201);
    reg = res.json();
  });
  after(async () => {
    await server?.close();
    await prod?.drop();
  });

  test('GET /me with the access token from registration', async () => {
    const res = await me(reg.accessToken);
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().user.id, reg.user.id);
    assert.equal(res.json().organization.id, reg.organization.id);
    assert.equal(res.json().user.passwordHash, undefined);
  });

  test('access token: HS256, typ at+jwt, iss, aud, 30 min', () => {
    const [h, p] = reg.accessToken.split('.');
    const header = JSON.parse(new TextDecoder().decode(base64url.decode(h)));
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p)));
    assert.deepEqual(header, { alg: 'HS256', typ: 'at+jwt' });
    assert.equal(payload.iss, 'elara');
    assert.equal(payload.aud, 'elara-api');
    assert.equal(payload.exp - payload.iat, 1800);
    assert.equal(payload.sub, reg.user.id);
    assert.equal(payload.email, undefined, 'no PII in the token');
  });

  const valid = () => new SignJWT({ org_id: reg.organization.id, role: 'owner' })
    .setSubject(reg.user.id).setIssuer('elara').setAudience('elara-api').setJti('j1').setIssuedAt();

  const negatives: Array<[string, () => Promise<string>]> = [
    ['alg none', async () => new UnsecuredJWT({ org_id: reg.organization.id }).setSubject(reg.user.id).setIssuer('elara').setAudience('elara-api').setJti('x').setIssuedAt().setExpirationTime('10m').encode()],
    ['wrong key', async () => valid().setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setExpirationTime('10m').sign(new TextEncoder().encode('another-secret-another-secret-another-secret'))],
    ['expired', async () => valid().setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setIssuedAt(Math.floor(Date.now() / 1000) - 3600).setExpirationTime(Math.floor(Date.now() / 1000) - 120).sign(key)],
    ['wrong typ', async () => valid().setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).setExpirationTime('10m').sign(key)],
    ['wrong audience', async () => valid().setAudience('other').setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setExpirationTime('10m').sign(key)],
    ['wrong issuer', async () => valid().setIssuer('evil').setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).setExpirationTime('10m').sign(key)],
    ['other alg (HS512)', async () => valid().setProtectedHeader({ alg: 'HS512', typ: 'at+jwt' }).setExpirationTime('10m').sign(new Uint8Array(64).fill(1))],
    ['tampered payload', async () => { const [h, , s] = reg.accessToken.split('.'); return `${h}.${base64url.encode(JSON.stringify({ sub: reg.user.id, role: 'admin' }))}.${s}`; }],
    ['refresh token used as access token', async () => reg.refreshToken],
    ['garbage', async () => 'not-a-token'],
  ];
  for (const [name, make] of negatives) {
    test(`/me rejects: ${name}`, async () => {
      const res = await me(await make());
      assert.equal(res.statusCode, 401, res.body);
      assert.equal(res.json().statusCode, 401);
      assert.match(res.json().code, /^E_(INVALID_TOKEN|UNAUTHORIZED)$/);
    });
  }

  test('/me without Authorization → 401', async () => {
    const res = await inject({ url: `${A}/me` });
    assert.equal(res.statusCode, 401);
    assert.equal(res.json().code, 'E_UNAUTHORIZED');
  });

  test('login: wrong password and unknown email → the same 401', async () => {
    const a = await inject({ method: 'POST', url: `${A}/login`, headers: json, payload: { email: body.email, password: 'wrong-password-123' } });
    const b = await inject({ method: 'POST', url: `${A}/login`, headers: json, payload: { email: 'nobody@example.com', password: 'wrong-password-123' } });
    assert.equal(a.statusCode, 401);
    assert.deepEqual(a.json(), b.json());
  });

  test('login → tokens; lastLoginAt set', async () => {
    const res = await inject({ method: 'POST', url: `${A}/login`, headers: json, payload: { email: body.email.toUpperCase(), password: body.password } });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.ok(res.json().user.lastLoginAt);
    assert.equal((await me(res.json().accessToken)).statusCode, 200);
  });

  test('refresh rotates; reusing a rotated token revokes the whole family', async () => {
    const r1 = await refresh(reg.refreshToken);
    assert.equal(r1.statusCode, 200, r1.body);
    const t2 = r1.json().refreshToken;
    assert.notEqual(t2, reg.refreshToken);
    assert.equal((await me(r1.json().accessToken)).statusCode, 200);
    const r2 = await refresh(t2);
    assert.equal(r2.statusCode, 200);
    const t3 = r2.json().refreshToken;
    // Replay of the first (rotated) token: reuse → family revoked
    const replay = await refresh(reg.refreshToken);
    assert.equal(replay.statusCode, 401);
    assert.equal(replay.json().code, 'E_TOKEN_REUSED');
    // The newest token of the family no longer works either
    const r3 = await refresh(t3);
    assert.equal(r3.statusCode, 401);
    assert.equal(r3.json().code, 'E_INVALID_TOKEN');
    const rows = await sql(prod.url, `SELECT count(*) FILTER (WHERE "revokedAt" IS NULL)::int AS live FROM "RefreshToken" WHERE "userId" = $1 AND "familyId" = (SELECT "familyId" FROM "RefreshToken" WHERE "replacedById" IS NOT NULL AND "userId" = $1 LIMIT 1)`, [reg.user.id]);
    assert.equal(rows.rows[0].live, 0);
  });

  test('refresh tokens are stored only as hashes', async () => {
    const { rows } = await sql(prod.url, `SELECT "tokenHash" FROM "RefreshToken" WHERE "userId" = $1`, [reg.user.id]);
    assert.ok(rows.length > 0);
    for (const r of rows) {
      assert.match(r.tokenHash, /^[0-9a-f]{64}$/);
      assert.notEqual(r.tokenHash, reg.refreshToken);
    }
  });

  test('an expired refresh token is refused', async () => {
    const login = await inject({ method: 'POST', url: `${A}/login`, headers: json, payload: { email: body.email, password: body.password } });
    const t = login.json().refreshToken;
    const { createHash } = await import('node:crypto');
    await sql(prod.url, `UPDATE "RefreshToken" SET "expiresAt" = now() - interval '1 second' WHERE "tokenHash" = $1`, [createHash('sha256').update(t).digest('hex')]);
    const res = await refresh(t);
    assert.equal(res.statusCode, 401);
  });

  test('logout revokes the session; unknown tokens get the same 204', async () => {
    const login = await inject({ method: 'POST', url: `${A}/login`, headers: json, payload: { email: body.email, password: body.password } });
    const t = login.json().refreshToken;
    const out = await inject({ method: 'POST', url: `${A}/logout`, headers: json, payload: { refreshToken: t } });
    assert.equal(out.statusCode, 204);
    assert.equal((await refresh(t)).statusCode, 401);
    const unknown = await inject({ method: 'POST', url: `${A}/logout`, headers: json, payload: { refreshToken: 'elara_rt_unknown' } });
    assert.equal(unknown.statusCode, 204);
  });

  test('refresh with unknown fields or no token → 400', async () => {
    const res = await inject({ method: 'POST', url: `${A}/refresh`, headers: json, payload: { refreshToken: 'x', extra: 1 } });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().code, 'E_UNKNOWN_FIELD');
  });

  test('the logs (at trace level) contain none of the passwords, tokens or secrets handed out', () => {
    const logs = server.logs.text();
    assert.ok(seen.length >= 10, `collected ${seen.length} secrets`);
    for (const secret of seen) assert.ok(!logs.includes(secret), 'a secret appeared in the logs');
    assert.ok(!logs.includes('$argon2'), 'a password hash appeared in the logs');
    assert.ok(!/authorization/i.test(logs) || !/Bearer ey/.test(logs), 'an Authorization header appeared in the logs');
  });
});
