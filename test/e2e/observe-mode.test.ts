import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { buildServiceSpec } from '../../src/domain/service-spec.js';
import { parseDeployment } from '../../src/protocol/deployment.js';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { getEngineFacts } from '../../src/swarm/engine.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';
import { DockerProxy } from '../helpers/docker-proxy.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

const ready = await ensureDocker();
/** The agent's client, for the code under test; `docker` is the test's own look at Docker. */
const engine = createDockerClient({ timeoutMs: 30_000 });
const docker = dockerode({ timeoutMs: 30_000 });

describe.skipIf(!ready.ok)('observe mode', () => {
  const created: string[] = [];
  afterAll(async () => {
    for (const id of created)
      await docker
        .getService(id)
        .remove()
        .catch(() => {});
  });

  it('reports running and failed for services someone else runs on this node, and never writes to Docker', async () => {
    const cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    const proxy = new DockerProxy();
    await proxy.start();
    const dir = await mkdtemp(join(tmpdir(), 'skp-observe-'));
    const workerId = randomUUID();
    const config = join(dir, 'config.json');
    const token = cp.mintToken(workerId);
    const nodeId = (await getEngineFacts(engine)).swarm.nodeId!;
    const row = (over: Record<string, unknown>) => ({
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: 'org-observe',
      slug: 'obs',
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
      ...over,
    });
    const ok = row({ command: ['sleep', '3600'] });
    const crashing = row({ slug: 'crash', command: ['sh', '-c', 'echo observed-crash; exit 4'] });
    const neverCreated = row({ slug: 'absent' });
    // The "manager side" (the test) creates two of the three services, labelled as an agent would.
    for (const raw of [ok, crashing]) {
      const p = parseDeployment(raw);
      if (!p.ok) throw new Error(p.rejected.message);
      const { spec } = buildServiceSpec(p.deployment, { workerId: 'manager-side', nodeId });
      const { TaskTemplate, ...rest } = spec;
      const res = (await docker.createService({ ...rest, TaskTemplate: { ...TaskTemplate, Networks: [] } } as never)) as {
        id?: string;
        ID?: string;
      };
      created.push(res.id ?? res.ID!);
    }
    cp.setDeployments(workerId, [ok, crashing, neverCreated]);
    expect(
      (await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--docker-socket', proxy.socketPath]))
        .code,
    ).toBe(0);
    const agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_RECONCILE_MODE: 'observe',
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
    });
    try {
      await agent.waitForLog((l) => String(l.msg).startsWith('observe mode'));
      // Registered as a manager by `register`; `run` refreshes the row with the mode it really runs in.
      await waitFor(
        () => (cp.workers.get(workerId)?.metadata as { reconcileMode?: string } | undefined)?.reconcileMode === 'observe',
        15_000,
        () => agent.output.slice(-2000),
      );
      const status = (id: string) => cp.deploymentStatusOf(workerId).get(id)?.status;
      await waitFor(
        () => status(ok.id) === 'running',
        60_000,
        () => agent.output.slice(-2000),
      );
      await waitFor(
        () => status(crashing.id) === 'failed',
        60_000,
        () => agent.output.slice(-2000),
      );
      expect(cp.deploymentStatusOf(workerId).get(crashing.id)!.deploymentLogs).toContain('observed-crash');
      expect(status(neverCreated.id)).toBe('deploying');
      expect(proxy.requests.length).toBeGreaterThan(0);
      expect(proxy.writes()).toEqual([]);
      const ours = (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown[];
      expect(ours).toHaveLength(0);
    } finally {
      await agent.stop();
      await proxy.stop();
      await cp.close();
    }
  });
});
