import { afterEach, describe, expect, it, vi } from 'vitest';
import { TimerLoop } from '../../src/util/timer-loop.js';

afterEach(() => vi.useRealTimers());

/** A loop whose step returns 60 s and whose `blockedRun`-th run waits for release(). */
function loopBlockingRun(blockedRun: number) {
  let runs = 0;
  let release: () => void = () => {};
  const loop = new TimerLoop(
    async () => {
      runs++;
      if (runs === blockedRun) await new Promise<void>((r) => (release = r));
      return 60_000;
    },
    () => 0,
  );
  return { loop, runs: () => runs, release: () => release() };
}

describe('TimerLoop', () => {
  it('runs, waits the delay the step returns, runs again; stop() ends it', async () => {
    vi.useFakeTimers();
    let runs = 0;
    const loop = new TimerLoop(
      async () => (++runs, 1_000),
      () => 5_000,
    );
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
    const loop = new TimerLoop(
      async () => {
        runs++;
        throw new Error('boom');
      },
      () => 3_000,
    );
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
    const loop = new TimerLoop(
      async () => (runs++, answers.shift()),
      () => 0,
    );
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
    const { loop, runs, release } = loopBlockingRun(2);
    loop.start(0);
    await vi.advanceTimersByTimeAsync(0);
    loop.runSoon();
    await vi.advanceTimersByTimeAsync(0);
    expect(runs()).toBe(2); // running, blocked
    loop.runSoon();
    loop.runSoon();
    release();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs()).toBe(3);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(runs()).toBe(3);
    await loop.stop();
  });

  describe('runWithin()', () => {
    it('shortens a pending wait that ends later to ms', async () => {
      vi.useFakeTimers();
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, 60_000),
        () => 0,
      );
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs).toBe(1); // now waiting 60 s
      await vi.advanceTimersByTimeAsync(10_000);
      loop.runWithin(500);
      await vi.advanceTimersByTimeAsync(499);
      expect(runs).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(2);
      // The step's own delay applies again after that run, and the old 60 s timer is gone.
      await vi.advanceTimersByTimeAsync(59_999);
      expect(runs).toBe(2);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(3);
      await loop.stop();
    });

    it('keeps a pending wait that ends sooner (never postpones it)', async () => {
      vi.useFakeTimers();
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, 1_000),
        () => 0,
      );
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs).toBe(1); // next run at t=1000
      await vi.advanceTimersByTimeAsync(400);
      loop.runWithin(5_000);
      await vi.advanceTimersByTimeAsync(599);
      expect(runs).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(2); // at t=1000, as before the call
      await vi.advanceTimersByTimeAsync(5_000);
      expect(runs).toBe(7); // back on its 1 s interval: no extra run from the call
      await loop.stop();
    });

    it('keeps a pending wait that ends exactly at the same time', async () => {
      vi.useFakeTimers();
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, 1_000),
        () => 0,
      );
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      await vi.advanceTimersByTimeAsync(500);
      loop.runWithin(500);
      await vi.advanceTimersByTimeAsync(500);
      expect(runs).toBe(2);
      await vi.advanceTimersByTimeAsync(999);
      expect(runs).toBe(2);
      await loop.stop();
    });

    it('wakes an idle loop after ms, not at once', async () => {
      vi.useFakeTimers();
      const answers: (number | undefined)[] = [undefined, undefined];
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, answers.shift()),
        () => 0,
      );
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs).toBe(1); // idle
      loop.runWithin(300);
      await vi.advanceTimersByTimeAsync(299);
      expect(runs).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(2);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(runs).toBe(2); // idle again
      await loop.stop();
    });

    it('a burst of calls coalesces into one run, due ms after the first call', async () => {
      vi.useFakeTimers();
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, 60_000),
        () => 0,
      );
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs).toBe(1);
      for (let i = 0; i < 10; i++) {
        loop.runWithin(500);
        await vi.advanceTimersByTimeAsync(40); // calls at t=0..360, all inside the first window
      }
      expect(runs).toBe(1);
      await vi.advanceTimersByTimeAsync(99); // t=499: a debounce would push the run to t=860
      expect(runs).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(2);
      await vi.advanceTimersByTimeAsync(30_000);
      expect(runs).toBe(2);
      await loop.stop();
    });

    it('during a run, queues exactly one follow-up run', async () => {
      vi.useFakeTimers();
      const { loop, runs, release } = loopBlockingRun(1);
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs()).toBe(1); // running, blocked
      loop.runWithin(500);
      loop.runWithin(500);
      loop.runWithin(100);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(runs()).toBe(1); // never two runs at once
      release();
      await vi.advanceTimersByTimeAsync(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs()).toBe(1); // the follow-up keeps the shortest `ms` asked for, counted from the run's end
      await vi.advanceTimersByTimeAsync(99);
      expect(runs()).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs()).toBe(2);
      await vi.advanceTimersByTimeAsync(59_999);
      expect(runs()).toBe(2);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs()).toBe(3);
      await loop.stop();
    });

    it('a runSoon() during a run makes the follow-up immediate even after a runWithin()', async () => {
      vi.useFakeTimers();
      const { loop, runs, release } = loopBlockingRun(1);
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      loop.runWithin(5_000);
      loop.runSoon();
      release();
      await vi.advanceTimersByTimeAsync(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs()).toBe(2);
      await loop.stop();
    });

    it('does nothing after stop(), nor before start()', async () => {
      vi.useFakeTimers();
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, 60_000),
        () => 0,
      );
      loop.runWithin(100);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(runs).toBe(0);
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs).toBe(1);
      await loop.stop();
      loop.runWithin(100);
      await vi.advanceTimersByTimeAsync(120_000);
      expect(runs).toBe(1);
      expect(vi.getTimerCount()).toBe(0);
    });
  });

  describe('wake(ms), start(null) and nextRunInMs()', () => {
    it('start(null) waits idle; wake(ms) runs an idle loop after ms', async () => {
      vi.useFakeTimers();
      let runs = 0;
      const loop = new TimerLoop(
        async () => (runs++, undefined),
        () => 0,
      );
      loop.start(null);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(runs).toBe(0);
      expect(loop.nextRunInMs()).toBeNull();
      loop.wake(500);
      expect(loop.nextRunInMs()).toBe(500);
      await vi.advanceTimersByTimeAsync(499);
      expect(runs).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(1);
      expect(loop.nextRunInMs()).toBeNull();
      await loop.stop();
    });

    it('leaves a pending backoff alone, and adds no follow-up to a run in flight', async () => {
      vi.useFakeTimers();
      const { loop, runs, release } = loopBlockingRun(2);
      loop.start(0);
      await vi.advanceTimersByTimeAsync(0);
      expect(runs()).toBe(1);
      loop.wake(0);
      await vi.advanceTimersByTimeAsync(1_000);
      expect(runs()).toBe(1);
      expect(loop.nextRunInMs()).toBe(59_000);
      await vi.advanceTimersByTimeAsync(59_000);
      expect(runs()).toBe(2);
      loop.wake(0);
      release();
      await vi.advanceTimersByTimeAsync(0);
      expect(runs()).toBe(2);
      expect(loop.nextRunInMs()).toBe(60_000);
      await loop.stop();
      expect(loop.nextRunInMs()).toBeNull();
      loop.wake(0);
      expect(vi.getTimerCount()).toBe(0);
    });
  });

  it('start() before an earlier stop() finished waits for the run in flight, then keeps one chain of runs', async () => {
    vi.useFakeTimers();
    const { loop, runs, release } = loopBlockingRun(1);
    loop.start(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(runs()).toBe(1);
    const stopping = loop.stop();
    loop.start(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(runs()).toBe(1); // the first run is still in flight: no second one beside it
    release();
    await stopping;
    await vi.advanceTimersByTimeAsync(0);
    expect(runs()).toBe(2);
    expect(vi.getTimerCount()).toBe(1); // the old run scheduled nothing: one pending wait, this start's
    await vi.advanceTimersByTimeAsync(60_000);
    expect(runs()).toBe(3);
    await loop.stop();
  });
});
