import { describe, expect, it } from 'vitest';
import { memoryInUse, parseEngineStats, uptimeUpperBoundMs } from '../../src/swarm/container-stats.js';

describe('container stats parsing', () => {
  it('memory in use is usage minus inactive file cache, as docker stats shows it (cgroup v1 and v2)', () => {
    expect(memoryInUse({ usage: 100, stats: { total_inactive_file: 30, inactive_file: 10 } })).toBe(70);
    expect(memoryInUse({ usage: 100, stats: { inactive_file: 10 } })).toBe(90);
    expect(memoryInUse({ usage: 100, stats: { total_inactive_file: 300 } })).toBe(100);
    expect(memoryInUse({ usage: 100 })).toBe(100);
    expect(memoryInUse(undefined)).toBe(0);
  });

  it('parses cumulative cpu, summed network over interfaces, and the read time', () => {
    const p = parseEngineStats({
      read: '2026-11-25T10:24:27.807397611Z',
      cpu_stats: { cpu_usage: { total_usage: 19_975_725 } },
      memory_stats: { usage: 516_096, stats: { total_inactive_file: 16_096 } },
      networks: { eth0: { rx_bytes: 266, tx_bytes: 10 }, eth1: { rx_bytes: 1000, tx_bytes: 24 } },
    });
    expect(p).toEqual({ readMs: Date.parse('2026-11-25T10:24:27.807Z'), cpuNs: 19_975_725, memoryBytes: 500_000, networkBytes: 1300 });
  });

  it('a stopped container (zero read time) is no reading; a host-network one has no network bytes', () => {
    expect(parseEngineStats({ read: '0001-01-01T00:00:00Z' })).toBeUndefined();
    expect(parseEngineStats({})).toBeUndefined();
    expect(parseEngineStats({ read: '2026-01-01T00:00:00Z', networks: null })!.networkBytes).toBe(0);
  });

  it('bounds the uptime in a docker ps status line from above', () => {
    expect(uptimeUpperBoundMs('Up Less than a second')).toBe(1000);
    expect(uptimeUpperBoundMs('Up 1 second')).toBe(2000);
    expect(uptimeUpperBoundMs('Up 42 seconds (healthy)')).toBe(43_000);
    expect(uptimeUpperBoundMs('Up About a minute')).toBe(120_000);
    expect(uptimeUpperBoundMs('Up 5 minutes (Paused)')).toBe(6 * 60_000);
    expect(uptimeUpperBoundMs('Up About an hour')).toBe(1.5 * 3_600_000);
    expect(uptimeUpperBoundMs('Up 3 hours')).toBe(3.5 * 3_600_000);
    expect(uptimeUpperBoundMs('Up 2 days')).toBe(3 * 86_400_000);
    expect(uptimeUpperBoundMs('Exited (0) 3 seconds ago')).toBeUndefined();
    expect(uptimeUpperBoundMs(undefined)).toBeUndefined();
  });
});
