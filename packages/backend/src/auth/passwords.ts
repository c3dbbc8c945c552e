// argon2id at the OWASP minimum (m=19 MiB, t=2, p=1), passed explicitly rather than relying on the
// library's defaults. A semaphore bounds concurrent hashes so a burst of /register cannot take all
// memory (19 MiB each) and CPU.
import { Algorithm, hash, verify } from '@node-rs/argon2';

export const ARGON2_OPTIONS = Object.freeze({
  algorithm: Algorithm.Argon2id,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
});

export class Semaphore {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(size: number) { this.#free = size; }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  verify(passwordHash: string, password: string): Promise<boolean>;
  /** Spends the same time as a verify, for unknown emails (no timing oracle). */
  dummyVerify(password: string): Promise<void>;
}

export function createPasswordHasher(concurrency: number): PasswordHasher {
  const sem = new Semaphore(concurrency);
  let dummy: Promise<string> | null = null;
  return {
    hash: (password) => sem.run(() => hash(password, ARGON2_OPTIONS)),
    verify: (passwordHash, password) => sem.run(async () => {
      try {
        return await verify(passwordHash, password);
      } catch {
        return false;
      }
    }),
    async dummyVerify(password) {
      dummy ??= hash('elara-dummy-password-for-timing', ARGON2_OPTIONS);
      const h = await dummy;
      await sem.run(() => verify(h, password).catch(() => false));
    },
  };
}
