/**
 * How the panel judges a worker's health. The heartbeat applies `statusAfterHeartbeatSql` (load
 * thresholds with hysteresis, Docker health, the agent's own drain); the HealthMonitor marks
 * silent workers offline. An admin's `draining` is never overridden by either.
 */

export type WorkerStatus = 'pending' | 'active' | 'unhealthy' | 'draining' | 'offline';

export interface HealthOptions {
  /** The agents' heartbeat interval (seconds). Default 30, the agent's default. */
  heartbeatIntervalSec: number;
  /** A worker silent for this many intervals is offline. Default 4: 120 s at 30 s, SkyPanelV2's own rule. */
  missedIntervals: number;
  /** Unhealthy above these percents (SkyPanelV2's resource-exhaustion thresholds by default). */
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  /**
   * An unhealthy worker turns active again only once every metric is this many points below its
   * threshold, so a load hovering at a threshold does not flip the status on every heartbeat.
   */
  recoveryMargin: number;
}

export const DEFAULT_HEALTH: HealthOptions = {
  heartbeatIntervalSec: 30,
  missedIntervals: 4,
  cpuPercent: 90,
  memoryPercent: 95,
  diskPercent: 90,
  recoveryMargin: 5,
};

export interface HeartbeatHealth {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  /** false when the agent could not reach its Docker engine; undefined from agents that do not say. */
  dockerHealthy: boolean | undefined;
  /** true after `skypanel-agent drain` on the host. */
  draining: boolean | undefined;
}

function overThresholds(h: HeartbeatHealth, o: HealthOptions, margin: number): boolean {
  return h.cpuPercent > o.cpuPercent - margin || h.memoryPercent > o.memoryPercent - margin || h.diskPercent > o.diskPercent - margin;
}

/** What a heartbeat says by itself; `STATUS_AFTER_HEARTBEAT_SQL` weighs it against the row. */
export interface BeatVerdict {
  /** The agent asks to be drained (`skypanel-agent drain` on the host). */
  agentDraining: boolean;
  dockerUnhealthy: boolean;
  /** Over a threshold (SkyPanelV2 compares with >). */
  over: boolean;
  /** Over a threshold less the recovery margin: an unhealthy worker stays unhealthy while this holds. */
  overWithMargin: boolean;
}

export function beatVerdict(beat: HeartbeatHealth, o: HealthOptions): BeatVerdict {
  return {
    agentDraining: beat.draining === true,
    dockerUnhealthy: beat.dockerHealthy === false,
    over: overThresholds(beat, o, 0),
    overWithMargin: overThresholds(beat, o, o.recoveryMargin),
  };
}

/**
 * The status a heartbeat leaves the worker in, as one SQL expression over the row the heartbeat's
 * UPDATE rewrites (its old `status` and `current_load`) and the verdict (agentDraining,
 * dockerUnhealthy, over, overWithMargin), so a heartbeat is one statement under the row's own lock
 * rather than a locked read, a decision here and a write (four round trips more per beat).
 * - the agent asks to drain: `draining`;
 * - a `draining` status the agent did not ask for (its previous beat, kept in current_load, did not
 *   say draining) is the admin's, and stays;
 * - Docker unreachable, or over a threshold: `unhealthy`; an unhealthy worker recovers only once
 *   every figure is the recovery margin below its threshold, so a load at a threshold does not flap;
 * - otherwise `active` (also from `offline` and `pending`: the worker is back).
 * `verdict` is either the number of the first of four parameters ($n..$n+3) or four boolean SQL
 * expressions in that order (the batched heartbeat reads them from its VALUES rows).
 */
export function statusAfterHeartbeatSql(verdict: number | readonly [string, string, string, string]): string {
  const [agentDraining, dockerUnhealthy, over, overWithMargin] =
    typeof verdict === 'number' ? [0, 1, 2, 3].map((i) => `$${verdict + i}::boolean`) : verdict;
  return `CASE
      WHEN ${agentDraining} THEN 'draining'
      WHEN status = 'draining' AND NOT COALESCE(current_load -> 'draining' = 'true'::jsonb, false) THEN 'draining'
      WHEN ${dockerUnhealthy} THEN 'unhealthy'
      WHEN ${over} OR (status = 'unhealthy' AND ${overWithMargin}) THEN 'unhealthy'
      ELSE 'active' END`;
}

export function beatVerdictParams(v: BeatVerdict): boolean[] {
  return [v.agentDraining, v.dockerUnhealthy, v.over, v.overWithMargin];
}

export function validateHealthOptions(o: HealthOptions): void {
  const positive = (name: keyof HealthOptions): void => {
    if (!Number.isFinite(o[name]) || o[name] <= 0) throw new RangeError(`health.${name} must be a positive number`);
  };
  positive('heartbeatIntervalSec');
  positive('missedIntervals');
  for (const name of ['cpuPercent', 'memoryPercent', 'diskPercent'] as const) {
    if (!(o[name] > 0 && o[name] <= 100)) throw new RangeError(`health.${name} must be in (0, 100]`);
  }
  if (!(o.recoveryMargin >= 0 && o.recoveryMargin < 50)) throw new RangeError('health.recoveryMargin must be in [0, 50)');
}
