import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { buildServiceSpec } from '../../src/domain/service-spec.js';
import { parseDeployment } from '../../src/protocol/deployment.js';
import { LABEL } from '../../src/domain/labels.js';
import { capturedOutput, waitFor } from '../helpers/cli.js';
import { DockerProxy } from '../helpers/docker-proxy.js';
import { TEST_IMAGE } from '../helpers/docker.js';
import {
  BRING_UP_BOUND_MS,
  MULTINODE_ORG_PREFIX,
  multinodeReady,
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
const ORG = `${MULTINODE_ORG_PREFIX}observe-${randomUUID().slice(0, 8)}`;

describe.skipIf(!ready.ok)('observe mode on a swarm worker: reports what runs on its node, writes nothing', () => {
  let mn: Multinode;
  let cp: RefCp;
  const agents: WorkerAgent[] = [];
  const proxy = new DockerProxy();

  beforeAll(async () => {
    mn = await startMultinode({ workers: 1 });
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  }, SESSION_WAIT_MS + BRING_UP_BOUND_MS);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.agent.stop()));
    await proxy.stop();
    if (mn)
      for (const s of await servicesByLabel(mn.manager, `${LABEL.organizationId}=${ORG}`).catch(() => []))
        await mn.manager
          .getService(s.ID)
          .remove()
          .catch(() => {});
    const everything = capturedOutput.join('\n');
    for (const a of agents) expect(everything).not.toContain(a.token);
    await cp?.close();
    await mn?.teardown();
  }, 120_000);

  it('reports running and failed for tasks the manager runs on its node, ignores other nodes, and never writes to its engine', async () => {
    const w = mn.workers[0]!;
    const row = (over: Record<string, unknown>) => ({
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      slug: 'obs',
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
      ...over,
    });
    const webApp = row({
      slug: 'obs-web',
      internalPort: 8080,
      command: [
        'sh',
        '-c',
        'trap "exit 0" TERM; mkdir -p /www && echo observed-on-the-worker > /www/index.html && httpd -f -p 8080 -h /www & wait',
      ],
    });
    const crashing = row({ slug: 'obs-crash', command: ['sh', '-c', 'echo observed-crash-on-the-worker; exit 4'] });
    const elsewhere = row({ slug: 'obs-elsewhere', command: ['sleep', '3600'] });
    const neverCreated = row({ slug: 'obs-absent' });

    // The manager side (the test) creates the services, pinned to the worker, labelled as the
    // writing agent would; one more is pinned to the manager's own node: not this worker's business.
    const placements: [Record<string, unknown>, string][] = [
      [webApp, w.nodeId],
      [crashing, w.nodeId],
      [elsewhere, mn.managerNodeId],
    ];
    for (const [raw, nodeId] of placements) {
      const p = parseDeployment(raw);
      if (!p.ok) throw new Error(p.rejected.message);
      const { spec } = buildServiceSpec(p.deployment, { workerId: 'manager-side', nodeId });
      // No per-organization overlay: nothing here needs one.
      await mn.manager.createService({ ...spec, TaskTemplate: { ...spec.TaskTemplate, Networks: [] } } as never);
    }

    await proxy.start(w.socketPath);
    const a = await startWorkerAgent({ cp, worker: w, workerId: randomUUID(), dockerSocket: proxy.socketPath });
    agents.push(a);
    const started = await a.agent.waitForLog((l) => l.msg === 'agent started', 20_000);
    expect(started).toMatchObject({ swarmRole: 'worker', reconcileMode: 'observe' });
    cp.setDeployments(a.workerId, [webApp, crashing, elsewhere, neverCreated]);

    const status = (id: string) => cp.deploymentStatusOf(a.workerId).get(id);
    await waitFor(
      () => status(webApp.id)?.status === 'running',
      60_000,
      () => a.agent.output.slice(-3000),
    );
    const report = status(webApp.id)!;
    expect(report.publicUrl).toMatch(new RegExp(`^http://${w.ip.replace(/\./g, '\\.')}:\\d+$`));
    expect(await (await fetch(`${report.publicUrl}/`)).text()).toContain('observed-on-the-worker');
    await waitFor(
      () => status(crashing.id)?.status === 'failed',
      60_000,
      () => a.agent.output.slice(-3000),
    );
    expect(status(crashing.id)!.deploymentLogs).toContain('observed-crash-on-the-worker');

    // The service pinned elsewhere runs, on the manager node, and this worker does not claim it.
    const [other] = await servicesByLabel(mn.manager, `${LABEL.serviceId}=${elsewhere.serviceId}`);
    await waitFor(
      async () => (await tasksOfService(mn.manager, other!.ID)).some((t) => t.Status?.State === 'running' && t.NodeID === mn.managerNodeId),
      30_000,
    );
    // A few more passes (resync 5 s) to let a wrong report show up if there were one.
    await new Promise((r) => setTimeout(r, 6_000));
    expect(status(elsewhere.id)?.status).toBe('deploying');
    expect(status(neverCreated.id)?.status).toBe('deploying');

    // The tasks it reported really are on its node.
    for (const d of [webApp, crashing]) {
      const [svc] = await servicesByLabel(mn.manager, `${LABEL.serviceId}=${d.serviceId}`);
      expect(new Set((await tasksOfService(mn.manager, svc!.ID)).map((t) => t.NodeID))).toEqual(new Set([w.nodeId]));
    }
    // Read-only: its engine saw reads only, and the manager holds nothing labelled for it.
    expect(proxy.requests.length).toBeGreaterThan(0);
    expect(proxy.writes()).toEqual([]);
    expect(await servicesByLabel(mn.manager, `${LABEL.workerId}=${a.workerId}`)).toHaveLength(0);
    expect(mn.tls.requests).toEqual([]);
    expect((await a.agent.stop()).code).toBe(0);
  }, 120_000);
});
