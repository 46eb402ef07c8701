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
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #stopped = true;
  #kickedWhileRunning = false;

  /** `onError` turns an unexpected throw from `step` into the delay before trying again. */
  constructor(step: () => Promise<number | undefined>, onError: (err: unknown) => number) {
    this.#step = step;
    this.#onError = onError;
  }

  start(delayMs = 0): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(delayMs);
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
      this.#kickedWhileRunning = true;
      return;
    }
    if (this.#timer === undefined) this.#schedule(0);
  }

  /** Run now, cancelling any pending wait (a new desired state must not wait out a resync interval). */
  runSoon(): void {
    if (this.#stopped) return;
    if (this.#inFlight) {
      this.#kickedWhileRunning = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#inFlight = this.#run();
    }, ms);
  }

  async #run(): Promise<void> {
    this.#kickedWhileRunning = false;
    let next: number | undefined;
    try {
      next = await this.#step();
    } catch (err) {
      next = this.#onError(err);
    }
    this.#inFlight = undefined;
    if (this.#kickedWhileRunning) next = next === undefined ? 0 : Math.min(next, 0);
    if (next !== undefined) this.#schedule(next);
  }
}
