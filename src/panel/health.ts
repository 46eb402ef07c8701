/**
 * How the panel judges a worker's health. The heartbeat applies `statusAfterHeartbeat` (load
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

/**
 * The status a heartbeat leaves the worker in. `previousAgentDraining` is the `draining` flag of
 * the previous heartbeat: a `draining` status the agent did not ask for is the admin's, and stays.
 */
export function statusAfterHeartbeat(current: string | null, previousAgentDraining: boolean, beat: HeartbeatHealth, o: HealthOptions): WorkerStatus {
  if (beat.draining === true) return 'draining';
  if (current === 'draining' && !previousAgentDraining) return 'draining';
  if (beat.dockerHealthy === false) return 'unhealthy';
  const margin = current === 'unhealthy' ? o.recoveryMargin : 0;
  return overThresholds(beat, o, margin) ? 'unhealthy' : 'active';
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
