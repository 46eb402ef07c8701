import { afterEach, describe, expect, it, vi } from 'vitest';
import { TimerLoop } from '../../src/agent/timer-loop.js';

afterEach(() => vi.useRealTimers());

describe('TimerLoop', () => {
  it('runs, waits the delay the step returns, runs again; stop() ends it', async () => {
    vi.useFakeTimers();
    let runs = 0;
    const loop = new TimerLoop(async () => (++runs, 1_000), () => 5_000);
    loop.start(0);
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(2_500);
    expect(runs).toBe(3);
    await loop.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(runs).toBe(3);
  });

  it('a throwing step is retried after the onError delay', async () => {
    vi.useFakeTimers();
    let runs = 0;
    const loop = new TimerLoop(async () => {
      runs++;
      throw new Error('boom');
    }, () => 3_000);
    loop.start(0);
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(2_999);
    expect(runs).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toBe(2);
    await loop.stop();
  });

  it('kick() wakes an idle loop but never cuts a pending backoff short', async () => {
    vi.useFakeTimers();
    const answers: (number | undefined)[] = [undefined, 60_000];
    let runs = 0;
    const loop = new TimerLoop(async () => (runs++, answers.shift()), () => 0);
    loop.start(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(1); // went idle
    loop.kick();
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(2); // now waiting 60 s (a backoff)
    loop.kick();
    await vi.advanceTimersByTimeAsync(59_000);
    expect(runs).toBe(2);
    await loop.stop();
  });

  it('runSoon() cancels a pending wait; during a run it queues exactly one more run', async () => {
    vi.useFakeTimers();
    let runs = 0;
    let release: () => void = () => {};
    const loop = new TimerLoop(async () => {
      runs++;
      if (runs === 2) await new Promise<void>((r) => (release = r));
      return 60_000;
    }, () => 0);
    loop.start(0);
    await vi.advanceTimersByTimeAsync(0);
    loop.runSoon();
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(2); // running, blocked
    loop.runSoon();
    loop.runSoon();
    release();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toBe(3);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(runs).toBe(3);
    await loop.stop();
  });
});
