// Mixed fleets on a real multi-node swarm: one Docker endpoint for every command (DOCKER_HOST at a
// worker node), tasks placed by SkyPanelV2's own orchestrator observed on that node and never
// duplicated by an agent writing through the manager (remote-manager mode), and an
// organization network holding 300 services of one organization (beyond Docker's default /24).
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { overlaps, parseCidr, parseSubnet } from '../../src/domain/subnets.js';
import { networkName } from '../../src/domain/naming.js';
import { DEFAULT_ORG_NETWORK_POOL, DEFAULT_ORG_NETWORK_PREFIX } from '../../src/agent/config-schema.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { TEST_IMAGE } from '../helpers/docker.js';
import {
  BRING_UP_BOUND_MS,
  MULTINODE_ORG_PREFIX,
  multinodeReady,
  removeOrganization,
  SESSION_WAIT_MS,
  servicesByLabel,
  startMultinode,
  startWorkerAgent,
  tasksOfService,
  type Multinode,
  type WorkerAgent,
} from '../helpers/multinode.js';

const ready = await multinodeReady();
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `${MULTINODE_ORG_PREFIX}placed-${randomUUID().slice(0, 8)}`;
const SCALE_ORG = `${MULTINODE_ORG_PREFIX}scale-${randomUUID().slice(0, 8)}`;
const SCALE = 300;

describe.skipIf(!ready.ok)('mixed fleets on a multi-node swarm', () => {
  let mn: Multinode;
  let cp: RefCp;
  const tokens: string[] = [];
  const agents: AgentProcess[] = [];
  const workerAgents: WorkerAgent[] = [];

  beforeAll(async () => {
    mn = await startMultinode({ workers: 1 });
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  }, SESSION_WAIT_MS + BRING_UP_BOUND_MS);

  afterAll(async () => {
    await Promise.all([...agents.map((a) => a.stop()), ...workerAgents.map((a) => a.agent.stop())]);
    if (mn) {
      await removeOrganization(mn.manager, ORG);
      await removeOrganization(mn.manager, SCALE_ORG);
    }
    const everything = capturedOutput.join('\n');
    for (const t of [...tokens, ...workerAgents.map((a) => a.token)]) expect(everything).not.toContain(t);
    await cp?.close();
    await mn?.teardown();
  }, 300_000);

  /**
   * A service as SkyPanelV2's SwarmOrchestrator.deployContainer creates it (labels on service and
   * container, no skypanel.managed, its org-<org>-network), pinned to the worker so the test knows
   * where its task runs (SkyPanelV2 sets no constraint and Swarm could pick either node).
   */
  async function createLikeSkyPanel(
    d: { id: string; serviceId: string; slug: string },
    nodeId: string,
    command: string[],
  ): Promise<string> {
    const net = `org-${ORG}-network`;
    await mn.manager
      .createNetwork({
        Name: net,
        Driver: 'overlay',
        Attachable: true,
        Labels: { [LABEL.organizationId]: ORG, 'skypanel.network.type': 'organization' },
        Options: { encrypted: 'true' },
      })
      .catch(() => {});
    const labels = { [LABEL.serviceId]: d.serviceId, [LABEL.deploymentId]: d.id, [LABEL.organizationId]: ORG };
    const created = (await mn.manager.createService({
      Name: `org-${ORG}-${d.slug}`,
      TaskTemplate: {
        ContainerSpec: { Image: TEST_IMAGE, Args: command, Labels: { ...labels, 'skypanel.slug': d.slug } },
        Resources: {
          Limits: { NanoCPUs: 100_000_000, MemoryBytes: 16 << 20 },
          Reservations: { NanoCPUs: 50_000_000, MemoryBytes: 8 << 20 },
        },
        RestartPolicy: { Condition: 'on-failure', Delay: 1_000_000_000, MaxAttempts: 3 },
        Placement: { Constraints: [`node.id==${nodeId}`] },
      },
      Mode: { Replicated: { Replicas: 1 } },
      Networks: [{ Target: net, Aliases: [d.slug] }],
      EndpointSpec: { Mode: 'vip', Ports: [] },
      Labels: labels,
    } as never)) as { id?: string; ID?: string };
    return created.id ?? created.ID!;
  }

  it('register, run, status and doctor all drive the engine DOCKER_HOST names (a worker); observe mode reports the tasks SkyPanelV2 placed there; nothing is created on the manager', async () => {
    const w = mn.workers[0]!;
    const row = (slug: string) => ({
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      slug,
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
    });
    const web = row('placed-web');
    const crash = row('placed-crash');
    await createLikeSkyPanel(web, w.nodeId, ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait']);
    await createLikeSkyPanel(crash, w.nodeId, ['sh', '-c', 'echo placed-crash-output; exit 3']);

    const workerId = randomUUID();
    const token = cp.mintToken(workerId);
    tokens.push(token);
    const config = join(await mkdtemp(join(tmpdir(), 'skp-mixed-')), 'config.json');
    // Only DOCKER_HOST says where Docker is (an inherited SKYPANEL_AGENT_DOCKER_SOCKET would win: blank it).
    const env = { DOCKER_HOST: `unix://${w.socketPath}`, SKYPANEL_AGENT_DOCKER_SOCKET: '' };
    const reg = await runCli(
      ['register', '--control-plane', cp.url, '--token', token, '--config', config, '--ip-address', w.ip, '--heartbeat-interval', '1'],
      { env },
    );
    expect(reg.code, reg.stderr).toBe(0);
    expect(reg.stderr).toContain(`Docker Engine: unix://${w.socketPath} (from DOCKER_HOST)`);
    const registered = cp.workers.get(workerId) as unknown as { metadata: { swarmRole: string; swarmNodeId: string } };
    expect(registered.metadata).toMatchObject({ swarmRole: 'worker', swarmNodeId: w.nodeId });
    // Pinned in the config: the service, which has no DOCKER_HOST, drives the engine that was registered.
    expect(JSON.parse(await readFile(config, 'utf8')).dockerSocket).toBe(w.socketPath);

    const agent = new AgentProcess(['run', '--config', config], {
      ...env,
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
    });
    agents.push(agent);
    const started = await agent.waitForLog((l) => l.msg === 'agent started', 20_000);
    expect(started).toMatchObject({
      swarmRole: 'worker',
      reconcileMode: 'observe',
      dockerEndpoint: `unix://${w.socketPath} (from the config file)`,
    });
    cp.setDeployments(workerId, [web, crash]);

    const status = (id: string) => cp.deploymentStatusOf(workerId).get(id);
    await waitFor(
      () => status(web.id)?.status === 'running' && status(crash.id)?.status === 'failed',
      60_000,
      () => agent.output.slice(-3000),
    );
    expect(status(crash.id)!.deploymentLogs).toContain('placed-crash-output');

    const url = `http://${String(started.statusApi)}`;
    const st = await runCli(['status', '--config', config, '--url', url], { env: {} });
    expect(st.stdout).toContain(`unix://${w.socketPath} (from the config file)`);
    const json = JSON.parse((await runCli(['status', '--config', config, '--url', url, '--json'], { env: {} })).stdout) as {
      status: { swarm: { nodeId: string } };
    };
    expect(json.status.swarm.nodeId).toBe(w.nodeId);
    // doctor, without DOCKER_HOST: the pinned worker socket, not the manager's default one.
    const doc = await runCli(['doctor', '--config', config, '--json'], {
      env: { DOCKER_HOST: '', SKYPANEL_AGENT_DOCKER_SOCKET: '' },
      timeoutMs: 60_000,
    });
    const checks = (JSON.parse(doc.stdout) as { checks: { id: string; status: string; message: string }[] }).checks;
    expect(checks.find((c) => c.id === 'docker')).toMatchObject({
      status: 'pass',
      message: expect.stringContaining(`unix://${w.socketPath} (from the config file)`),
    });
    expect(checks.find((c) => c.id === 'swarm')?.message).toMatch(/worker/);

    // Nothing on the manager for this worker: no service of its own, no network, no second copy.
    await new Promise((r) => setTimeout(r, 6_000));
    expect(await servicesByLabel(mn.manager, `${LABEL.workerId}=${workerId}`)).toHaveLength(0);
    expect(await mn.manager.listNetworks({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })).toHaveLength(0);
    for (const d of [web, crash]) expect(await servicesByLabel(mn.manager, `${LABEL.deploymentId}=${d.id}`)).toHaveLength(1);
    expect((await agent.stop()).code).toBe(0);
  }, 180_000);

  it('remote-manager mode does not create a second service beside one SkyPanelV2 placed: failed, naming it', async () => {
    const w = mn.workers[0]!;
    const d = {
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      slug: 'placed-remote',
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
      command: ['sleep', '3600'],
    };
    const holderId = await createLikeSkyPanel(d, w.nodeId, ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait']);
    const a = await startWorkerAgent({ cp, worker: w, workerId: randomUUID(), manager: { host: mn.tls.host, files: mn.tls.clients[0]! } });
    workerAgents.push(a);
    expect(await a.agent.waitForLog((l) => l.msg === 'agent started', 20_000)).toMatchObject({ reconcileMode: 'remote-manager' });
    cp.setDeployments(a.workerId, [d]);
    const status = () => cp.deploymentStatusOf(a.workerId).get(d.id);
    await waitFor(
      () => status()?.status === 'failed',
      30_000,
      () => a.agent.output.slice(-3000),
    );
    expect(status()!.message).toContain(`org-${ORG}-placed-remote (${holderId})`);
    await new Promise((r) => setTimeout(r, 6_000));
    expect(await servicesByLabel(mn.manager, `${LABEL.workerId}=${a.workerId}`)).toHaveLength(0);
    expect(mn.tls.writes('skp-worker-0').filter((l) => l === 'POST /services/create')).toHaveLength(0);
    expect((await a.agent.stop()).code).toBe(0);
  }, 120_000);

  it(
    `runs ${SCALE} services of one organization on one overlay network, all running`,
    async () => {
      const w = mn.workers[0]!;
      // On the worker node: its reservations (300 × 0.005 CPU) do not crowd the shared manager's tasks.
      const a = await startWorkerAgent({
        cp,
        worker: w,
        workerId: randomUUID(),
        manager: { host: mn.tls.host, files: mn.tls.clients[0]! },
      });
      workerAgents.push(a);
      expect(await a.agent.waitForLog((l) => l.msg === 'agent started', 20_000)).toMatchObject({ reconcileMode: 'remote-manager' });
      const deployments = Array.from({ length: SCALE }, (_, i) => ({
        id: randomUUID(),
        serviceId: randomUUID(),
        organizationId: SCALE_ORG,
        slug: `s${i}`,
        imageTag: TEST_IMAGE,
        desiredState: 'running',
        environmentVars: {},
        resourceLimits: { cpuCores: 0.01, memoryMb: 8 },
        command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'],
      }));
      const started = Date.now();
      cp.setDeployments(a.workerId, deployments);
      const running = () => deployments.filter((d) => cp.deploymentStatusOf(a.workerId).get(d.id)?.status === 'running').length;
      await waitFor(
        () => running() === SCALE,
        12 * 60_000,
        () => `${running()}/${SCALE} running\n${a.agent.output.slice(-2000)}`,
      );
      process.stderr.write(
        `[mixed-fleet] ${SCALE} services of one organization running ${Math.round((Date.now() - started) / 1000)} s after assignment\n`,
      );

      // One network for the organization, with a subnet from the pool large enough for all of them.
      const nets = (await mn.manager.listNetworks({ filters: JSON.stringify({ label: [`${LABEL.organizationId}=${SCALE_ORG}`] }) })) as {
        Name: string;
        IPAM: { Config: { Subnet: string }[] };
      }[];
      expect(nets.map((n) => n.Name)).toEqual([networkName(SCALE_ORG)]);
      const subnet = parseSubnet(nets[0]!.IPAM.Config[0]!.Subnet)!;
      expect(subnet.prefix).toBe(DEFAULT_ORG_NETWORK_PREFIX);
      expect(overlaps(subnet, parseCidr(DEFAULT_ORG_NETWORK_POOL)!)).toBe(true);
      // Swarm agrees: every service has its task running, on the worker.
      const services = await servicesByLabel(mn.manager, `${LABEL.organizationId}=${SCALE_ORG}`);
      expect(services).toHaveLength(SCALE);
      const sample = services.slice(0, 10);
      for (const s of sample)
        expect((await tasksOfService(mn.manager, s.ID)).some((t) => t.Status?.State === 'running' && t.NodeID === w.nodeId)).toBe(true);
      expect((await a.agent.stop()).code).toBe(0);
      // Cleaned up here rather than in afterAll: 300 tasks are most of this machine's containers.
      await removeOrganization(mn.manager, SCALE_ORG);
    },
    15 * 60_000,
  );
});
