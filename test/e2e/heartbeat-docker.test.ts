import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { getEngineFacts } from '../../src/swarm/engine.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { ensureDocker } from '../helpers/docker.js';

const docker = await ensureDocker();
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;

describe.skipIf(!docker.ok)('heartbeats with a real Docker engine', () => {
  let cp: RefCp;
  let dir: string;
  const tokens: string[] = [];

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    dir = await mkdtemp(join(tmpdir(), 'skp-e2e-hb-'));
  });

  afterAll(async () => {
    await cp.close();
    const all = capturedOutput.join('\n');
    for (const t of tokens) expect(all).not.toContain(t);
  });

  async function registerAndRun(extraArgs: string[] = []) {
    const token = cp.mintToken(randomUUID());
    tokens.push(token);
    const config = join(dir, `${randomUUID()}.json`);
    const reg = await runCli([
      'register',
      '--control-plane',
      cp.url,
      '--token',
      token,
      '--config',
      config,
      '--heartbeat-interval',
      '1',
      ...extraArgs,
    ]);
    expect(reg.code, reg.stderr).toBe(0);
    const { workerId } = JSON.parse(await readFile(config, 'utf8')) as { workerId: string };
    const agent = new AgentProcess(['run', '--config', config]);
    return { agent, workerId };
  }

  it('registers the swarm node and role, and heartbeats the real running-container count', async () => {
    const facts = await getEngineFacts(createDockerClient());
    const { agent, workerId } = await registerAndRun();
    try {
      const row = cp.workers.get(workerId)!;
      expect(row.metadata).toMatchObject({
        swarmNodeId: facts.swarm.nodeId,
        swarmRole: facts.swarm.role,
        reconcileMode: 'manager',
        dockerVersion: facts.dockerVersion,
      });
      await waitFor(
        () => cp.workers.get(workerId)?.lastHeartbeatExtras,
        15_000,
        () => agent.output,
      );
      const extras = cp.workers.get(workerId)!.lastHeartbeatExtras!;
      expect(extras.dockerHealthy).toBe(true);
      expect(extras.swarmNodeId).toBe(facts.swarm.nodeId);
      // Other test files start and stop containers on the same engine meanwhile, and a beat reports
      // the count as of its last engine read (up to 3 heartbeat intervals old): a beat and a read taken once
      // can straddle such a change. The assertion stays exact: a beat reports the count read then.
      const docker = createDockerClient();
      let now = -1;
      let beat = -2;
      await waitFor(
        async () => {
          beat = cp.workers.get(workerId)!.currentLoad.containerCount;
          now = (await getEngineFacts(docker)).containersRunning;
          return beat === now;
        },
        15_000,
        () => `heartbeat count ${beat} vs engine ${now}\n${agent.output}`,
      );
      expect(beat).toBe(now);
    } finally {
      await agent.stop();
    }
  });

  it('keeps heartbeating with dockerHealthy=false when the Docker socket does not answer', async () => {
    const { agent, workerId } = await registerAndRun(['--docker-socket', join(dir, 'no-docker.sock')]);
    try {
      await waitFor(
        () => cp.workers.get(workerId)?.lastHeartbeatExtras,
        15_000,
        () => agent.output,
      );
      expect(cp.workers.get(workerId)!.lastHeartbeatExtras!.dockerHealthy).toBe(false);
      expect(agent.logs().some((l) => l.msg === 'docker unreachable; heartbeats report dockerHealthy=false')).toBe(true);
    } finally {
      await agent.stop();
    }
  });
});
