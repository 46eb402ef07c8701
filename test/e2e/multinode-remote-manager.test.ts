import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { capturedOutput, waitFor, type AgentProcess } from '../helpers/cli.js';
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
  removeOrganization,
} from '../helpers/multinode.js';

const ready = await multinodeReady();
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `${MULTINODE_ORG_PREFIX}remote-${randomUUID().slice(0, 8)}`;

/** A tiny web app; `trap` so SIGTERM stops it at once (busybox httpd as PID 1 would ignore it). */
function web(greeting: string, over: Record<string, unknown> = {}) {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug: 'remote-web',
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: { GREETING: greeting },
    resourceLimits: { cpuCores: 0.25, memoryMb: 32 },
    internalPort: 8080,
    command: ['sh', '-c', 'trap "exit 0" TERM; mkdir -p /www && echo "$GREETING" > /www/index.html && httpd -f -p 8080 -h /www & wait'],
    ...over,
  };
}

describe.skipIf(!ready.ok)('remote-manager mode: an agent on a swarm worker writes through the manager over mutual TLS', () => {
  let mn: Multinode;
  let cp: RefCp;
  const agents: WorkerAgent[] = [];
  const proxies: DockerProxy[] = [];

  beforeAll(async () => {
    mn = await startMultinode({ workers: 1 });
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  }, SESSION_WAIT_MS + BRING_UP_BOUND_MS);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.agent.stop()));
    await Promise.all(proxies.map((p) => p.stop()));
    if (mn) await removeOrganization(mn.manager, ORG);
    const everything = capturedOutput.join('\n');
    for (const a of agents) expect(everything).not.toContain(a.token);
    await cp?.close();
    await mn?.teardown();
  }, 120_000);

  it('creates, updates and removes its service through the manager, pinned to its node, answering at the worker address', async () => {
    const w = mn.workers[0]!;
    // Every call the agent makes to its own dockerd passes here: it must write nothing locally.
    const local = new DockerProxy();
    proxies.push(local);
    await local.start(w.socketPath);
    const a = await startWorkerAgent({
      cp,
      worker: w,
      workerId: randomUUID(),
      dockerSocket: local.socketPath,
      manager: { host: mn.tls.host, files: mn.tls.clients[0]! },
    });
    agents.push(a);
    const started = await a.agent.waitForLog((l) => l.msg === 'agent started', 20_000);
    expect(started).toMatchObject({ swarmRole: 'worker', reconcileMode: 'remote-manager' });

    const app = web('hello-from-the-worker');
    cp.setDeployments(a.workerId, [app]);
    const report = () => cp.deploymentStatusOf(a.workerId).get(app.id);
    await waitFor(
      () => report()?.status === 'running',
      60_000,
      () => a.agent.output.slice(-3000),
    );
    const first = report()!;
    expect(first.publicUrl).toMatch(new RegExp(`^http://${w.ip.replace(/\./g, '\\.')}:\\d+$`));
    expect(await (await fetch(`${first.publicUrl}/`)).text()).toContain('hello-from-the-worker');

    // Through the manager: one service, labelled for this worker, pinned to this node, its task on this node.
    const [svc, ...more] = await servicesByLabel(mn.manager, `${LABEL.serviceId}=${app.serviceId}`);
    expect(more).toHaveLength(0);
    expect(svc!.ID).toBe(first.swarmServiceId);
    expect(svc!.Spec.Labels[LABEL.workerId]).toBe(a.workerId);
    expect(svc!.Spec.TaskTemplate.Placement?.Constraints).toEqual([`node.id==${w.nodeId}`]);
    const running = (await tasksOfService(mn.manager, svc!.ID)).filter((t) => t.Status?.State === 'running');
    expect(running.map((t) => t.NodeID)).toEqual([w.nodeId]);
    expect(mn.tls.writes('skp-worker-0')).toContain('POST /services/create');

    // Update: a new spec goes out as a service update of the same service, still pinned here.
    const updated = { ...app, environmentVars: { GREETING: 'updated-through-the-manager' } };
    cp.setDeployments(a.workerId, [updated]);
    const answers = async () => {
      const url = report()?.publicUrl;
      if (report()?.status !== 'running' || !url) return false;
      const body = await fetch(`${url}/`).then(
        (r) => r.text(),
        () => '',
      );
      return body.includes('updated-through-the-manager');
    };
    await waitFor(answers, 60_000, () => a.agent.output.slice(-3000));
    expect(mn.tls.writes('skp-worker-0')).toContain(`POST /services/${svc!.ID}/update`);
    expect((await servicesByLabel(mn.manager, `${LABEL.serviceId}=${app.serviceId}`)).map((s) => s.ID)).toEqual([svc!.ID]);

    // Withdrawn: removed through the manager, reported stopped.
    cp.setDeployments(a.workerId, []);
    await waitFor(
      async () => (await servicesByLabel(mn.manager, `${LABEL.serviceId}=${app.serviceId}`)).length === 0,
      30_000,
      () => a.agent.output.slice(-3000),
    );
    await waitFor(
      () => report()?.status === 'stopped',
      20_000,
      () => a.agent.output.slice(-3000),
    );
    expect(mn.tls.writes('skp-worker-0')).toContain(`DELETE /services/${svc!.ID}`);

    // Every write went to the manager; the worker's own engine was only read.
    expect(local.requests.length).toBeGreaterThan(0);
    expect(local.writes()).toEqual([]);
    expect(mn.tls.requests.every((r) => r.client === 'skp-worker-0')).toBe(true);
    expect((await a.agent.stop()).code).toBe(0);
  }, 120_000);

  it('is refused with a clear error, and creates nothing, when its client certificate is from another CA', async () => {
    const a = await startWorkerAgent({
      cp,
      worker: mn.workers[0]!,
      workerId: randomUUID(),
      manager: { host: mn.tls.host, files: mn.tls.rogue },
    });
    agents.push(a);
    try {
      await refusedRogue(a);
    } finally {
      await a.agent.stop();
    }
  }, 120_000);

  it('refuses a manager whose certificate does not verify against swarmManagerCa, saying so', async () => {
    const refusedBefore = mn.tls.refused.length;
    const a = await startWorkerAgent({
      cp,
      worker: mn.workers[0]!,
      workerId: randomUUID(),
      manager: { host: mn.tls.host, files: { ...mn.tls.clients[0]!, ca: mn.tls.otherCaFile } },
    });
    agents.push(a);
    try {
      const app = web('must-never-run', { slug: 'wrong-ca' });
      cp.setDeployments(a.workerId, [app]);
      const line = await a.agent.waitForLog((l) => l.level === 'warn' && /swarmManagerCa/.test(String(l.err ?? '')), 30_000);
      expect(String(line.err)).toContain(mn.tls.host);
      expect(await servicesByLabel(mn.manager, `${LABEL.serviceId}=${app.serviceId}`)).toHaveLength(0);
      // The agent hung up on the manager, not the other way round: nothing reached the Engine API.
      expect(mn.tls.requests.filter((r) => r.client === 'skp-worker-0' && r.line.includes(app.serviceId))).toEqual([]);
      expect(mn.tls.refused.length).toBeGreaterThanOrEqual(refusedBefore);
    } finally {
      await a.agent.stop();
    }
  }, 60_000);

  async function refusedRogue(a: WorkerAgent) {
    const refusedBefore = mn.tls.refused.length;
    const requestsBefore = mn.tls.requests.length;
    const app = web('must-never-run', { slug: 'rogue' });
    cp.setDeployments(a.workerId, [app]);
    const line = await a.agent.waitForLog((l) => l.level === 'warn' && /TLS|certificate/i.test(String(l.err ?? l.msg)), 30_000);
    process.stderr.write(`[multinode] agent with a foreign client certificate logged: ${JSON.stringify(line)}\n`);
    expect(String(line.err ?? line.msg)).toMatch(new RegExp(mn.tls.host.replace(/\./g, '\\.')));
    // Give it a few more passes: still nothing.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await servicesByLabel(mn.manager, `${LABEL.workerId}=${a.workerId}`)).toHaveLength(0);
    expect(await servicesByLabel(mn.manager, `${LABEL.serviceId}=${app.serviceId}`)).toHaveLength(0);
    expect(mn.tls.requests.slice(requestsBefore).filter((r) => r.client === 'skp-rogue')).toEqual([]);
    const refused = mn.tls.refused.slice(refusedBefore);
    expect(refused.length).toBeGreaterThan(0);
    // Refusals are certificate refusals of TLS handshakes: the agent never spoke plain HTTP to the endpoint.
    expect(refused.join('\n')).not.toMatch(/http request|wrong version number|unknown protocol/i);
    expect(cp.deploymentStatusOf(a.workerId).get(app.id)?.status).not.toBe('running');
  }

  it('refuses to start without a readable client certificate, and the endpoint refuses a connection without one', async () => {
    const w = mn.workers[0]!;
    // A configured but missing certificate file: exit 78 (EX_CONFIG) naming the key, before any connection.
    const refusedBefore = mn.tls.refused.length;
    const missing = await startWorkerAgent({
      cp,
      worker: w,
      workerId: randomUUID(),
      manager: { host: mn.tls.host, files: { ...mn.tls.clients[0]!, cert: join(await mkdtemp(join(tmpdir(), 'skp-mn-')), 'absent.pem') } },
    });
    agents.push(missing);
    expect(await exitOf(missing.agent), missing.agent.output).toBe(78);
    expect(missing.agent.output).toMatch(/swarmManagerCert/);
    expect(missing.agent.output).toMatch(/ENOENT/);
    expect(mn.tls.refused.length).toBe(refusedBefore);

    // The endpoint itself: a TLS client that presents no certificate is refused in the handshake.
    const [host, port] = [mn.tls.host.slice(0, mn.tls.host.lastIndexOf(':')), Number(mn.tls.host.slice(mn.tls.host.lastIndexOf(':') + 1))];
    const outcome = await new Promise<string>((resolve) => {
      const s = connect({ host, port, ca: readFileSync(mn.tls.caFile) }, () =>
        s.write('GET /_ping HTTP/1.1\r\nHost: manager\r\nConnection: close\r\n\r\n'),
      );
      let body = '';
      s.on('data', (d: Buffer) => (body += d.toString()));
      s.on('error', (err) => resolve(`error: ${err.message}`));
      s.on('close', () => resolve(body || 'closed'));
      s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
    });
    expect(outcome).toMatch(/certificate required/);
    expect(mn.tls.refused.slice(refusedBefore).join('\n')).toMatch(/did not return a certificate/);
  }, 60_000);

  it('never falls back to plain TCP: swarmManagerHost without the TLS files is refused at start (exit 78, naming the key)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-mn-plain-'));
    const ca = join(dir, 'ca.pem');
    await writeFile(ca, readFileSync(mn.tls.caFile));
    const cases: { env: NodeJS.ProcessEnv; names: RegExp }[] = [
      {
        env: { SKYPANEL_AGENT_SWARM_MANAGER_HOST: mn.tls.host },
        names: /swarmManagerHost.*swarmManagerCa.*swarmManagerCert.*swarmManagerKey/s,
      },
      {
        env: {
          SKYPANEL_AGENT_SWARM_MANAGER_HOST: mn.tls.host,
          SKYPANEL_AGENT_SWARM_MANAGER_CA: ca,
          SKYPANEL_AGENT_SWARM_MANAGER_KEY: mn.tls.clients[0]!.key,
        },
        names: /swarmManagerHost.*swarmManagerCert/s,
      },
    ];
    const requestsBefore = mn.tls.requests.length;
    const refusedBefore = mn.tls.refused.length;
    for (const c of cases) {
      const a = await startWorkerAgent({ cp, worker: mn.workers[0]!, workerId: randomUUID(), env: c.env });
      agents.push(a);
      expect(await exitOf(a.agent), a.agent.output).toBe(78);
      expect(a.agent.output).toMatch(c.names);
      expect(a.agent.output).toMatch(/mutual TLS/);
      expect(a.agent.output).not.toMatch(/agent started/);
    }
    expect(mn.tls.requests.length).toBe(requestsBefore);
    expect(mn.tls.refused.length).toBe(refusedBefore);
  }, 60_000);
});

/** Exit code of an agent that must stop on its own (never signalled). */
async function exitOf(agent: AgentProcess): Promise<number> {
  const code = await waitFor(
    () => agent.child.exitCode ?? undefined,
    20_000,
    () => `the agent to exit; output:\n${agent.output}`,
  );
  await agent.stop();
  return code;
}
