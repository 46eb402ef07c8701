import { TimerLoop } from '../util/timer-loop.js';
import type { Queryable } from './db.js';
import type { PanelLogger } from './handler.js';
import type { HealthOptions } from './health.js';

/**
 * Marks workers `offline` once they have been silent for `missedIntervals` heartbeat intervals
 * (stock SkyPanelV2 has this rule in WorkerHealthMonitor but never starts it). One UPDATE per sweep,
 * judged by the database's clock, which also stamps last_heartbeat_at, so panel and database clocks
 * need not agree. Only `active` and `unhealthy` workers are swept: an admin's `draining` stays, and
 * the next heartbeat of an offline worker makes it active (or unhealthy) again.
 *
 * With the default 4 intervals, a worker whose beats arrive late by the agent's ±5 % jitter, or
 * miss one or two, never leaves `active`.
 */
export class HealthMonitor {
  readonly #loop: TimerLoop;
  readonly #db: Queryable;
  readonly #options: HealthOptions;
  readonly #logger: PanelLogger | undefined;

  constructor(db: Queryable, options: HealthOptions, logger?: PanelLogger) {
    this.#db = db;
    this.#options = options;
    this.#logger = logger;
    this.#loop = new TimerLoop(
      async () => {
        await this.sweep();
        return this.sweepIntervalMs();
      },
      (err) => {
        this.#logger?.error({ err: err instanceof Error ? err.message : String(err) }, 'worker health sweep failed');
        return this.sweepIntervalMs();
      },
    );
  }

  /** Half an interval: a silent worker is marked offline at most half an interval late. */
  sweepIntervalMs(): number {
    return Math.max(250, (this.#options.heartbeatIntervalSec * 1000) / 2);
  }

  /** Seconds of silence after which a worker is offline. */
  get offlineAfterSec(): number {
    return this.#options.heartbeatIntervalSec * this.#options.missedIntervals;
  }

  /** One pass; returns the ids marked offline. */
  async sweep(): Promise<string[]> {
    const { rows } = await this.#db.query<{ id: string; last_heartbeat_at: unknown }>(
      `UPDATE container_workers SET status = 'offline'
        WHERE status IN ('active', 'unhealthy')
          AND (last_heartbeat_at IS NULL OR last_heartbeat_at < NOW() - make_interval(secs => $1))
        RETURNING id, last_heartbeat_at`,
      [this.offlineAfterSec],
    );
    for (const row of rows)
      this.#logger?.warn({ workerId: row.id, lastHeartbeatAt: row.last_heartbeat_at }, 'worker marked offline: no heartbeat');
    return rows.map((r) => r.id);
  }

  start(): void {
    this.#loop.start(this.sweepIntervalMs());
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }
}
