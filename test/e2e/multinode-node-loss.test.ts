import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { capturedOutput, waitFor } from '../helpers/cli.js';
import { TEST_IMAGE } from '../helpers/docker.js';
import {
  BRING_UP_BOUND_MS,
  MULTINODE_ORG_PREFIX,
  multinodeReady,
  runningContainersOn,
  SESSION_WAIT_MS,
  servicesByLabel,
  startMultinode,
  startWorkerAgent,
  tasksOfService,
  type Multinode,
  type WorkerAgent,
  removeOrganization,
} from '../helpers/multinode.js';

const ready = await multinodeReady();
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `${MULTINODE_ORG_PREFIX}loss-${randomUUID().slice(0, 8)}`;

function web(slug: string, greeting: string) {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug,
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: { GREETING: greeting },
    resourceLimits: { cpuCores: 0.1, memoryMb: 32 },
    internalPort: 8080,
    command: ['sh', '-c', 'trap "exit 0" TERM; mkdir -p /www && echo "$GREETING" > /www/index.html && httpd -f -p 8080 -h /www & wait'],
  };
}

describe.skipIf(!ready.ok)('node loss: a worker dockerd dies and comes back', () => {
  let mn: Multinode;
  let cp: RefCp;
  const agents: WorkerAgent[] = [];

  beforeAll(async () => {
    mn = await startMultinode({ workers: 2 });
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  }, SESSION_WAIT_MS + BRING_UP_BOUND_MS);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.agent.stop()));
    if (mn) await removeOrganization(mn.manager, ORG);
    const everything = capturedOutput.join('\n');
    for (const a of agents) expect(everything).not.toContain(a.token);
    await cp?.close();
    await mn?.teardown();
  }, 120_000);

  it("reports B's deployments not running while its node is down, and reconciles without duplicates when it returns", async () => {
    const [wa, wb] = [mn.workers[0]!, mn.workers[1]!];
    const A = await startWorkerAgent({ cp, worker: wa, workerId: randomUUID(), manager: { host: mn.tls.host, files: mn.tls.clients[0]! } });
    const B = await startWorkerAgent({ cp, worker: wb, workerId: randomUUID(), manager: { host: mn.tls.host, files: mn.tls.clients[1]! } });
    agents.push(A, B);
    const onA = web('loss-a', 'survivor-on-a');
    const onB = web('loss-b', 'lost-on-b');
    cp.setDeployments(A.workerId, [onA]);
    cp.setDeployments(B.workerId, [onB]);
    const status = (w: WorkerAgent, id: string) => cp.deploymentStatusOf(w.workerId).get(id);
    const out = () => `B:\n${B.agent.output.slice(-3000)}`;
    await waitFor(() => status(A, onA.id)?.status === 'running' && status(B, onB.id)?.status === 'running', 60_000, out);
    const [svcB] = await servicesByLabel(mn.manager, `${LABEL.serviceId}=${onB.serviceId}`);
    const heartbeat = () => cp.workers.get(B.workerId)?.lastHeartbeatExtras as { dockerHealthy?: boolean } | undefined;
    expect(heartbeat()?.dockerHealthy).toBe(true);

    // Power cut on B: its dockerd, containerd, shims and containers, all at once.
    const t0 = Date.now();
    await wb.kill();
    const nodeState = async () => ((await mn.manager.getNode(wb.nodeId).inspect()) as { Status: { State: string } }).Status.State;
    await waitFor(
      async () => (await nodeState()) === 'down',
      60_000,
      () => 'the manager to mark B down',
    );
    const downAfter = Date.now() - t0;
    // B's agent can still reach the manager but not its own engine.
    await waitFor(() => heartbeat()?.dockerHealthy === false, 15_000, out);
    // From the manager's view (through B's agent in remote-manager mode): not running any more.
    await waitFor(() => status(B, onB.id)?.status !== 'running', 60_000, out);
    const whileDown = status(B, onB.id)!;
    const notRunningAfter = Date.now() - t0;
    const tasks = await tasksOfService(mn.manager, svcB!.ID);
    process.stderr.write(
      `[multinode] node loss: B down after ${downAfter} ms, reported ${whileDown.status} after ${notRunningAfter} ms; tasks: ${JSON.stringify(tasks.map((t) => [t.NodeID === wb.nodeId ? 'B' : t.NodeID, t.DesiredState, t.Status?.State]))}\n`,
    );
    expect(['deploying', 'failed']).toContain(whileDown.status);
    // A is untouched by B's loss.
    expect(status(A, onA.id)?.status).toBe('running');

    // B returns: same node, same data. Exactly one service for the deployment, one container, running.
    const t1 = Date.now();
    await wb.restart();
    await waitFor(() => heartbeat()?.dockerHealthy === true, 30_000, out);
    await waitFor(async () => status(B, onB.id)?.status === 'running' && (await runningContainersOn(wb, onB.serviceId)) === 1, 60_000, out);
    const backAfter = Date.now() - t1;
    const services = await servicesByLabel(mn.manager, `${LABEL.serviceId}=${onB.serviceId}`);
    expect(services.map((s) => s.ID)).toEqual([svcB!.ID]);
    expect((await servicesByLabel(mn.manager, `${LABEL.workerId}=${B.workerId}`)).map((s) => s.ID)).toEqual([svcB!.ID]);
    const running = (await tasksOfService(mn.manager, svcB!.ID)).filter((t) => t.Status?.State === 'running');
    expect(running.map((t) => t.NodeID)).toEqual([wb.nodeId]);
    const url = status(B, onB.id)!.publicUrl!;
    expect(await (await fetch(`${url}/`)).text()).toContain('lost-on-b');
    // Stays so: one more resync pass later, still exactly one of everything.
    await new Promise((r) => setTimeout(r, 6_000));
    expect((await servicesByLabel(mn.manager, `${LABEL.serviceId}=${onB.serviceId}`)).length).toBe(1);
    expect(await runningContainersOn(wb, onB.serviceId)).toBe(1);
    expect(status(B, onB.id)?.status).toBe('running');
    process.stderr.write(`[multinode] node loss: B back and running again ${backAfter} ms after its dockerd restarted\n`);
  }, 120_000);
});
