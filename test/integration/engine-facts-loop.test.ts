import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { configSchema } from '../../src/agent/config-schema.js';
import type { EngineProbe, EngineSnapshot } from '../../src/ports.js';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { waitFor } from '../helpers/cli.js';

/**
 * The engine's facts live on their own loop: a heartbeat reads the latest without calling the
 * engine. The probe stands in for dockerd because a daemon that hangs on GET /info for as long as
 * the test wants is a fault a real one cannot be made to show on demand.
 */
class StallableProbe implements EngineProbe {
  calls = 0;
  containersRunning = 3;
  #stall: Promise<void> | undefined;
  #release: () => void = () => {};

  async snapshot(): Promise<EngineSnapshot> {
    this.calls++;
    await this.#stall;
    return {
      dockerVersion: '27.0.0-test',
      dockerRootDir: tmpdir(),
      containersRunning: this.containersRunning,
      ncpu: 2,
      swarmNodeId: null,
      swarmRole: 'none',
    };
  }

  stall(): void {
    this.#stall = new Promise((r) => (this.#release = r));
  }

  release(): void {
    this.#release();
    this.#stall = undefined;
  }
}

type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;

describe('engine facts on their own loop', () => {
  let cp: RefCp;
  let dir: string;

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    dir = await mkdtemp(join(tmpdir(), 'skp-engine-facts-'));
  });

  afterAll(async () => {
    await cp.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('heartbeats keep their interval while GET /info hangs, and carry the last facts read', async () => {
    const workerId = randomUUID();
    const config = configSchema.parse({
      controlPlaneUrl: cp.url,
      token: cp.mintToken(workerId),
      workerId,
      heartbeatIntervalSec: 1,
      stateDir: dir,
      statusListen: '127.0.0.1:0',
      metricsListen: 'off',
    });
    const probe = new StallableProbe();
    const agent = new Agent({ config, logger: pino({ level: 'silent' }), engine: probe });
    await agent.start();
    try {
      const beats = () => cp.workers.get(workerId)?.heartbeats ?? 0;
      await waitFor(
        () => beats() >= 2,
        10_000,
        () => `heartbeats: ${beats()}`,
      );
      expect(cp.workers.get(workerId)!.currentLoad.containerCount).toBe(3);

      // A read every third heartbeat interval: over 4 beats (one at once, then 1 s apart),
      // the start's read and at most one more.
      const callsAt = probe.calls;
      const from = beats();
      await waitFor(
        () => beats() >= from + 4,
        10_000,
        () => `heartbeats: ${beats()}`,
      );
      expect(probe.calls - callsAt).toBeLessThanOrEqual(2);

      // dockerd stops answering GET /info: the beats go on at their interval with the last facts.
      probe.containersRunning = 7;
      probe.stall();
      const stalledFrom = beats();
      const started = Date.now();
      await waitFor(
        () => beats() >= stalledFrom + 4,
        8_000,
        () => `heartbeats while /info hangs: ${beats() - stalledFrom}`,
      );
      expect(Date.now() - started).toBeLessThan(7_000);
      expect(probe.calls).toBeGreaterThan(callsAt); // a read is hanging now, not skipped
      expect(cp.workers.get(workerId)!.lastHeartbeatExtras!.dockerHealthy).toBe(true);
      expect(cp.workers.get(workerId)!.currentLoad.containerCount).toBe(3);

      // Once it answers, the next beats carry the new count.
      probe.release();
      await waitFor(
        () => cp.workers.get(workerId)!.currentLoad.containerCount === 7,
        10_000,
        () => 'the new count',
      );
    } finally {
      probe.release();
      await agent.stop();
    }
  }, 40_000);
});
