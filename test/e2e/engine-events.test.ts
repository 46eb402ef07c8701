// A reconcile pass follows a Docker event (#7): with the resync set to an hour, a container of this
// worker killed behind the agent's back is still noticed in seconds, through the event stream of a
// real dockerd, and the replacement Swarm starts is what the panel hears about.
import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
const ORG = 'org-engine-events-e2e';

describe.skipIf(!ready.ok)('reconcile passes on Docker events', () => {
  let cp: Awaited<ReturnType<typeof startReferenceControlPlane>>;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await agent?.stop();
    const ours = (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.organizationId}=${ORG}`] }) })) as {
      ID: string;
    }[];
    for (const s of ours)
      await docker
        .getService(s.ID)
        .remove()
        .catch(() => {});
    await cp.close();
  });

  it('with an hour-long resync, reports the replacement of a killed container within seconds', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-events-e2e-'));
    const workerId = randomUUID();
    const config = join(dir, 'agent.json');
    const reg = await runCli([
      'register',
      '--control-plane',
      cp.url,
      '--token',
      cp.mintToken(workerId),
      '--config',
      config,
      '--heartbeat-interval',
      '30',
    ]);
    expect(reg.code, reg.stderr).toBe(0);
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '3600',
      SKYPANEL_AGENT_LOG_LEVEL: 'debug',
    });
    const d = {
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      slug: 'events',
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.25, memoryMb: 32 },
      command: ['sleep', '3600'],
    };
    cp.setDeployments(workerId, [d]);
    const report = () => cp.deploymentStatusOf(workerId).get(d.id);
    await waitFor(
      () => report()?.status === 'running' && Boolean(report()?.containerId),
      60_000,
      () => agent!.output.slice(-3000),
    );
    const first = report()!.containerId!;
    // Let the settle passes after the create run out: from here on only an event starts a pass.
    await new Promise((r) => setTimeout(r, 3_000));

    const killedAt = Date.now();
    await docker.getContainer(first).kill();
    await waitFor(
      () => report()?.status === 'running' && report()?.containerId !== first,
      30_000,
      () => `a report of the replacement container\n${agent!.output.slice(-3000)}`,
    );
    // Swarm restarts a task after its restart delay (5 s by default); the pass follows its start event
    // by about a second. Without events the next pass would be the hourly resync.
    expect(Date.now() - killedAt).toBeLessThan(25_000);
    expect(agent.output).not.toContain('docker event stream lost');
  }, 120_000);
});
