import { describe, expect, it } from 'vitest';
import {
  afterRetryAfter,
  delayAfterFailure,
  fullJitter,
  jitteredInterval,
  unauthorizedDelay,
  UNAUTHORIZED_RETRY_MS,
} from '../../src/controlplane/backoff.js';
import { MAX_SERVER_WAIT_MS, parseRateLimitReset, parseRetryAfter, serverRequestedWaitMs } from '../../src/controlplane/retry-after.js';
import { MAX_TIMER_MS, TimerLoop, timerDelay } from '../../src/util/timer-loop.js';

const policy = { baseMs: 1000, capMs: 60_000 };

describe('full-jitter backoff', () => {
  it('doubles the ceiling each attempt up to the cap', () => {
    const top = () => 0.999999;
    expect([0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) => Math.round(fullJitter(a, policy, top) / 1000))).toEqual([
      1, 2, 4, 8, 16, 32, 60, 60, 60,
    ]);
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

  it('caps huge delta-seconds at 15 minutes: nothing past the 32-bit timer range, no day-long silence', () => {
    expect(MAX_SERVER_WAIT_MS).toBe(900_000);
    expect(parseRetryAfter('99999999999')).toBe(MAX_SERVER_WAIT_MS);
    expect(parseRetryAfter('86400')).toBe(MAX_SERVER_WAIT_MS);
    expect(parseRetryAfter('9'.repeat(400))).toBe(MAX_SERVER_WAIT_MS);
    expect(parseRetryAfter('0')).toBe(0);
  });

  it('caps far-future HTTP dates, and a date in the past means now', () => {
    const now = Date.parse('2026-11-25T10:00:00Z');
    expect(parseRetryAfter('Fri, 01 Jan 9999 00:00:00 GMT', now)).toBe(MAX_SERVER_WAIT_MS);
    expect(parseRetryAfter('Sun, 06 Dec 2026 10:00:00 GMT', now)).toBe(MAX_SERVER_WAIT_MS);
    expect(parseRetryAfter('Sunday, 06-Nov-94 08:49:37 GMT', now)).toBe(0);
    expect(parseRetryAfter('Wed Nov 25 10:00:30 2026', now)).toBe(30_000);
  });

  it('refuses negative, fractional, exponent and other garbage instead of reading it as a date', () => {
    // Date.parse takes "-5" and "5.5" as dates in 2001; neither is a Retry-After.
    for (const v of ['-5', '5.5', '1e3', '', ' ', 'soon', 'Fri, 31 Dec 275760 23:59:59 GMT', '0x10', 'Infinity']) {
      expect(parseRetryAfter(v), JSON.stringify(v)).toBeUndefined();
    }
  });

  it('waits at least Retry-After and spreads agents over at most 10 % more', () => {
    expect(afterRetryAfter(900_000, policy, () => 0)).toBe(900_000);
    expect(afterRetryAfter(900_000, policy, () => 0.999)).toBeLessThanOrEqual(960_000);
    expect(afterRetryAfter(2_000, policy, () => 0.999)).toBeLessThanOrEqual(2_200);
  });
});

describe('rate-limit window end (RateLimit-Reset)', () => {
  it('reads draft-6 RateLimit-Reset and draft-7 RateLimit reset=, capped', () => {
    expect(parseRateLimitReset({ 'ratelimit-reset': '42' })).toBe(42_000);
    expect(parseRateLimitReset({ ratelimit: 'limit=200, remaining=0, reset=7' })).toBe(7_000);
    expect(parseRateLimitReset({ 'ratelimit-reset': '99999999999' })).toBe(MAX_SERVER_WAIT_MS);
    expect(parseRateLimitReset({ 'ratelimit-reset': '-3' })).toBeUndefined();
    expect(parseRateLimitReset({ 'ratelimit-reset': 'soon', ratelimit: 'reset=x' })).toBeUndefined();
  });

  it('on a 429 the sooner of Retry-After and the window end wins (SkyPanelV2 always says 900 s)', () => {
    expect(serverRequestedWaitMs(429, { 'retry-after': '900', 'ratelimit-reset': '3' })).toBe(3_000);
    expect(serverRequestedWaitMs(429, { 'retry-after': '2', 'ratelimit-reset': '30' })).toBe(2_000);
    expect(serverRequestedWaitMs(429, { 'ratelimit-reset': '5' })).toBe(5_000);
    expect(serverRequestedWaitMs(429, { 'retry-after': '900', 'ratelimit-reset': 'garbage' })).toBe(900_000);
  });

  it('on a 503 rate-limit headers are not what refused us: only Retry-After counts', () => {
    expect(serverRequestedWaitMs(503, { 'retry-after': '120', 'ratelimit-reset': '3' })).toBe(120_000);
    expect(serverRequestedWaitMs(503, { 'ratelimit-reset': '3' })).toBeUndefined();
  });
});

describe('no wait can overflow a timer', () => {
  it('every delay after a failure stays within the cap, whatever retryAfterMs says', () => {
    for (const retryAfterMs of [2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER, Infinity, -5, NaN]) {
      const d = delayAfterFailure({ kind: 'http', status: 429, retryAfterMs }, 3, policy, () => 0.999);
      expect(d, String(retryAfterMs)).toBeGreaterThanOrEqual(0);
      expect(d, String(retryAfterMs)).toBeLessThanOrEqual(MAX_SERVER_WAIT_MS + policy.capMs);
    }
  });

  it('timerDelay cuts what node would fire after 1 ms', () => {
    expect(timerDelay(2 ** 31)).toBe(MAX_TIMER_MS);
    expect(timerDelay(Infinity)).toBe(MAX_TIMER_MS);
    expect(timerDelay(NaN)).toBe(0);
    expect(timerDelay(-1)).toBe(0);
    expect(timerDelay(1_500)).toBe(1_500);
  });

  it('a loop whose step returns a delay past 2^31 ms waits instead of running again at once', async () => {
    // Real timers on purpose: node's own overflow (a 1 ms timer) is what made this a hot loop.
    let runs = 0;
    const loop = new TimerLoop(
      async () => (++runs, 2 ** 31 + 5),
      () => 0,
    );
    loop.start(0);
    await new Promise((r) => setTimeout(r, 150));
    await loop.stop();
    expect(runs).toBe(1);
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
