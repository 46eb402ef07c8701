import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { clearDrain, writeDrain } from '../../src/agent/drain.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const SECRET = `agent-e2e-secret-${randomUUID()}`;
const REGISTRY_PASSWORD = `registry-pw-${randomUUID()}`;

function web(overrides: Record<string, unknown> = {}) {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: 'org-agent-e2e',
    slug: 'hello',
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: { GREETING: 'hello-through-the-agent' },
    resourceLimits: { cpuCores: 0.25, memoryMb: 32 },
    internalPort: 8080,
    command: ['sh', '-c', 'mkdir -p /www && echo "$GREETING" > /www/index.html && exec httpd -f -p 8080 -h /www'],
    secrets: [{ name: 'api-key', value: SECRET, envVarName: 'API_KEY' }],
    ...overrides,
  };
}

describe.skipIf(!ready.ok)('the built agent against the reference control plane and a real swarm', () => {
  let cp: RefCp;
  let dir: string;
  const agents: AgentProcess[] = [];
  const tokens: string[] = [];

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    dir = await mkdtemp(join(tmpdir(), 'skp-agent-e2e-'));
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    // Leave nothing behind even when a test failed half-way.
    const ours = (await docker.listServices({ filters: JSON.stringify({ label: ['skypanel.managed=true'] }) })) as {
      ID: string;
      Spec: { Labels: Record<string, string> };
    }[];
    for (const s of ours)
      if (s.Spec.Labels[LABEL.organizationId] === 'org-agent-e2e')
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
    const everything = capturedOutput.join('\n') + JSON.stringify(cp.requests);
    for (const t of tokens) expect(everything).not.toContain(t);
    expect(everything).not.toContain(SECRET);
    expect(everything).not.toContain(REGISTRY_PASSWORD);
    await cp.close();
  });

  async function start(env: Record<string, string> = {}) {
    const workerId = randomUUID();
    const token = cp.mintToken(workerId);
    tokens.push(token);
    const config = join(dir, `${workerId}.json`);
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    const agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      ...env,
    });
    agents.push(agent);
    return { workerId, agent, config };
  }

  const statusOf = (workerId: string, id: string) => cp.deploymentStatusOf(workerId).get(id);

  it('runs what the panel assigns, reports running with a reachable public URL, isolates a broken row, and removes what is withdrawn', async () => {
    const { workerId, agent } = await start();
    const good = web();
    const broken = web({ slug: 'broken', resourceLimits: { cpuCores: 0.25, memoryMb: -1 } });
    const privateImage = web({
      slug: 'private',
      registryAuth: { serveraddress: '127.0.0.1:5999', username: 'u', password: REGISTRY_PASSWORD },
    });
    cp.setDeployments(workerId, [good, broken, privateImage]);

    await waitFor(
      () => statusOf(workerId, good.id)?.status === 'running',
      60_000,
      () => agent.output.slice(-3000),
    );
    const report = statusOf(workerId, good.id)!;
    expect(report.publicUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(report.swarmServiceId).toBeTruthy();
    expect(report.containerId).toBeTruthy();
    expect(report.deployedAt).toBeTruthy();
    const res = await fetch(`${report.publicUrl}/`);
    expect(await res.text()).toContain('hello-through-the-agent');

    await waitFor(
      () => statusOf(workerId, broken.id)?.status === 'failed',
      20_000,
      () => agent.output.slice(-3000),
    );
    expect(statusOf(workerId, broken.id)!.message).toMatch(/resourceLimits\.memoryMb/);

    // An unusable answer changes nothing.
    cp.setDeploymentsBody(workerId, '<html>not json</html>');
    await agent.waitForLog((l) => l.kind === 'invalid-response' || l.msg === 'desired set rejected as a whole; keeping the last one');
    const services = async () =>
      (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as {
        ID: string;
        Spec: { Labels: Record<string, string> };
      }[];
    expect((await services()).some((s) => s.Spec.Labels[LABEL.deploymentId] === good.id)).toBe(true);

    // Withdrawn from the list: removed and reported stopped.
    cp.setDeployments(workerId, []);
    await waitFor(
      async () => (await services()).length === 0,
      30_000,
      () => agent.output.slice(-3000),
    );
    await waitFor(
      () => statusOf(workerId, good.id)?.status === 'stopped',
      20_000,
      () => agent.output.slice(-3000),
    );
    expect(cp.duplicateReports).toBeGreaterThanOrEqual(0);
  });

  it('polls a changed set when a heartbeat answer names it, not an hour later at its poll interval', async () => {
    const { workerId, agent } = await start({ SKYPANEL_AGENT_POLL_INTERVAL: '3600' });
    const deploymentPolls = () => cp.requests.filter((r) => r.path === `/api/workers/${workerId}/deployments`).length;
    await waitFor(
      () => deploymentPolls() === 1 && (cp.workers.get(workerId)?.heartbeats ?? 0) >= 2,
      15_000,
      () => agent.output.slice(-2000),
    );
    const later = web({ slug: 'hinted', secrets: [] });
    cp.setDeployments(workerId, [later]);
    // Heartbeats every 2 s carry the new ETag: one poll follows, well within the hour.
    await waitFor(
      () => statusOf(workerId, later.id)?.status === 'running',
      60_000,
      () => agent.output.slice(-2000),
    );
    expect(deploymentPolls()).toBe(2);
    cp.setDeployments(workerId, []);
    const services = async () =>
      (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown[];
    await waitFor(
      async () => (await services()).length === 0,
      30_000,
      () => 'cleanup',
    );
  });

  it('while draining starts nothing new, says so in heartbeats, and resumes when the drain is lifted', async () => {
    const { workerId, agent } = await start();
    await writeDrain(agent.stateDir, 'test');
    await waitFor(
      () => cp.workers.get(workerId)?.lastHeartbeatExtras?.draining === true,
      15_000,
      () => agent.output.slice(-2000),
    );
    const fresh = web({ slug: 'during-drain', secrets: [] });
    cp.setDeployments(workerId, [fresh]);
    await waitFor(
      () => cp.requests.some((r) => r.path === `/api/workers/${workerId}/deployments` && r.status === 200),
      10_000,
      () => 'a poll',
    );
    await new Promise((r) => setTimeout(r, 3_000));
    const services = async () =>
      (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown[];
    expect(await services()).toHaveLength(0);
    expect(statusOf(workerId, fresh.id)?.status).toBe('deploying');
    await clearDrain(agent.stateDir);
    await waitFor(
      () => statusOf(workerId, fresh.id)?.status === 'running',
      60_000,
      () => agent.output.slice(-2000),
    );
    cp.setDeployments(workerId, []);
    await waitFor(
      async () => (await services()).length === 0,
      30_000,
      () => 'cleanup',
    );
  });

  it('runs in heartbeat-only mode against a stock panel and keeps heartbeating', async () => {
    const stock = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, extensions: false });
    try {
      const workerId = randomUUID();
      const token = stock.mintToken(workerId);
      tokens.push(token);
      const config = join(dir, `stock-${workerId}.json`);
      expect(
        (await runCli(['register', '--control-plane', stock.url, '--token', token, '--config', config, '--heartbeat-interval', '1'])).code,
      ).toBe(0);
      const agent = new AgentProcess(['run', '--config', config]);
      agents.push(agent);
      await agent.waitForLog((l) => String(l.msg).includes('heartbeat-only mode'));
      await waitFor(
        () => (stock.workers.get(workerId)?.heartbeats ?? 0) >= 2,
        15_000,
        () => agent.output,
      );
      expect(stock.requests.filter((r) => r.path.endsWith('/deployments')).length).toBe(1);
      expect(JSON.parse(await readFile(config, 'utf8')).workerId).toBe(workerId);
    } finally {
      await stock.close();
    }
  });
});
