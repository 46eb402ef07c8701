import type { EngineProbe, EngineSnapshot } from '../ports.js';
import type { Logger } from './logger.js';
import { TimerLoop } from '../util/timer-loop.js';

/**
 * A healthy engine's facts are read again every this many heartbeat intervals. `GET /info` is the
 * heaviest Engine call the agent makes routinely and dockerd answers it slowly under a burst of
 * container starts, while the facts change rarely: the running-container count a heartbeat carries
 * is at most this stale. At 10 s heartbeats: 120 calls an hour.
 */
export const ENGINE_FACTS_EVERY_BEATS = 3;

export interface EngineFactsOptions {
  probe: EngineProbe;
  heartbeatIntervalMs: number;
  logger: Logger;
  /** After every read that succeeded (the agent starts deferred deployment loops once Docker answers). */
  onRead?(facts: EngineSnapshot): void;
}

/**
 * The engine's facts (version, root dir, running containers, CPUs, swarm node id and role) on a
 * loop of their own, as Nomad's fingerprint manager keeps a node's: a heartbeat reads the latest
 * without making an Engine call, so a slow dockerd never delays a beat. A healthy engine is read
 * every ENGINE_FACTS_EVERY_BEATS heartbeat intervals; one that does not answer every interval, so
 * its return shows in the next heartbeat or the one after.
 */
export class EngineFacts {
  readonly #opts: EngineFactsOptions;
  readonly #loop: TimerLoop;
  #latest: EngineSnapshot | undefined;
  #healthy = false;

  constructor(opts: EngineFactsOptions) {
    this.#opts = opts;
    // refresh() turns every failure into "unhealthy"; the error path is only a guard.
    this.#loop = new TimerLoop(
      async () => {
        await this.refresh();
        return this.#nextDelay();
      },
      () => opts.heartbeatIntervalMs,
    );
  }

  /** The last facts Docker gave; kept while it does not answer (the best estimate, flagged by `healthy`). */
  get latest(): EngineSnapshot | undefined {
    return this.#latest;
  }

  /** Whether the last read succeeded. */
  get healthy(): boolean {
    return this.#healthy;
  }

  /** Reads the facts now (the agent does once before starting the loop). Never throws. */
  async refresh(): Promise<void> {
    const { logger } = this.#opts;
    let facts: EngineSnapshot;
    try {
      facts = await this.#opts.probe.snapshot();
    } catch (err) {
      if (this.#healthy || this.#latest === undefined) {
        logger.warn({ err: (err as Error).message }, 'docker unreachable; heartbeats report dockerHealthy=false');
      }
      this.#healthy = false;
      return;
    }
    this.#latest = facts;
    if (!this.#healthy) logger.info({ dockerVersion: facts.dockerVersion }, 'docker reachable');
    this.#healthy = true;
    this.#opts.onRead?.(facts);
  }

  /** Starts the loop; the first read is one delay away (call refresh() first for facts at once). */
  start(): void {
    this.#loop.start(this.#nextDelay());
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }

  #nextDelay(): number {
    return this.#healthy ? ENGINE_FACTS_EVERY_BEATS * this.#opts.heartbeatIntervalMs : this.#opts.heartbeatIntervalMs;
  }
}
