import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';

/**
 * SIGKILL in the middle of applying a desired set (20 deployments, creates in flight), twice, then a
 * restart with the same state directory: the agent converges to exactly one service per serviceId
 * (no duplicates from creates it did not see finish, no orphans) and reports all 20 running.
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `org-crash-${randomUUID().slice(0, 8)}`;
const COUNT = 20;
const secretValues: string[] = [];

function deployment(i: number): Record<string, unknown> {
  const value = `crash-secret-${i}-${randomUUID()}`;
  secretValues.push(value);
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug: `crash-${i}`,
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: { INDEX: String(i) },
    resourceLimits: { cpuCores: 0.02, memoryMb: 8 },
    command: ['sleep', '3600'],
    secrets: [{ name: 'token', value, envVarName: 'TOKEN' }],
  };
}

describe.skipIf(!ready.ok)('agent killed while applying 20 deployments', () => {
  let cp: RefCp;
  let workerId: string;
  let token: string;
  const agents: AgentProcess[] = [];

  const services = async () =>
    (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown as {
      ID: string;
      Spec: { Labels: Record<string, string> };
    }[];

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    if (workerId) {
      for (const s of await services())
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
      await removeWorkerLeftovers(docker, workerId);
    }
    const everything = capturedOutput.join('\n') + JSON.stringify(cp.requests) + JSON.stringify(workerId ? cp.reportsOf(workerId) : []);
    if (token) expect(everything).not.toContain(token);
    for (const v of secretValues) expect(everything).not.toContain(v);
    await cp.close();
  });

  it('converges to exactly 20 services, one per serviceId, all reported running', async () => {
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const dir = await mkdtemp(join(tmpdir(), 'skp-crash-'));
    const config = join(dir, 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    const env = {
      SKYPANEL_AGENT_STATE_DIR: join(dir, 'state'),
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_BACKOFF_CAP: '2',
    };
    const desired = Array.from({ length: COUNT }, (_, i) => deployment(i));
    cp.setDeployments(workerId, desired);

    const atKill: number[] = [];
    for (let crash = 0; crash < 2; crash++) {
      const agent = new AgentProcess(['run', '--config', config], env);
      agents.push(agent);
      // Killed as soon as the first create of this boot has gone through: the others are in flight or queued.
      await agent.waitForLog((l) => l.msg === 'service created', 30_000);
      const { code } = await agent.stop('SIGKILL');
      expect(code).toBeNull();
      atKill.push((await services()).length);
    }
    console.log(`resilience-crash: services present at each SIGKILL: ${atKill.join(', ')} of ${COUNT}`);
    expect(atKill[0]).toBeGreaterThanOrEqual(1);
    expect(atKill[0]).toBeLessThan(COUNT);

    const agent = new AgentProcess(['run', '--config', config], env);
    agents.push(agent);
    const tail = () => agent.output.slice(-4000);
    await waitFor(
      () => desired.every((d) => cp.deploymentStatusOf(workerId).get(d.id as string)?.status === 'running'),
      70_000,
      () =>
        `all ${COUNT} running; now ${[...cp.deploymentStatusOf(workerId).values()].filter((r) => r.status === 'running').length}\n${tail()}`,
    );
    // Converged: exactly one service per serviceId, none foreign to the desired set; still so a pass later.
    for (let check = 0; check < 2; check++) {
      const list = await services();
      const byService = new Map<string, number>();
      for (const s of list) byService.set(s.Spec.Labels[LABEL.serviceId]!, (byService.get(s.Spec.Labels[LABEL.serviceId]!) ?? 0) + 1);
      expect(list).toHaveLength(COUNT);
      expect([...byService.keys()].sort()).toEqual(desired.map((d) => d.serviceId as string).sort());
      expect([...byService.values()].every((n) => n === 1)).toBe(true);
      if (check === 0) await new Promise((r) => setTimeout(r, 6_000));
    }
    // Reported running by the surviving boot, each with the service that actually exists.
    const ids = new Set((await services()).map((s) => s.ID));
    for (const d of desired) expect(ids.has(cp.deploymentStatusOf(workerId).get(d.id as string)!.swarmServiceId!)).toBe(true);
    expect(agent.child.exitCode).toBeNull();
  }, 90_000);
});
