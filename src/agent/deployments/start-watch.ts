import type { TaskObservation } from '../../domain/deployment-status.js';

/**
 * A container start is what a deploy waits for, but Docker's `start` event comes before Swarm's
 * task record says `running`: the worker reports the state to the manager, which commits such
 * updates in batches (20–150 ms later on the bench machine, 45 ms median; seconds on a loaded
 * one). No event marks that commit, and the passes that would see it otherwise are the settle
 * passes, seconds apart by then. So a start that follows a quiet spell is looked at START_LOOK_MS
 * after its event, once more START_LOOK_MS later, then every coalescing interval while a start is
 * not yet seen running, up to START_AWAIT_MS after its event. In a burst of starts (a fleet
 * converging) passes still come at most one per coalescing interval.
 */

/** How soon after a start event a pass looks, and how soon a look that came too early is repeated (once). */
export const START_LOOK_MS = 100;
/** How long after its event a start whose task is not yet running keeps the quick looks coming. */
export const START_AWAIT_MS = 2_000;
/** Starts awaited at most; past it a start gets no quick looks (each is forgotten within START_AWAIT_MS). */
const MAX_AWAITED = 1_000;
/** Task states before `running`: a started container whose task is still in one of these was looked at too early. */
const BEFORE_RUNNING: ReadonlySet<string> = new Set(['new', 'pending', 'assigned', 'accepted', 'preparing', 'ready', 'starting']);

/** When the reconciler should look after container starts. Times are performance.now() ms. */
export class StartWatch {
  readonly #coalesceMs: number;
  /** Container id → when its start event came. */
  readonly #awaited = new Map<string, number>();
  #passStartedAt = -Infinity;
  /** The next pass is the quick look at a start after a quiet spell. */
  #quickDue = false;
  /** The pass under way (or last) is such a quick look. */
  #quickPass = false;
  /** The last pass saw an awaited start whose task was not yet running. */
  #unseen = false;

  /** `coalesceMs`: the least spacing of event-driven passes in a burst. */
  constructor(coalesceMs: number) {
    this.#coalesceMs = coalesceMs;
  }

  /** A container of this worker started: how soon a pass should look. */
  noteStart(containerId: string, now: number): number {
    if (this.#awaited.size < MAX_AWAITED || this.#awaited.has(containerId)) this.#awaited.set(containerId, now);
    const sinceLastPass = now - this.#passStartedAt;
    if (sinceLastPass >= this.#coalesceMs) this.#quickDue = true;
    return Math.max(START_LOOK_MS, this.#coalesceMs - sinceLastPass);
  }

  passStarted(now: number): void {
    this.#passStartedAt = now;
    this.#quickPass = this.#quickDue;
    this.#quickDue = false;
  }

  /** The pass read `tasks`: forgets the starts whose task is past `starting`, and those older than START_AWAIT_MS. */
  observed(tasks: readonly TaskObservation[], now: number): void {
    this.#unseen = false;
    if (this.#awaited.size === 0) return;
    const stateOf = new Map<string, string>();
    for (const t of tasks) if (t.containerId !== undefined) stateOf.set(t.containerId, t.state);
    for (const [id, at] of this.#awaited) {
      const state = stateOf.get(id);
      if (now - at >= START_AWAIT_MS || (state !== undefined && !BEFORE_RUNNING.has(state))) this.#awaited.delete(id);
    }
    this.#unseen = this.#awaited.size > 0;
  }

  /** After a pass: how soon to look again for a start not yet seen running; Infinity when none is awaited. */
  nextLookMs(): number {
    if (!this.#unseen) return Infinity;
    return this.#quickPass ? START_LOOK_MS : this.#coalesceMs;
  }
}
