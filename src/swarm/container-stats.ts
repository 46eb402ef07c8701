import { createCgroupStatsSampler } from './container-stats-cgroup.js';
import {
  createEngineStatsSampler,
  type ContainerStatsOptions,
  type ContainerStatsSampler,
  type EngineClient,
} from './container-stats-engine.js';

/**
 * Cumulative resource counters of this worker's containers, for usage metering. Two ways to read
 * the same numbers: the cgroup and /proc files (container-stats-cgroup.ts, the default, a few
 * reads per container and no Engine API call in steady state) and the Engine API's stats
 * endpoint (container-stats-engine.ts: what `docker stats` calls, the fallback wherever the files
 * cannot be used). See each module for its costs.
 */
export function createContainerStatsSampler(client: EngineClient, opts: ContainerStatsOptions): ContainerStatsSampler {
  return opts.source === 'engine' ? createEngineStatsSampler(client, opts) : createCgroupStatsSampler(client, opts);
}

export {
  DEFAULT_STORAGE_INTERVAL_MS,
  memoryInUse,
  parseEngineStats,
  uptimeUpperBoundMs,
  type ContainerReading,
  type ContainerStatsOptions,
  type ContainerStatsSampler,
  type EngineStats,
  type StatsSnapshot,
} from './container-stats-engine.js';
