// Named targets (elara-sync.yml `targets:`): which database, raw or anonymized, whole or a subset.
// Resolving one checks what it needs from the environment (its URL, ELARA_SYNC_MASK_KEY for an
// anonymized target, ELARA_TEST_PASSWORD for the password_hash rule) and turns it into what the
// table plans need (PlanTarget) and what source sessions need (the mask key's HMAC pads).
import { createHash, createHmac } from 'node:crypto';
import { Algorithm, hash as argon2 } from '@node-rs/argon2';
import { SyncError } from '../errors.ts';
import type { PlanTarget } from '../plan/table-plan.ts';
import type { SubsetConfig } from '../plan/subset.ts';

export interface TargetConfig {
  name: string;
  /** As written in the file (may hold ${NAME}); expanded when the target is resolved. */
  url: string | null;
  anonymize: boolean;
  subset: SubsetConfig | null;
}

export interface ResolvedTarget {
  name: string;
  url: string;
  anonymize: boolean;
  subset: SubsetConfig | null;
  /** The HMAC key's pads, sent to production in the connection's startup options, never in SQL. */
  mask: Mask | null;
  testPassword: string | null;
}

export interface Mask {
  ipadHex: string;
  opadHex: string;
  /** A fingerprint of the key for the plan signature (not reversible to the key). */
  sig: string;
  key: string;
}

/** The default target when the config names none: staging, at STAGING_DATABASE_URL. */
export const DEFAULT_TARGETS: TargetConfig[] = [{ name: 'staging', url: '${STAGING_DATABASE_URL}', anonymize: false, subset: null }];

/** Expands ${NAME} from the environment; null when a referenced variable is unset or empty. */
export function expandUrl(url: string | null, env: NodeJS.ProcessEnv): string | null {
  if (!url) return null;
  let missing = false;
  const out = url.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (!v) missing = true;
    return v ?? '';
  });
  return missing ? null : out;
}

/** The variables a target's URL refers to, for messages. */
export const urlVariables = (url: string | null) => [...(url ?? '').matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]!);

/** HMAC-SHA256 key pads (RFC 2104): the key (hashed if longer than the block) XOR 0x36 / 0x5c. */
export function maskFromKey(key: string): Mask {
  let k = Buffer.from(key, 'utf8');
  if (k.length > 64) k = createHash('sha256').update(k).digest();
  const block = Buffer.alloc(64);
  k.copy(block);
  const pad = (x: number) => Buffer.from(block.map((b) => b ^ x)).toString('hex');
  return { ipadHex: pad(0x36), opadHex: pad(0x5c), sig: createHmac('sha256', key).update('elara-sync plan signature').digest('hex').slice(0, 16), key };
}

/** The startup options a source connection needs for the mask rules (hex only: nothing to escape). */
export function maskOptions(mask: Mask | null): string | undefined {
  return mask ? `-c elara.mask_i=${mask.ipadHex} -c elara.mask_o=${mask.opadHex}` : undefined;
}

/**
 * Picks a target: `name` (default staging, or the only one configured), its URL from the file
 * (with ${NAME} expanded) unless `to` overrides it. Errors name what is missing and how to set it.
 */
export function resolveTarget(targets: TargetConfig[], name: string | undefined, opts: { to?: string; env: NodeJS.ProcessEnv; requireMask?: boolean }): ResolvedTarget {
  const wanted = name ?? (targets.some((t) => t.name === 'staging') ? 'staging' : targets.length === 1 ? targets[0]!.name : 'staging');
  const t = targets.find((x) => x.name === wanted);
  if (!t) {
    throw new SyncError('E_CONFIG', `there is no target "${wanted}" in elara-sync.yml (targets: ${targets.map((x) => x.name).join(', ')})`,
      'name one of the configured targets with --target, or add it under targets:');
  }
  const url = opts.to ?? expandUrl(t.url, opts.env);
  if (!url) {
    const vars = urlVariables(t.url);
    throw new SyncError('E_CONFIG', `target ${t.name} has no database URL${vars.length ? `: ${vars.join(', ')} is not set` : ''}`,
      vars.length ? `set ${vars.join(' and ')}, or pass --to` : `give targets.${t.name}.url, or pass --to`);
  }
  let mask: Mask | null = null;
  if (t.anonymize && opts.requireMask !== false) {
    const key = opts.env.ELARA_SYNC_MASK_KEY;
    if (!key || key.length < 16) {
      throw new SyncError('E_CONFIG', `target ${t.name} is anonymized, but ELARA_SYNC_MASK_KEY is ${key ? 'shorter than 16 characters' : 'not set'}; nothing was read or written`,
        'set ELARA_SYNC_MASK_KEY to a secret of at least 16 random characters (the same key gives the same masked values on every run and target)');
    }
    mask = maskFromKey(key);
  }
  return { name: t.name, url, anonymize: t.anonymize, subset: t.subset, mask, testPassword: opts.env.ELARA_TEST_PASSWORD || null };
}

const passwordHashes = new Map<string, Promise<string>>();

/**
 * What the plans need from a target. The password_hash rule's value is argon2id of
 * ELARA_TEST_PASSWORD (the backend's parameters) with a salt derived from the mask key: the same
 * hash on every run (so rows are not rewritten each time), and one QA can log in with.
 */
export async function planTargetFor(t: ResolvedTarget): Promise<PlanTarget> {
  let passwordHash: string | null = null;
  if (t.anonymize && t.testPassword && t.mask) {
    const cacheKey = `${t.mask.sig}|${createHash('sha256').update(t.testPassword).digest('hex')}`;
    if (!passwordHashes.has(cacheKey)) {
      const salt = createHmac('sha256', t.mask.key).update('elara-sync test password salt').digest().subarray(0, 16);
      passwordHashes.set(cacheKey, argon2(t.testPassword, { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1, salt }));
    }
    passwordHash = await passwordHashes.get(cacheKey)!;
  }
  return { name: t.name, anonymize: t.anonymize, maskSig: t.mask?.sig ?? null, passwordHash, subset: t.subset };
}
