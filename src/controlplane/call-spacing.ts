/**
 * The floor between two requests of the same call (method and path): whatever the panel answers
 * and whatever a loop's own logic does, no call is sent more than 60 times a minute. Loops back
 * off long before this; the floor is what holds if one of them ever computes a delay of 0 in a
 * row (docs/PROTOCOL.md, "Client behaviour").
 */
export const MIN_CALL_SPACING_MS = 1_000;

/** Past this many remembered calls, entries older than the floor (which constrain nothing) are dropped. */
const SWEEP_AT = 64;

/** Hands out send slots per call key, one floor apart, in arrival order. */
export class CallSpacing {
  readonly #spacingMs: number;
  /** Per call: when its latest request may start (performance.now()). */
  readonly #slots = new Map<string, number>();
  /** Calls waiting for their slot; close() ends them. */
  readonly #waiting = new Set<() => void>();
  #closed = false;

  constructor(spacingMs: number = MIN_CALL_SPACING_MS) {
    this.#spacingMs = spacingMs;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Resolves true once a request of `key` may be sent (and takes that slot), false when `signal`
   * aborts or close() is called first. Concurrent callers of one call queue one floor apart.
   */
  async wait(key: string, signal?: AbortSignal): Promise<boolean> {
    if (this.#closed || signal?.aborted) return false;
    const now = performance.now();
    if (this.#slots.size >= SWEEP_AT) {
      for (const [k, at] of this.#slots) if (at + this.#spacingMs <= now) this.#slots.delete(k);
    }
    const at = Math.max(now, (this.#slots.get(key) ?? -Infinity) + this.#spacingMs);
    this.#slots.set(key, at);
    if (at <= now) return true;
    const ran = await new Promise<boolean>((resolve) => {
      const end = (ok: boolean) => {
        clearTimeout(timer);
        this.#waiting.delete(cancel);
        signal?.removeEventListener('abort', cancel);
        resolve(ok);
      };
      const cancel = () => end(false);
      const timer = setTimeout(() => end(true), at - now);
      this.#waiting.add(cancel);
      signal?.addEventListener('abort', cancel, { once: true });
    });
    return ran && !this.#closed;
  }

  close(): void {
    this.#closed = true;
    for (const cancel of [...this.#waiting]) cancel();
  }
}
