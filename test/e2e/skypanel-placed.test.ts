// A deployment SkyPanelV2's own orchestrator already placed (its labels, no skypanel.managed):
// an agent in manager mode must not create a second service for it. It reports the deployment
// failed naming the existing service, and creates its own once that service is gone.
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
const ORG = `org-skp-placed-${randomUUID().slice(0, 8)}`;

interface ServiceRow {
  ID: string;
  Spec: { Name: string; Labels: Record<string, string> };
}
const servicesOf = async (label: string) =>
  (await docker.listServices({ filters: JSON.stringify({ label: [label] }) })) as unknown as ServiceRow[];

/**
 * The service SkyPanelV2's SwarmOrchestrator.deployContainer (api/services/containers at acd179a)
 * creates: named org-<org>-<slug>, labels on the service and (plus the slug) on the container,
 * its organization network `org-<org>-network`, an ingress port, no node constraint. Only the
 * command is ours: the test image needs one to stay up.
 */
async function createLikeSkyPanel(d: { id: string; serviceId: string; slug: string }): Promise<string> {
  const networkName = `org-${ORG}-network`;
  await docker
    .createNetwork({
      Name: networkName,
      Driver: 'overlay',
      Attachable: true,
      Internal: false,
      EnableIPv6: false,
      Labels: { 'skypanel.organization.id': ORG, 'skypanel.network.type': 'organization', 'skypanel.network.isolated': 'true' },
      Options: { encrypted: 'true' },
    })
    .catch(() => {});
  const serviceName = `org-${ORG}-${d.slug}`;
  const created = (await docker.createService({
    Name: serviceName,
    TaskTemplate: {
      ContainerSpec: {
        Image: TEST_IMAGE,
        Args: ['sleep', '3600'],
        Env: [],
        Labels: {
          'skypanel.service.id': d.serviceId,
          'skypanel.deployment.id': d.id,
          'skypanel.organization.id': ORG,
          'skypanel.slug': d.slug,
        },
      },
      Resources: {
        Limits: { NanoCPUs: 100_000_000, MemoryBytes: 16 * 1024 * 1024 },
        Reservations: { NanoCPUs: 50_000_000, MemoryBytes: 8 * 1024 * 1024 },
      },
      RestartPolicy: { Condition: 'on-failure', Delay: 5_000_000_000, MaxAttempts: 3 },
      Placement: { Constraints: [] },
    },
    Mode: { Replicated: { Replicas: 1 } },
    Networks: [{ Target: networkName, Aliases: [d.slug] }],
    EndpointSpec: { Mode: 'vip', Ports: [{ Protocol: 'tcp', TargetPort: 8080, PublishMode: 'ingress' }] },
    Labels: {
      'skypanel.service.id': d.serviceId,
      'skypanel.deployment.id': d.id,
      'skypanel.organization.id': ORG,
      'traefik.enable': 'true',
    },
  } as never)) as { id?: string; ID?: string };
  return created.id ?? created.ID!;
}

describe.skipIf(!ready.ok)('a deployment SkyPanelV2 placed itself, with an agent in manager mode', () => {
  let cp: RefCp;
  let agent: AgentProcess | undefined;
  let workerId = '';
  let token = '';

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await agent?.stop();
    for (const s of await servicesOf(`${LABEL.organizationId}=${ORG}`).catch(() => []))
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

  it('reports it failed naming the existing service, creates no second one, and creates its own once that one is removed', async () => {
    const d = {
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      slug: 'placed',
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
      command: ['sleep', '3600'],
    };
    const holderId = await createLikeSkyPanel(d);
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const config = join(await mkdtemp(join(tmpdir(), 'skp-placed-')), 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
    });
    expect(await agent.waitForLog((l) => l.msg === 'agent started', 20_000)).toMatchObject({ reconcileMode: 'manager' });
    cp.setDeployments(workerId, [d]);

    const status = () => cp.deploymentStatusOf(workerId).get(d.id);
    await waitFor(
      () => status()?.status === 'failed',
      30_000,
      () => agent!.output.slice(-3000),
    );
    expect(status()!.message ?? '').toContain(`org-${ORG}-placed (${holderId})`);
    // Several resync passes later (5 s each), still no service of the agent's own.
    await new Promise((r) => setTimeout(r, 7_000));
    expect(await servicesOf(`${LABEL.workerId}=${workerId}`)).toHaveLength(0);
    expect(await servicesOf(`${LABEL.deploymentId}=${d.id}`)).toHaveLength(1);
    expect(status()?.status).toBe('failed');

    // The panel's orchestrator lets go: the service's remove event starts a pass that creates the agent's own.
    await docker.getService(holderId).remove();
    await waitFor(
      () => status()?.status === 'running',
      60_000,
      () => agent!.output.slice(-3000),
    );
    const now = await servicesOf(`${LABEL.deploymentId}=${d.id}`);
    expect(now).toHaveLength(1);
    expect(now[0]!.Spec.Labels[LABEL.workerId]).toBe(workerId);
    expect((await agent.stop()).code).toBe(0);
  }, 120_000);
});
