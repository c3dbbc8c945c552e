// Fixed-window counters in memory, per key. One replica only; with several replicas use a shared
// store (e.g. @fastify/rate-limit with Redis) — noted in the README.
import { ApiError } from './errors.ts';

export class RateLimiter {
  readonly #hits = new Map<string, { count: number; resetAt: number }>();
  readonly #timer: NodeJS.Timeout;

  constructor(readonly limit: number, readonly windowMs: number) {
    this.#timer = setInterval(() => this.#sweep(), Math.min(windowMs, 60_000));
    this.#timer.unref();
  }

  /** Counts one attempt; throws a 429 ApiError with Retry-After when over the limit. */
  hit(key: string, now = Date.now()): void {
    let entry = this.#hits.get(key);
    if (!entry || entry.resetAt <= now) {
      entry = { count: 0, resetAt: now + this.windowMs };
      this.#hits.set(key, entry);
    }
    entry.count++;
    if (entry.count > this.limit) {
      const retryAfter = Math.max(1, Math.ceil((entry.resetAt - now) / 1000));
      throw new ApiError(429, 'E_RATE_LIMITED', `too many attempts; retry after ${retryAfter} s`, undefined,
        { 'retry-after': String(retryAfter) });
    }
  }

  /** Throws the 429 if `key` is already at its limit, without counting this attempt. */
  check(key: string, now = Date.now()): void {
    const entry = this.#hits.get(key);
    if (entry && entry.resetAt > now && entry.count >= this.limit) {
      const retryAfter = Math.max(1, Math.ceil((entry.resetAt - now) / 1000));
      throw new ApiError(429, 'E_RATE_LIMITED', `too many attempts; retry after ${retryAfter} s`, undefined,
        { 'retry-after': String(retryAfter) });
    }
  }

  /** Counts one attempt without throwing (e.g. a failed login, counted after the fact). */
  record(key: string, now = Date.now()): void {
    try { this.hit(key, now); } catch { /* already over the limit; the next check() answers 429 */ }
  }

  close(): void { clearInterval(this.#timer); }

  #sweep(now = Date.now()): void {
    for (const [k, v] of this.#hits) if (v.resetAt <= now) this.#hits.delete(k);
  }
}
