/** Node's timers hold a signed 32-bit millisecond count; a longer delay fires after 1 ms instead. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A delay every timer can take: longer ones are cut to MAX_TIMER_MS (about 24.8 days), negative
 * ones and NaN run at once. Every delay a control plane can influence is capped well below this
 * where it is computed; this is the guard that no future caller can turn into a hot loop.
 */
export function timerDelay(ms: number): number {
  if (Number.isNaN(ms) || ms <= 0) return 0;
  return Math.min(ms, MAX_TIMER_MS);
}

/**
 * The one way the agent repeats work: run `step`, wait the delay it returns, run again. One run
 * at a time, no recursion, and `stop()` cancels the timer and waits for the run in flight, so every
 * loop can be stopped cleanly (tests run several agents in one process).
 *
 * `step` resolves with the delay before its next run, or `undefined` to go idle until `kick()`.
 */
export class TimerLoop {
  readonly #step: () => Promise<number | undefined>;
  readonly #onError: (err: unknown) => number;
  readonly #unref: boolean;
  #timer: NodeJS.Timeout | undefined;
  /** When the pending timer fires (performance.now() ms). */
  #dueAt = 0;
  #inFlight: Promise<void> | undefined;
  #stopped = true;
  /** Counts start() calls: a run of an earlier start (stop() not awaited) must not schedule for this one. */
  #generation = 0;
  /** Kicked while a run was in flight: how soon after it the next run must start. */
  #followUpMs: number | undefined;

  /**
   * `onError` turns an unexpected throw from `step` into the delay before trying again. `unref`:
   * a pending wait does not keep the process alive (background retries a command may leave behind).
   */
  constructor(step: () => Promise<number | undefined>, onError: (err: unknown) => number, opts: { unref?: boolean } = {}) {
    this.#step = step;
    this.#onError = onError;
    this.#unref = opts.unref ?? false;
  }

  /**
   * The first run after `delayMs`; `null` starts the loop idle, until `kick` or `wake`. Started again
   * before an earlier stop() finished, it waits for the run in flight: one run at a time still.
   */
  start(delayMs: number | null = 0): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    const generation = ++this.#generation;
    if (delayMs === null) return;
    const previous = this.#inFlight;
    if (!previous) return this.#schedule(delayMs);
    void previous.then(() => {
      if (generation === this.#generation && this.#timer === undefined && !this.#inFlight) this.#schedule(delayMs);
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
  }

  /**
   * Run now if the loop is idle. A pending timer (an interval, or a backoff after failures) is left
   * alone, so new work never cuts a backoff short; a run in flight is followed by another.
   */
  kick(): void {
    if (this.#stopped) return;
    if (this.#inFlight) {
      this.#followUp(0);
      return;
    }
    if (this.#timer === undefined) this.#schedule(0);
  }

  /**
   * Run after `ms` only if the loop is idle: a pending wait (a backoff, a Retry-After) keeps its
   * time, and a run in flight gets no follow-up, for work its step picks up before it returns
   * (a queue it drains until empty).
   */
  wake(ms = 0): void {
    if (this.#stopped || this.#inFlight || this.#timer !== undefined) return;
    this.#schedule(ms);
  }

  /** Time left before the pending run; null while none is pending (idle, running or stopped). */
  nextRunInMs(): number | null {
    return this.#timer === undefined ? null : Math.max(0, this.#dueAt - performance.now());
  }

  /** Run now, cancelling any pending wait (a new desired state must not wait out a resync interval). */
  runSoon(): void {
    if (this.#stopped) return;
    if (this.#inFlight) {
      this.#followUp(0);
      return;
    }
    clearTimeout(this.#timer);
    this.#schedule(0);
  }

  /**
   * Run within `ms`: a pending wait that ends later is shortened to `ms`, one that ends sooner is
   * kept, so a burst of calls coalesces into one run. A run in flight is followed by another
   * within `ms` of its end.
   */
  runWithin(ms: number): void {
    if (this.#stopped) return;
    if (this.#inFlight) {
      this.#followUp(ms);
      return;
    }
    if (this.#timer !== undefined && this.#dueAt <= performance.now() + ms) return;
    clearTimeout(this.#timer);
    this.#schedule(ms);
  }

  #followUp(ms: number): void {
    this.#followUpMs = Math.min(this.#followUpMs ?? ms, ms);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    const ms = timerDelay(delayMs);
    this.#dueAt = performance.now() + ms;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#inFlight = this.#run();
    }, ms);
    if (this.#unref) this.#timer.unref();
  }

  async #run(): Promise<void> {
    const generation = this.#generation;
    this.#followUpMs = undefined;
    let next: number | undefined;
    try {
      next = await this.#step();
    } catch (err) {
      next = this.#onError(err);
    }
    this.#inFlight = undefined;
    if (generation !== this.#generation) return;
    const followUp = this.#followUpMs;
    if (followUp !== undefined) next = next === undefined ? followUp : Math.min(next, followUp);
    if (next !== undefined) this.#schedule(next);
  }
}
