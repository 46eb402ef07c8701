import type { IncomingMessage } from 'node:http';
import { createDockerClient, type EngineClient } from './docker-client.js';
import type { EngineEvent, EngineEventSink } from '../ports.js';
import { TimerLoop } from '../util/timer-loop.js';

/**
 * Docker's event stream (`GET /events`), kept open for as long as the agent runs, so that a change
 * to what the agent owns (a container died, a service was edited) starts a reconcile pass at once
 * instead of waiting for the next resync. The stream says only "look again": the pass re-reads
 * everything, so a missed, duplicated or reordered event can delay a status but never corrupt one.
 * That is why nothing here replays events across a reconnect: every (re)connect is reported, and
 * the caller answers it with a full pass.
 */

export interface EngineEventStreamOptions {
  client: EngineClient;
  /** Docker's event filters, e.g. `{ type: ['container'], event: ['die'] }`. */
  filters: Record<string, string[]>;
  onEvent(event: EngineEvent): void;
  /** Every connect and reconnect: what happened while the stream was down is unknown. */
  onConnected(): void;
  /** The stream failed or ended; it is retried after `retryDelayMs(failures)`. */
  onDisconnected(reason: string): void;
  /** Delay before reconnect attempt `n` (0-based, reset once a stream has stayed up a minute); jittered by the caller. */
  retryDelayMs(failures: number): number;
}

/** A line longer than this (in characters; events are ASCII JSON) is not an event: the stream is dropped and opened again. */
const MAX_EVENT_BYTES = 1024 * 1024;
/** A stream that stayed up this long resets the backoff: a daemon that accepts and drops at once keeps backing off. */
const STABLE_AFTER_MS = 60_000;

/** Runs a consumer's callback; a throw must never end (or silently stall) the stream. */
function guarded(fn: () => void): void {
  try {
    fn();
  } catch {
    // the stream carries on; what the consumer missed, the next resync covers
  }
}

/** Parses one line of the stream; undefined for anything that is not an event object. */
export function parseEngineEvent(line: string): EngineEvent | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const e = v as { Type?: unknown; Action?: unknown; Actor?: { ID?: unknown; Attributes?: unknown } };
  if (typeof e.Type !== 'string' || typeof e.Action !== 'string') return undefined;
  const id = e.Actor?.ID;
  const attrs = e.Actor?.Attributes;
  const attributes: Record<string, string> = {};
  if (typeof attrs === 'object' && attrs !== null) {
    for (const [k, val] of Object.entries(attrs)) if (typeof val === 'string') attributes[k] = val;
  }
  return { type: e.Type, action: e.Action, id: typeof id === 'string' ? id : '', attributes };
}

export class EngineEventStream {
  readonly #opts: EngineEventStreamOptions;
  /** One step is one stream, from connect to its end; the delay before the next is the reconnect backoff. */
  readonly #loop: TimerLoop;
  #stopped = true;
  #connected = false;
  #failures = 0;
  #abort: AbortController | undefined;
  /** Counts start() calls: a stream of an earlier start (stop() not awaited) must not touch this one's state. */
  #generation = 0;

  constructor(opts: EngineEventStreamOptions) {
    this.#opts = opts;
    // #attempt never throws; the error path is only a guard.
    this.#loop = new TimerLoop(
      () => this.#attempt(),
      () => 1_000,
    );
  }

  /** True while a stream is open (events are being delivered). */
  get connected(): boolean {
    return this.#connected;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#failures = 0;
    this.#generation++;
    this.#loop.start(0);
  }

  /** Closes the stream and cancels any reconnect; resolves once the stream is released. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort?.abort();
    await this.#loop.stop();
  }

  /** One stream, then the delay before the next (undefined once stopped). */
  async #attempt(): Promise<number | undefined> {
    const generation = this.#generation;
    const reason = await this.#session();
    if (generation !== this.#generation) return undefined;
    const wasConnected = this.#connected;
    this.#connected = false;
    if (this.#stopped) return undefined;
    if (wasConnected || this.#failures === 0) guarded(() => this.#opts.onDisconnected(reason));
    let delay = 1_000;
    guarded(() => (delay = this.#opts.retryDelayMs(this.#failures)));
    this.#failures++;
    return delay;
  }

  /** One stream, from connect to its end; resolves with why it ended. Never rejects. */
  async #session(): Promise<string> {
    const abort = (this.#abort = new AbortController());
    let res: IncomingMessage;
    try {
      res = await this.#opts.client.request<IncomingMessage>({
        method: 'GET',
        path: '/events',
        query: { filters: this.#opts.filters },
        stream: true,
        openEnded: true,
        signal: abort.signal,
      });
    } catch (err) {
      return (err as Error).message;
    }
    if (this.#stopped || abort.signal.aborted) {
      res.destroy();
      return 'stopped';
    }
    const openedAt = performance.now();
    this.#connected = true;
    guarded(() => this.#opts.onConnected());
    const reason = await this.#read(res);
    if (performance.now() - openedAt >= STABLE_AFTER_MS) this.#failures = 0;
    return reason;
  }

  #read(res: IncomingMessage): Promise<string> {
    return new Promise((resolve) => {
      let pending = '';
      let finished = false;
      const finish = (reason: string) => {
        if (finished) return;
        finished = true;
        res.destroy();
        resolve(reason);
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          const event = line.trim() === '' ? undefined : parseEngineEvent(line);
          if (!event) continue;
          // A consumer's bug must not end the stream; the next resync covers what it missed.
          guarded(() => this.#opts.onEvent(event));
        }
        if (pending.length > MAX_EVENT_BYTES) finish(`an event line exceeded ${MAX_EVENT_BYTES} bytes`);
      });
      res.on('end', () => finish('the Engine closed the event stream'));
      res.on('error', (err) => finish(err.message));
      res.on('close', () => finish('the event stream closed'));
    });
  }
}

/** A stream on its own connection to the local engine (it holds that socket for as long as it runs). */
export function watchEngineEvents(
  opts: { socketPath?: string; filters: Record<string, string[]>; retryDelayMs(failures: number): number },
  sink: EngineEventSink,
): { start(): void; stop(): Promise<void> } {
  const client = createDockerClient({ socketPath: opts.socketPath, maxSockets: 1 });
  const stream = new EngineEventStream({
    client,
    filters: opts.filters,
    retryDelayMs: opts.retryDelayMs,
    onEvent: (e) => sink.onEvent(e),
    onConnected: () => sink.onLive(true),
    onDisconnected: (reason) => sink.onLive(false, reason),
  });
  return {
    start: () => stream.start(),
    async stop() {
      await stream.stop();
      client.close();
    },
  };
}
