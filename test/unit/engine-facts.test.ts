import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ENGINE_FACTS_EVERY_BEATS, EngineFacts } from '../../src/agent/engine-facts.js';
import type { EngineSnapshot } from '../../src/ports.js';

afterEach(() => vi.useRealTimers());

const SNAP: EngineSnapshot = {
  dockerVersion: '27.0.0',
  dockerRootDir: '/var/lib/docker',
  containersRunning: 4,
  ncpu: 2,
  swarmNodeId: 'node1',
  swarmRole: 'manager',
};

function setup(intervalMs = 10_000) {
  const probe = { calls: 0, down: false };
  const logs: { msg: string }[] = [];
  const reads: EngineSnapshot[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _e, cb) {
        logs.push(JSON.parse(String(chunk)) as { msg: string });
        cb();
      },
    }),
  );
  const facts = new EngineFacts({
    probe: {
      snapshot: async () => {
        probe.calls++;
        if (probe.down) throw new Error('connect ENOENT /var/run/docker.sock');
        return { ...SNAP, containersRunning: probe.calls };
      },
    },
    heartbeatIntervalMs: intervalMs,
    logger,
    onRead: (f) => reads.push(f),
  });
  return { facts, probe, logs, reads };
}

describe('EngineFacts', () => {
  it('reads a healthy engine every third heartbeat interval: 120 GET /info an hour at 10 s beats', async () => {
    vi.useFakeTimers();
    const { facts, probe } = setup(10_000);
    await facts.refresh();
    facts.start();
    await vi.advanceTimersByTimeAsync(3_600_000);
    await facts.stop();
    expect(ENGINE_FACTS_EVERY_BEATS).toBe(3);
    expect(probe.calls).toBe(1 + 120);
    expect(facts.latest?.containersRunning).toBe(121);
  });

  it('reads an engine that does not answer every interval, keeps the last facts, and says so once', async () => {
    vi.useFakeTimers();
    const { facts, probe, logs, reads } = setup(10_000);
    await facts.refresh();
    facts.start();
    expect(facts.healthy).toBe(true);
    probe.down = true;
    await vi.advanceTimersByTimeAsync(30_000);
    expect(facts.healthy).toBe(false);
    expect(facts.latest?.dockerVersion).toBe('27.0.0');
    const before = probe.calls;
    await vi.advanceTimersByTimeAsync(50_000);
    expect(probe.calls - before).toBe(5);
    expect(logs.filter((l) => l.msg === 'docker unreachable; heartbeats report dockerHealthy=false')).toHaveLength(1);
    probe.down = false;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(facts.healthy).toBe(true);
    expect(reads).toHaveLength(2);
    expect(logs.filter((l) => l.msg === 'docker reachable')).toHaveLength(2);
    await facts.stop();
    const stoppedAt = probe.calls;
    await vi.advanceTimersByTimeAsync(120_000);
    expect(probe.calls).toBe(stoppedAt);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an engine never seen is reported unreachable at every read until it answers', async () => {
    vi.useFakeTimers();
    const { facts, probe, logs } = setup(1_000);
    probe.down = true;
    await facts.refresh();
    facts.start();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(facts.latest).toBeUndefined();
    expect(logs.filter((l) => l.msg.startsWith('docker unreachable'))).toHaveLength(3);
    await facts.stop();
  });
});
