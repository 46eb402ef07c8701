import { describe, expect, it } from 'vitest';
import { afterRetryAfter, fullJitter, jitteredInterval, unauthorizedDelay, UNAUTHORIZED_RETRY_MS } from '../../src/agent/backoff.js';
import { parseRetryAfter } from '../../src/agent/retry-after.js';

const policy = { baseMs: 1000, capMs: 60_000 };

describe('full-jitter backoff', () => {
  it('doubles the ceiling each attempt up to the cap', () => {
    const top = () => 0.999999;
    expect([0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) => Math.round(fullJitter(a, policy, top) / 1000))).toEqual([1, 2, 4, 8, 16, 32, 60, 60, 60]);
  });

  it('applies jitter after the cap too: delays at the cap spread over the whole window', () => {
    const samples = Array.from({ length: 2000 }, () => fullJitter(50, policy));
    expect(Math.max(...samples)).toBeLessThanOrEqual(60_000);
    expect(Math.min(...samples)).toBeLessThan(6_000);
    // Roughly uniform: each tenth of the window gets a fair share.
    const buckets = new Array(10).fill(0);
    for (const s of samples) buckets[Math.min(9, Math.floor(s / 6000))]++;
    for (const b of buckets) expect(b).toBeGreaterThan(100);
  });

  it('never overflows on huge attempt counts', () => {
    expect(Number.isFinite(fullJitter(10_000, policy, () => 0.5))).toBe(true);
  });
});

describe('Retry-After', () => {
  it('parses delta-seconds into milliseconds', () => {
    expect(parseRetryAfter('900')).toBe(900_000);
  });

  it('parses an HTTP-date relative to now', () => {
    const now = Date.parse('2026-11-25T10:00:00Z');
    expect(parseRetryAfter('Wed, 25 Nov 2026 10:00:30 GMT', now)).toBe(30_000);
  });

  it('ignores garbage', () => {
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });

  it('waits at least Retry-After and spreads agents over at most 10 % more', () => {
    expect(afterRetryAfter(900_000, policy, () => 0)).toBe(900_000);
    expect(afterRetryAfter(900_000, policy, () => 0.999)).toBeLessThanOrEqual(960_000);
    expect(afterRetryAfter(2_000, policy, () => 0.999)).toBeLessThanOrEqual(2_200);
  });
});

describe('steady-state and refused-token delays', () => {
  it('interval jitter stays within ±5 %', () => {
    expect(jitteredInterval(30_000, () => 0)).toBe(28_500);
    expect(jitteredInterval(30_000, () => 1)).toBe(31_500);
  });

  it('a refused token is retried slowly', () => {
    expect(unauthorizedDelay(() => 0)).toBe(UNAUTHORIZED_RETRY_MS / 2);
    expect(unauthorizedDelay(() => 1)).toBe(UNAUTHORIZED_RETRY_MS);
  });
});
