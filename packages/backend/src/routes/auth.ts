// /api/v2/auth: register, login, refresh, logout, me, and erasure (DELETE /me).
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest, RouteShorthandOptions } from 'fastify';
import { and, eq, isNull, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { AppDeps } from '../deps.ts';
import { ApiError, validationError } from '../errors.ts';
import * as schema from '../db/schema.ts';
import { ACCESS_TOKEN_TTL_SECONDS, REFRESH_TOKEN_TTL_SECONDS } from '../auth/tokens.ts';
import { generateApiKey, generateApiSecret, generateRefreshToken, sha256 } from '../auth/secrets.ts';
import { enqueueErasureSync, enqueueRegistrationSync, removeRegistrationJobs } from '../sync/outbox.ts';
import type { Database, Tx } from '../db/client.ts';

// No control characters (NUL cannot be stored in PostgreSQL text; the rest only cause trouble).
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const noControl = (s: string) => !/[\u0000-\u001f\u007f]/.test(s);
const name = (max: number) => z.string().transform((s) => s.normalize('NFC').trim())
  .pipe(z.string().min(1, 'must not be empty').max(max, `must be at most ${max} characters`))
  .refine(noControl, 'must not contain control characters');
const email = z.string().max(254, 'must be at most 254 characters').transform((s) => s.trim().toLowerCase())
  .pipe(z.email('must be a valid email address'));
// ASVS 6.2: length only, no composition rules, no truncation; capped to bound hashing cost.
const password = z.string().min(12, 'must be at least 12 characters').max(128, 'must be at most 128 characters');

export const registerBody = z.strictObject({
  email,
  password,
  organizationName: name(100),
  firstName: name(100).optional(),
  lastName: name(100).optional(),
});
const loginBody = z.strictObject({ email, password: z.string().min(1).max(128) });
const refreshBody = z.strictObject({ refreshToken: z.string().min(1).max(200) });
// The password is re-entered to erase: a stolen access token alone must not delete an account.
const eraseBody = z.strictObject({ password: z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters') });

function parse<T extends z.ZodType>(schemaT: T, body: unknown): z.infer<T> {
  const r = schemaT.safeParse(body ?? undefined);
  if (!r.success) {
    if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new ApiError('E_VALIDATION', 'the body must be a JSON object', { details: [{ field: '(body)', message: 'expected a JSON object' }] });
    }
    throw validationError(r.error);
  }
  return r.data;
}

export function publicUser(u: schema.User) {
  return {
    id: u.id, email: u.email, firstName: u.firstName, lastName: u.lastName, role: u.role,
    organizationId: u.organizationId, isActive: u.isActive, emailVerified: u.emailVerified,
    lastLoginAt: u.lastLoginAt, createdAt: u.createdAt, updatedAt: u.updatedAt,
  };
}

export function publicOrganization(o: schema.Organization) {
  return { id: o.id, name: o.name, tier: o.tier, apiKey: o.apiKey, isActive: o.isActive, createdAt: o.createdAt, updatedAt: o.updatedAt };
}

/** SQLSTATE of a pg error, also when wrapped (drizzle wraps driver errors in DrizzleQueryError). */
export function pgErrorOf(err: unknown): { code?: string; constraint?: string } {
  for (let e = err, i = 0; e && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return { code, constraint: (e as { constraint?: string }).constraint };
  }
  return {};
}

const auditContext = (req: FastifyRequest) => ({
  ip: req.ip, userAgent: req.headers['user-agent']?.slice(0, 300) ?? null, requestId: String(req.id),
});

export async function authRoutes(app: FastifyInstance, opts: { deps: AppDeps; db: Database }): Promise<void> {
  const { deps, db } = opts;
  const { config } = deps;
  // @fastify/rate-limit (registered in app.ts, memory or Redis). Per client IP and route, on every
  // auth POST; per email for registrations; per email *and* IP for failed logins, so a stranger
  // guessing someone's password locks out only themselves, never the owner logging in from
  // elsewhere (the per-IP limit bounds how fast any one client can guess).
  const perIp: RouteShorthandOptions = {
    config: { rateLimit: { max: config.rateLimit.ipPerMinute, timeWindow: 60_000, keyGenerator: (req: FastifyRequest) => req.ip } },
  };
  const limitKeys = new WeakMap<FastifyRequest, string>();
  const byKey = { keyGenerator: (req: FastifyRequest) => limitKeys.get(req)!, max: config.rateLimit.emailPerHour, timeWindow: 3_600_000 };
  const registrationLimit = app.createRateLimit(byKey);
  const failedLoginLimit = app.createRateLimit(byKey);
  const tooMany = (ttlMs: number) => {
    const s = Math.max(1, Math.ceil(ttlMs / 1000));
    return new ApiError('E_RATE_LIMITED', `too many attempts; retry after ${s} s`, { headers: { 'retry-after': String(s) } });
  };

  // Auth responses carry tokens and secrets: never cache them.
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('cache-control', 'no-store');
    return payload;
  });

  async function issueRefreshToken(tx: Tx, userId: string, familyId: string): Promise<{ token: string; id: string }> {
    const token = generateRefreshToken();
    const [row] = await tx.insert(schema.refreshToken).values({
      tokenHash: sha256(token), familyId, userId, expiresAt: new Date(Date.now() + REFRESH_TOKEN_TTL_SECONDS * 1000),
    }).returning({ id: schema.refreshToken.id });
    return { token, id: row!.id };
  }

  /** The claims of the request's access token; 401 in our shape when there is none or it is bad. */
  async function authenticate(req: FastifyRequest) {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer ([A-Za-z0-9_\-.]{1,4096})$/.exec(header);
    if (!m) throw new ApiError('E_UNAUTHORIZED', 'send an access token as "Authorization: Bearer <token>"', { headers: { 'www-authenticate': 'Bearer' } });
    try {
      return await deps.tokens.verifyAccess(m[1]!);
    } catch {
      throw new ApiError('E_INVALID_TOKEN', 'access token is invalid or expired', { headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
    }
  }
  // A well-signed token whose user is gone (erased) or deactivated.
  const staleToken = () => new ApiError('E_INVALID_TOKEN', 'access token is invalid or expired', { headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });

  const accessFor = (u: schema.User) => deps.tokens.signAccess({ sub: u.id, orgId: u.organizationId, role: u.role });

  app.post('/register', perIp, async (req, reply) => {
    const body = parse(registerBody, req.body);
    limitKeys.set(req, `register|${body.email}`);
    const limited = await registrationLimit(req);
    if (!limited.isAllowed && limited.isExceeded) throw tooMany(limited.ttl);
    const passwordHash = await deps.hasher.hash(body.password);
    const apiSecret = generateApiSecret();
    let result;
    try {
      result = await db.transaction(async (tx) => {
        const [org] = await tx.insert(schema.organization).values({
          name: body.organizationName, apiKey: generateApiKey(), apiSecret: sha256(apiSecret),
        }).returning();
        const [user] = await tx.insert(schema.user).values({
          email: body.email, passwordHash, firstName: body.firstName ?? null, lastName: body.lastName ?? null,
          role: 'owner', organizationId: org!.id,
        }).returning();
        const refresh = await issueRefreshToken(tx, user!.id, randomUUID());
        await tx.insert(schema.auditLog).values({
          action: 'user.register', outcome: 'success', userId: user!.id, organizationId: org!.id, ...auditContext(req),
          details: { tier: org!.tier },
        });
        if (deps.stagingPool) {
          await tx.execute(enqueueRegistrationSync({
            organizationId: org!.id, userId: user!.id, email: user!.email, organizationName: org!.name,
          }, config.sync.maxAttempts));
        }
        return { org: org!, user: user!, refresh };
      });
    } catch (err) {
      const { code, constraint } = pgErrorOf(err);
      if (code === '23505' && (constraint === 'User_email_unique' || !constraint)) {
        throw new ApiError('E_EMAIL_TAKEN', 'an account with this email already exists');
      }
      throw err;
    }
    // Test-only fault injection: die between the production commit and the response.
    if (config.failpoint === 'after_prod_commit') process.kill(process.pid, 'SIGKILL');
    req.log.info({ userId: result.user.id, organizationId: result.org.id }, 'registered');
    return reply.code(201).send({
      user: publicUser(result.user),
      organization: publicOrganization(result.org),
      apiSecret,
      accessToken: await accessFor(result.user),
      refreshToken: result.refresh.token,
      expiresIn: ACCESS_TOKEN_TTL_SECONDS,
    });
  });

  app.post('/login', perIp, async (req) => {
    const body = parse(loginBody, req.body);
    // Only failed logins count (a user who logs in often is not throttled); checked without counting.
    limitKeys.set(req, `login-failed|${body.email}|${req.ip}`);
    const failures = await failedLoginLimit(req, { increment: false });
    if (!failures.isAllowed && failures.remaining === 0) throw tooMany(failures.ttl);
    const [user] = await db.select().from(schema.user).where(eq(schema.user.email, body.email)).limit(1);
    if (!user || !user.isActive) {
      await deps.hasher.dummyVerify(body.password);
      await failedLoginLimit(req);
      throw new ApiError('E_INVALID_CREDENTIALS', 'email or password is wrong');
    }
    const ok = await deps.hasher.verify(user.passwordHash, body.password);
    if (!ok) {
      await failedLoginLimit(req);
      await db.insert(schema.auditLog).values({ action: 'user.login', outcome: 'failure', userId: user.id, organizationId: user.organizationId, ...auditContext(req) });
      throw new ApiError('E_INVALID_CREDENTIALS', 'email or password is wrong');
    }
    const { updated, refresh } = await db.transaction(async (tx) => {
      const [updated] = await tx.update(schema.user).set({ lastLoginAt: new Date() }).where(eq(schema.user.id, user.id)).returning();
      const refresh = await issueRefreshToken(tx, user.id, randomUUID());
      await tx.insert(schema.auditLog).values({ action: 'user.login', outcome: 'success', userId: user.id, organizationId: user.organizationId, ...auditContext(req) });
      return { updated: updated!, refresh };
    });
    return { user: publicUser(updated), accessToken: await accessFor(updated), refreshToken: refresh.token, expiresIn: ACCESS_TOKEN_TTL_SECONDS };
  });

  app.post('/refresh', perIp, async (req) => {
    const body = parse(refreshBody, req.body);
    const hash = sha256(body.refreshToken);
    // Reuse detection must commit the family revocation, so outcomes are returned, not thrown.
    const outcome = await db.transaction(async (tx) => {
      const [row] = await tx.select().from(schema.refreshToken).where(eq(schema.refreshToken.tokenHash, hash)).for('update').limit(1);
      if (!row) return { kind: 'invalid' as const };
      if (row.revokedAt) {
        if (row.replacedById) {
          await tx.update(schema.refreshToken).set({ revokedAt: new Date() })
            .where(and(eq(schema.refreshToken.familyId, row.familyId), isNull(schema.refreshToken.revokedAt)));
          await tx.insert(schema.auditLog).values({ action: 'token.reuse', outcome: 'family_revoked', userId: row.userId, ...auditContext(req) });
          return { kind: 'reused' as const };
        }
        return { kind: 'invalid' as const };
      }
      if (row.expiresAt.getTime() <= Date.now()) return { kind: 'invalid' as const };
      const [user] = await tx.select().from(schema.user).where(eq(schema.user.id, row.userId)).limit(1);
      if (!user || !user.isActive) return { kind: 'invalid' as const };
      const next = await issueRefreshToken(tx, user.id, row.familyId);
      await tx.update(schema.refreshToken).set({ revokedAt: new Date(), replacedById: next.id }).where(eq(schema.refreshToken.id, row.id));
      return { kind: 'ok' as const, user, token: next.token };
    });
    if (outcome.kind === 'reused') throw new ApiError('E_TOKEN_REUSED', 'this refresh token was already used; all sessions of its family are revoked, log in again');
    if (outcome.kind === 'invalid') throw new ApiError('E_INVALID_TOKEN', 'refresh token is invalid, expired or revoked');
    return { accessToken: await accessFor(outcome.user), refreshToken: outcome.token, expiresIn: ACCESS_TOKEN_TTL_SECONDS };
  });

  app.post('/logout', perIp, async (req, reply) => {
    const body = parse(refreshBody, req.body);
    const [row] = await db.select({ familyId: schema.refreshToken.familyId, userId: schema.refreshToken.userId })
      .from(schema.refreshToken).where(eq(schema.refreshToken.tokenHash, sha256(body.refreshToken))).limit(1);
    if (row) {
      await db.update(schema.refreshToken).set({ revokedAt: sql`now()` })
        .where(and(eq(schema.refreshToken.familyId, row.familyId), isNull(schema.refreshToken.revokedAt)));
      await db.insert(schema.auditLog).values({ action: 'user.logout', outcome: 'success', userId: row.userId, ...auditContext(req) });
    }
    // Same answer for unknown tokens: logout reveals nothing.
    return reply.code(204).send();
  });

  app.get('/me', async (req) => {
    const claims = await authenticate(req);
    const rows = await db.select().from(schema.user)
      .innerJoin(schema.organization, eq(schema.organization.id, schema.user.organizationId))
      .where(eq(schema.user.id, claims.sub)).limit(1);
    const row = rows[0];
    if (!row || !row.User.isActive) throw new ApiError('E_INVALID_TOKEN', 'access token is invalid or expired');
    return { user: publicUser(row.User), organization: publicOrganization(row.Organization) };
  });

  // Erasure (GDPR Art. 17), see docs/privacy.md. One production transaction deletes the user and
  // their refresh tokens (deleted here to count them; the FK would cascade), the organization with
  // its API key when the user was its last member, strips the IP and user agent from the user's
  // earlier audit rows, writes an audit row without personal data, drops the user's waiting
  // registration jobs, and enqueues the staging delete (the outbox). Rate-limited
  // like logins: wrong passwords count against the same per-email-and-IP budget as failed logins,
  // so a stolen access token gives no extra guesses.
  app.delete('/me', perIp, async (req, reply) => {
    const claims = await authenticate(req);
    const body = parse(eraseBody, req.body);
    const [user] = await db.select().from(schema.user).where(eq(schema.user.id, claims.sub)).limit(1);
    if (!user || !user.isActive) throw staleToken();
    limitKeys.set(req, `login-failed|${user.email}|${req.ip}`);
    const failures = await failedLoginLimit(req, { increment: false });
    if (!failures.isAllowed && failures.remaining === 0) throw tooMany(failures.ttl);
    if (!(await deps.hasher.verify(user.passwordHash, body.password))) {
      await failedLoginLimit(req);
      await db.insert(schema.auditLog).values({ action: 'user.erase', outcome: 'failure', userId: user.id, organizationId: user.organizationId, ...auditContext(req) });
      throw new ApiError('E_INVALID_CREDENTIALS', 'the password is wrong; nothing was erased');
    }
    const outcome = await db.transaction(async (tx) => {
      // The organization is locked before its members are counted: two last members erasing at
      // once take turns here, and exactly one of them takes the organization along.
      await tx.select({ id: schema.organization.id }).from(schema.organization).where(eq(schema.organization.id, user.organizationId)).for('update');
      const [locked] = await tx.select().from(schema.user).where(eq(schema.user.id, user.id)).for('update');
      // Erased meanwhile (a second request), or the password changed since it was checked.
      if (!locked || !locked.isActive || locked.organizationId !== user.organizationId) return { kind: 'gone' as const };
      if (locked.passwordHash !== user.passwordHash) return { kind: 'changed' as const };
      const [others] = await tx.select({ n: sql<number>`count(*)::int` }).from(schema.user)
        .where(and(eq(schema.user.organizationId, user.organizationId), sql`${schema.user.id} <> ${user.id}`));
      const lastMember = others!.n === 0;
      // The user's earlier audit rows stay (security record) but lose the link to the person:
      // userId goes by ON DELETE SET NULL below, IP and user agent here.
      await tx.update(schema.auditLog).set({ ip: null, userAgent: null }).where(eq(schema.auditLog.userId, user.id));
      const revoked = await tx.delete(schema.refreshToken).where(eq(schema.refreshToken.userId, user.id)).returning({ id: schema.refreshToken.id });
      await tx.delete(schema.user).where(eq(schema.user.id, user.id));
      if (lastMember) await tx.delete(schema.organization).where(eq(schema.organization.id, user.organizationId));
      // No personal data: no email, name, IP or user agent. The ids are random UUIDs that nothing
      // in production maps to the person any more; they say which erasure this was, so it can be
      // proven (docs/privacy.md) and the staging job traced.
      await tx.insert(schema.auditLog).values({
        action: 'user.erase', outcome: 'success', userId: null,
        organizationId: lastMember ? null : user.organizationId,
        ip: null, userAgent: null, requestId: String(req.id),
        details: { erasedUserId: user.id, organizationId: user.organizationId, organizationErased: lastMember, refreshTokensRevoked: revoked.length },
      });
      // Registration jobs still waiting carry the email in their payload.
      await tx.execute(removeRegistrationJobs(user.id));
      if (deps.stagingPool) {
        await tx.execute(enqueueErasureSync({ userId: user.id, organizationId: user.organizationId }, config.sync.maxAttempts));
      }
      return { kind: 'erased' as const, lastMember };
    });
    if (outcome.kind === 'gone') throw staleToken();
    if (outcome.kind === 'changed') throw new ApiError('E_INVALID_CREDENTIALS', 'the password is wrong; nothing was erased');
    req.log.info({ userId: user.id, organizationId: user.organizationId, organizationErased: outcome.lastMember }, 'account erased');
    return reply.code(204).send();
  });
}
