import type { DesiredSet } from './desired-set.js';
import type { DesiredFeed, FeedEvent } from './desired-feed.js';

/**
 * The blocking form of call 3 (`GET …/deployments?wait=N` with If-None-Match): the answer is held
 * until the worker's set no longer matches the tag the agent holds, or the wait ends. Same
 * precedent as Consul's blocking queries, including their spread: a hold lasts the asked wait plus
 * up to 1/16 of it, so a fleet that asked together does not come back together.
 */

/** The longest hold the panel grants by default (seconds); docs/PROTOCOL.md has the request arithmetic. */
export const DEFAULT_MAX_WAIT_SEC = 300;
/** The most an operator may configure: an agent bounds a held call by its wait, so this bounds that too. */
export const MAX_WAIT_CAP_SEC = 600;

/** The hold for an asked wait: the wait (capped), plus up to 1/16 of it. */
export function holdMs(waitSec: number, maxWaitSec: number, random: () => number = Math.random): number {
  const base = Math.min(waitSec, maxWaitSec) * 1000;
  return Math.round(base + (random() * base) / 16);
}

/** `?wait=` as whole seconds ≥ 0; null when absent, 'invalid' when not a number of seconds. */
export function parseWait(value: string | null | undefined): number | null | 'invalid' {
  if (value === null || value === undefined) return null;
  if (!/^\d{1,6}$/.test(value)) return 'invalid';
  return Number(value);
}

export interface HoldRequest {
  feed: DesiredFeed;
  workerId: string;
  /** True while the tag the agent holds still names the current set. */
  unchanged(set: DesiredSet): boolean;
  load(): Promise<DesiredSet>;
  holdMs: number;
  /** The client went away: stop holding. */
  signal?: AbortSignal;
}

/**
 * Resolves with the set to answer: a changed one as soon as it is seen, else the current one when
 * the hold ends, the feed is reset or closed, or the client leaves. The subscription is taken
 * BEFORE the first load, so a change committed while that load runs is not missed; notifications
 * that arrive during a load are folded into one more load.
 */
export async function holdDesiredSet(req: HoldRequest): Promise<DesiredSet> {
  let dirty = false;
  let ended: Exclude<FeedEvent, 'changed'> | undefined;
  let wake: (() => void) | undefined;
  const unsubscribe = req.feed.subscribe(req.workerId, (event) => {
    if (event === 'changed') dirty = true;
    else ended ??= event;
    wake?.();
  });
  const deadline = performance.now() + req.holdMs;
  try {
    let set = await req.load();
    for (;;) {
      if (!req.unchanged(set) || ended === 'closed' || req.signal?.aborted) return set;
      if (ended === 'reset') return await req.load();
      if (dirty) {
        dirty = false;
        set = await req.load();
        continue;
      }
      const left = deadline - performance.now();
      if (left <= 0) return set;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          wake = undefined;
          req.signal?.removeEventListener('abort', done);
          resolve();
        }
        wake = done;
        req.signal?.addEventListener('abort', done, { once: true });
      });
    }
  } finally {
    unsubscribe();
  }
}

/** The most workers one batched load asks the database for. */
const BATCH_MAX = 500;

/**
 * Loads asked for within one turn of the event loop go to the database together: a change that
 * wakes the held calls of thousands of workers (a shared secret rotated, one UPDATE over many
 * services), or a fleet coming back after a panel restart, costs a few queries, not one or two per
 * worker. `loadMany` answers every id it is asked for (undefined where it has nothing, if T allows).
 */
export function batchedLoader<T>(loadMany: (workerIds: string[]) => Promise<Map<string, T>>): (workerId: string) => Promise<T> {
  type Waiter = { resolve: (value: T) => void; reject: (err: unknown) => void };
  let pending = new Map<string, Waiter[]>();
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    const batch = pending;
    pending = new Map();
    const ids = [...batch.keys()];
    for (let i = 0; i < ids.length; i += BATCH_MAX) {
      const chunk = ids.slice(i, i + BATCH_MAX);
      loadMany(chunk).then(
        (values) => {
          for (const id of chunk) for (const w of batch.get(id)!) w.resolve(values.get(id) as T);
        },
        (err: unknown) => {
          for (const id of chunk) for (const w of batch.get(id)!) w.reject(err);
        },
      );
    }
  };
  return (workerId) =>
    new Promise<T>((resolve, reject) => {
      const list = pending.get(workerId);
      if (list === undefined) pending.set(workerId, [{ resolve, reject }]);
      else list.push({ resolve, reject });
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
}
