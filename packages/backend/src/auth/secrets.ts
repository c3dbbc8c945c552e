// API keys, API secrets and refresh tokens: random, high-entropy values. Being high-entropy, a fast
// SHA-256 is enough to store them; only the hash is ever written to the database.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const sha256 = (value: string): string => createHash('sha256').update(value, 'utf8').digest('hex');

/** Public identifier of an organization's API credentials (greppable prefix). */
export const generateApiKey = (): string => `elara_pk_${randomBytes(16).toString('base64url')}`;

/** 32 random bytes; returned to the user once, stored as sha256 only. */
export const generateApiSecret = (): string => `elara_sk_${randomBytes(32).toString('base64url')}`;

/** Opaque refresh token (not a JWT, so it can never pass as an access token). */
export const generateRefreshToken = (): string => `elara_rt_${randomBytes(32).toString('base64url')}`;

export function safeEqualHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
