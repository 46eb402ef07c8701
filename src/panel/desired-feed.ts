import { fullJitter, type BackoffPolicy } from '../controlplane/backoff.js';
import type { PanelLogger } from './handler.js';
import { TimerLoop } from '../util/timer-loop.js';

/**
 * Change notifications for the blocking desired-set query: ONE dedicated PostgreSQL connection
 * per panel process LISTENs on the channel the migration's trigger notifies (one message per
 * affected worker id), and fans each message out in memory to the requests held for that worker.
 * Held requests never hold a database connection of their own.
 *
 * While the connection is down the panel announces no support (the agents poll) and held
 * requests are released at once, because a change made meanwhile would never be told to them.
 */

export const DESIRED_CHANNEL = 'skypanel_agent_desired';

/** What a held request is told: its worker's set may have changed; re-check and answer; or answer now. */
export type FeedEvent = 'changed' | 'reset' | 'closed';

/** The least of a `pg.Client` the feed uses (structural, so no import of pg here). */
export interface ListenClient {
  connect(): Promise<unknown>;
  query(text: string): Promise<unknown>;
  end(): Promise<unknown>;
  on(event: 'notification', fn: (msg: { channel: string; payload?: string }) => void): unknown;
  on(event: 'error', fn: (err: Error) => void): unknown;
  on(event: 'end', fn: () => void): unknown;
}

/** A new, unconnected client each call, e.g. `() => new pg.Client({ connectionString })`. */
export type ListenConnector = () => ListenClient;

const RECONNECT: BackoffPolicy = { baseMs: 500, capMs: 30_000 };
/** ETags remembered at most (about 100 bytes each); past it the memory starts over. */
const MAX_ETAGS = 100_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type Listener = (event: FeedEvent) => void;

export class DesiredFeed {
  readonly #connect: ListenConnector;
  readonly #logger: PanelLogger | undefined;
  readonly #byWorker = new Map<string, Set<Listener>>();
  #client: ListenClient | undefined;
  #listening = false;
  #closed = false;
  #attempt = 0;
  /** Reopens the connection after a loss: idle while listening. */
  readonly #reconnect: TimerLoop;
  /** Set when the connection was lost: the delay before the next attempt. */
  #retryInMs: number | undefined;
  #held = 0;
  /**
   * The desired set's ETag per worker, as last loaded while listening and dropped on that worker's
   * notification: the heartbeat's hint then costs no query. Only the hint reads it; call 3 always
   * loads the set.
   */
  readonly #etags = new Map<string, string>();
  /** Notifications and connection losses seen: a load that overlapped one is not remembered. */
  #changes = 0;

  constructor(connect: ListenConnector, logger?: PanelLogger) {
    this.#connect = connect;
    this.#logger = logger;
    // #open never throws (a failure is a loss, which sets #retryInMs); the error path is only a guard.
    this.#reconnect = new TimerLoop(
      async () => {
        this.#retryInMs = undefined;
        await this.#open();
        return this.#retryInMs;
      },
      () => RECONNECT.capMs,
    );
  }

  /** Whether changes reach this process now (only then does the panel hold requests or announce it). */
  get listening(): boolean {
    return this.#listening;
  }

  /** Requests held right now. */
  get held(): number {
    return this.#held;
  }

  /** Connects; resolves after the first attempt, whether or not it succeeded (later ones run in the background). */
  async start(): Promise<void> {
    this.#reconnect.start(null);
    await this.#open();
  }

  /** Tells `fn` about events for `workerId` until the returned function is called. */
  subscribe(workerId: string, fn: Listener): () => void {
    const key = workerId.toLowerCase();
    let set = this.#byWorker.get(key);
    if (set === undefined) this.#byWorker.set(key, (set = new Set()));
    set.add(fn);
    this.#held++;
    return () => {
      if (!set.delete(fn)) return;
      this.#held--;
      if (set.size === 0 && this.#byWorker.get(key) === set) this.#byWorker.delete(key);
    };
  }

  /** The worker's current ETag when known for certain (listening, and no change since it was loaded). */
  etagOf(workerId: string): string | undefined {
    return this.#listening ? this.#etags.get(workerId.toLowerCase()) : undefined;
  }

  /** Runs `load` and remembers the ETag it returns, unless a change could have raced it. */
  async remember<T extends { etag: string }>(workerId: string, load: () => Promise<T>): Promise<T> {
    const before = this.#changes;
    const set = await load();
    if (this.#listening && before === this.#changes) {
      if (this.#etags.size >= MAX_ETAGS) this.#etags.clear();
      this.#etags.set(workerId.toLowerCase(), set.etag);
    }
    return set;
  }

  /** Stops listening and answers every held request now. */
  async close(): Promise<void> {
    this.#closed = true;
    // Not awaited before the client ends: an attempt in flight ends with it.
    const reconnecting = this.#reconnect.stop();
    this.#listening = false;
    this.#broadcast('closed');
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
    await reconnecting;
  }

  #broadcast(event: FeedEvent): void {
    for (const set of [...this.#byWorker.values()]) for (const fn of [...set]) fn(event);
  }

  #notify(payload: string | undefined): void {
    this.#changes++;
    // A payload that names no worker (another writer's NOTIFY on the channel) wakes everyone: safe, rare.
    if (payload === undefined || !UUID.test(payload)) {
      this.#etags.clear();
      this.#broadcast('changed');
      return;
    }
    this.#etags.delete(payload.toLowerCase());
    const set = this.#byWorker.get(payload.toLowerCase());
    if (set !== undefined) for (const fn of [...set]) fn('changed');
  }

  async #open(): Promise<void> {
    if (this.#closed) return;
    const client = this.#connect();
    this.#client = client;
    let lost = false;
    const onLost = (why: string): void => {
      if (lost || this.#client !== client) return;
      lost = true;
      this.#lost(client, why);
    };
    client.on('error', (err) => onLost(err.message));
    client.on('end', () => onLost('connection ended'));
    client.on('notification', (msg) => {
      if (msg.channel === DESIRED_CHANNEL) this.#notify(msg.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${DESIRED_CHANNEL}`);
    } catch (err) {
      onLost(err instanceof Error ? err.message : String(err));
      return;
    }
    if (lost || this.#closed || this.#client !== client) return;
    if (this.#attempt > 0) this.#logger?.info({ attempts: this.#attempt }, 'desired-set notifications restored');
    this.#attempt = 0;
    this.#listening = true;
  }

  #lost(client: ListenClient, why: string): void {
    const was = this.#listening;
    this.#listening = false;
    this.#changes++;
    this.#etags.clear();
    this.#client = undefined;
    void client.end().catch(() => undefined);
    if (this.#closed) return;
    // Changes may be missed until LISTEN is back: every held request re-checks and answers now.
    this.#broadcast('reset');
    const delay = fullJitter(this.#attempt++, RECONNECT) + RECONNECT.baseMs;
    (was ? this.#logger?.warn.bind(this.#logger) : this.#logger?.info.bind(this.#logger))?.(
      { err: why, retryInMs: delay },
      'desired-set notifications unavailable; agents poll until they are back',
    );
    // From an attempt in flight, the loop takes the delay from its step; from an idle loop, this schedules it.
    this.#retryInMs = delay;
    this.#reconnect.wake(delay);
  }
}
