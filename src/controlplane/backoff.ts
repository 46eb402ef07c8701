import { MAX_SERVER_WAIT_MS } from './retry-after.js';

/**
 * Retry timing shared by every loop that talks to the control plane. All delays are jittered
 * (AWS "full jitter", applied after the cap as well) so that a fleet which lost the control plane
 * together does not come back together: after an outage each agent's next attempt is uniform
 * over the cap window.
 */
export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1_000, capMs: 60_000 };

/** Slow lane for a refused token: a human must act, hammering helps nobody. */
export const UNAUTHORIZED_RETRY_MS = 300_000;

export type Random = () => number;

/** Delay before retry number `attempt` (0 = first retry): uniform in [0, min(cap, base * 2^attempt)]. */
export function fullJitter(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: Random = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * The server asked us to wait (429/503 Retry-After): wait at least that long, plus a spread of up
 * to 10 % (at most one cap) so every agent behind one IP does not return in the same second.
 */
export function afterRetryAfter(retryAfterMs: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: Random = Math.random): number {
  // The parser caps already; capped again here because this is where a wait becomes a timer.
  const wait = Number.isFinite(retryAfterMs) ? Math.min(MAX_SERVER_WAIT_MS, Math.max(0, retryAfterMs)) : MAX_SERVER_WAIT_MS;
  return wait + Math.floor(random() * Math.min(policy.capMs, wait * 0.1));
}

/** Steady-state interval with ±5 % jitter, so agents that started together drift apart. */
export function jitteredInterval(intervalMs: number, random: Random = Math.random): number {
  return Math.round(intervalMs * (0.95 + random() * 0.1));
}

/** Delay for a refused token: uniform in [T/2, T]. */
export function unauthorizedDelay(random: Random = Math.random): number {
  return Math.round(UNAUTHORIZED_RETRY_MS * (0.5 + random() * 0.5));
}

export interface FailureFacts {
  kind: 'network' | 'timeout' | 'http' | 'invalid-response' | 'collect-failed';
  status?: number;
  retryAfterMs?: number;
}

/**
 * The one rule for "how long until we try again" after a failed control-plane call, shared by
 * every loop: refused tokens go to the slow lane, Retry-After (429, 503) is a floor, everything
 * else is full-jitter backoff on the attempt count.
 */
export function delayAfterFailure(
  f: FailureFacts,
  attempt: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
  random: Random = Math.random,
): number {
  let delay = fullJitter(attempt, policy, random);
  if (f.kind === 'http' && (f.status === 401 || f.status === 403)) delay = Math.max(policy.capMs, unauthorizedDelay(random));
  const honoursRetryAfter = f.kind === 'http' && (f.status === 429 || f.status === 503);
  if (honoursRetryAfter && f.retryAfterMs !== undefined) delay = Math.max(delay, afterRetryAfter(f.retryAfterMs, policy, random));
  return delay;
}
