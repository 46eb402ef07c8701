// A task Swarm cannot place stays pending for ever; the deployment must not be `deploying` for
// ever. Past unscheduledTimeoutSec it is reported failed with Swarm's own reason, and it turns
// running by itself once Swarm places the task. Conditions made on the shared swarm without
// starving anyone: a reservation larger than the host, and a host port held by another task.
import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `org-unscheduled-${randomUUID().slice(0, 8)}`;
const BOUND_SEC = 5;

describe.skipIf(!ready.ok)('deployments Swarm cannot place', () => {
  let cp: RefCp;
  let agent: AgentProcess | undefined;
  let workerId = '';
  let token = '';
  let blockerId: string | undefined;

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await agent?.stop();
    if (blockerId)
      await docker
        .getService(blockerId)
        .remove()
        .catch(() => {});
    const ours = (await docker
      .listServices({ filters: JSON.stringify({ label: [`${LABEL.organizationId}=${ORG}`] }) })
      .catch(() => [])) as { ID: string }[];
    for (const s of ours)
      await docker
        .getService(s.ID)
        .remove()
        .catch(() => {});
    if (workerId) await removeWorkerLeftovers(docker, workerId);
    await waitFor(
      async () => {
        const nets = (await docker.listNetworks({ filters: JSON.stringify({ label: [`${LABEL.organizationId}=${ORG}`] }) })) as {
          Id: string;
        }[];
        for (const n of nets)
          await docker
            .getNetwork(n.Id)
            .remove()
            .catch(() => {});
        return nets.length === 0;
      },
      30_000,
      () => 'network cleanup',
    ).catch(() => {});
    expect(capturedOutput.join('\n') + JSON.stringify(cp.requests)).not.toContain(token);
    await cp.close();
  }, 60_000);

  it("reports failed with Swarm's reason after the bound, and running again by itself when the task is placed", async () => {
    const nodeId = ((await docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID;
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    // Another task holds the host port on this node (Swarm's scheduler accounts host-mode ports of tasks).
    const blocker = (await docker.createService({
      Name: `skp-unscheduled-blocker-${randomUUID().slice(0, 8)}`,
      Labels: { [LABEL.organizationId]: ORG },
      TaskTemplate: {
        ContainerSpec: { Image: TEST_IMAGE, Args: ['sleep', '3600'], StopGracePeriod: 1_000_000_000 },
        Placement: { Constraints: [`node.id==${nodeId}`] },
      },
      Mode: { Replicated: { Replicas: 1 } },
      EndpointSpec: { Ports: [{ Protocol: 'tcp', TargetPort: 80, PublishedPort: port, PublishMode: 'host' }] },
    } as never)) as { id?: string; ID?: string };
    blockerId = blocker.id ?? blocker.ID;

    const row = (over: Record<string, unknown>) => ({
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
      command: ['sleep', '3600'],
      ...over,
    });
    // Reserves half its limit: 512 GiB, more than this host (or any CI host) has.
    const huge = row({ slug: 'too-big', resourceLimits: { cpuCores: 0.1, memoryMb: 1_048_576 } });
    const portBound = row({ slug: 'port-taken', internalPort: 8080, externalPort: port });

    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const config = join(await mkdtemp(join(tmpdir(), 'skp-unscheduled-')), 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
      SKYPANEL_AGENT_UNSCHEDULED_TIMEOUT: String(BOUND_SEC),
    });
    await agent.waitForLog((l) => l.msg === 'agent started', 20_000);
    await waitFor(
      async () =>
        (
          (await docker.listTasks({ filters: JSON.stringify({ service: [blockerId!], 'desired-state': ['running'] }) })) as {
            Status?: { State?: string };
          }[]
        ).some((t) => t.Status?.State === 'running'),
      30_000,
      () => 'blocker running',
    );
    const given = Date.now();
    cp.setDeployments(workerId, [huge, portBound]);

    const status = (id: string) => cp.deploymentStatusOf(workerId).get(id);
    // Deploying within the bound (not failed at once: placing takes a moment on a busy swarm).
    await waitFor(
      () => status(huge.id)?.status === 'deploying',
      15_000,
      () => agent!.output.slice(-3000),
    );
    await waitFor(
      () => status(huge.id)?.status === 'failed' && status(portBound.id)?.status === 'failed',
      60_000,
      () => agent!.output.slice(-3000),
    );
    expect(Date.now() - given).toBeGreaterThanOrEqual(BOUND_SEC * 1000);
    expect(status(huge.id)!.message).toContain('insufficient resources');
    expect(status(portBound.id)!.message).toContain('host-mode port already in use');

    // The condition clears: the port-bound task is placed by Swarm, and the report follows by itself.
    await docker.getService(blockerId!).remove();
    blockerId = undefined;
    await waitFor(
      () => status(portBound.id)?.status === 'running',
      90_000,
      () => agent!.output.slice(-3000),
    );
    expect(status(portBound.id)!.externalPort).toBe(port);
    expect(status(huge.id)?.status).toBe('failed');
    expect((await agent.stop()).code).toBe(0);
  }, 180_000);
});
