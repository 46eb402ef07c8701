import type { RateLimitOptions } from './types.js';

export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/**
 * Per-client fixed windows, like express-rate-limit's MemoryStore: a client's window opens at
 * its first request and every request (rejected ones included) counts.
 */
export class FixedWindowLimiter {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #windows = new Map<string, { count: number; resetAt: number }>();
  #lastSweep = 0;

  constructor(opts: RateLimitOptions) {
    if (!Number.isInteger(opts.max) || opts.max < 0) throw new RangeError('rateLimit.max must be a non-negative integer');
    if (!Number.isFinite(opts.windowMs) || opts.windowMs <= 0) throw new RangeError('rateLimit.windowMs must be positive');
    this.#max = opts.max;
    this.#windowMs = opts.windowMs;
  }

  hit(client: string, now: number = Date.now()): RateDecision {
    this.#sweep(now);
    let window = this.#windows.get(client);
    if (window === undefined || window.resetAt <= now) {
      window = { count: 0, resetAt: now + this.#windowMs };
      this.#windows.set(client, window);
    }
    window.count++;
    if (window.count <= this.#max) return { allowed: true };
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((window.resetAt - now) / 1000)) };
  }

  /** Number of clients with a window open; exposed so tests can see expired windows go. */
  get size(): number {
    return this.#windows.size;
  }

  // At most one full pass per window length keeps the map bounded by the clients seen in the
  // last two windows without making every request O(clients).
  #sweep(now: number): void {
    if (now - this.#lastSweep < this.#windowMs) return;
    this.#lastSweep = now;
    for (const [client, window] of this.#windows) {
      if (window.resetAt <= now) this.#windows.delete(client);
    }
  }
}
