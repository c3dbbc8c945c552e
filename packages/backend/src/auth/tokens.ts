// Access tokens: JWT, HS256 pinned, 30 minutes, typ at+jwt, iss/aud/exp checked with ≤ 30 s skew.
// Refresh tokens are opaque (see secrets.ts) and live 7 days, absolute.
import { randomUUID } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';

export const ACCESS_TOKEN_TTL_SECONDS = 30 * 60;
export const REFRESH_TOKEN_TTL_SECONDS = 7 * 24 * 60 * 60;
const ALG = 'HS256';
const TYP = 'at+jwt';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface AccessClaims {
  sub: string;
  orgId: string;
  role: string;
}

export interface TokenSigner {
  signAccess(claims: AccessClaims): Promise<string>;
  /** Throws on any problem (bad signature, alg, typ, iss, aud, expiry, shape). */
  verifyAccess(token: string): Promise<AccessClaims & { jti: string }>;
}

export function createTokenSigner(opts: { secret: string; issuer: string; audience: string }): TokenSigner {
  const key = new TextEncoder().encode(opts.secret);
  return {
    async signAccess(c) {
      return new SignJWT({ org_id: c.orgId, role: c.role })
        .setProtectedHeader({ alg: ALG, typ: TYP })
        .setSubject(c.sub)
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime(`${ACCESS_TOKEN_TTL_SECONDS}s`)
        .sign(key);
    },
    async verifyAccess(token) {
      const { payload } = await jwtVerify(token, key, {
        algorithms: [ALG],
        issuer: opts.issuer,
        audience: opts.audience,
        typ: TYP,
        clockTolerance: 30,
        maxTokenAge: `${ACCESS_TOKEN_TTL_SECONDS + 30}s`,
        requiredClaims: ['sub', 'exp', 'iat', 'jti'],
      });
      // A well-signed token with a malformed subject is still an invalid token (401), never a
      // database error: ids are UUIDs, checked before they reach a query.
      if (typeof payload.sub !== 'string' || !UUID.test(payload.sub) || typeof payload.org_id !== 'string' || typeof payload.jti !== 'string') {
        throw new Error('access token claims malformed');
      }
      return { sub: payload.sub, orgId: payload.org_id, role: String(payload.role ?? 'member'), jti: payload.jti };
    },
  };
}
