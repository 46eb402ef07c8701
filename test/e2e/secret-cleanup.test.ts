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
 * Swarm secrets are named by a hash of their value, so a rotated value or a withdrawn deployment
 * leaves its old secret behind. The built agent on a real swarm: rotate one deployment's secret and
 * withdraw another; both old secrets are removed, each only once no task of this worker mounts it
 * any more (watched throughout), and secrets that are not this worker's are never touched.
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `org-secret-gc-${randomUUID().slice(0, 8)}`;
const VALUES = { v1: `gc-rotate-old-${randomUUID()}`, v2: `gc-rotate-new-${randomUUID()}`, w: `gc-withdrawn-${randomUUID()}` };
const ENDED = new Set(['complete', 'shutdown', 'failed', 'rejected', 'remove', 'orphaned']);

interface SecretRow {
  ID: string;
  Spec: { Name: string; Labels?: Record<string, string> };
}
interface TaskRow {
  ServiceID: string;
  Status: { State: string };
  Spec: { ContainerSpec?: { Secrets?: { SecretName: string }[] } };
}

function app(secretValue: string, overrides: Record<string, unknown> = {}) {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug: 'secret-gc',
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: {},
    resourceLimits: { cpuCores: 0.05, memoryMb: 16 },
    // Exits at once on SIGTERM, so an old task stops as soon as Swarm asks it to.
    command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'],
    secrets: [{ name: 'db', value: secretValue, envVarName: 'DB' }],
    ...overrides,
  };
}

describe.skipIf(!ready.ok)('unused Swarm secrets are removed on a real swarm', () => {
  let cp: RefCp;
  let agent: AgentProcess;
  let workerId: string;
  let token: string;
  const foreign: string[] = [];

  const ownSecrets = async () =>
    (await docker.listSecrets({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as SecretRow[];
  const ownServices = async () =>
    (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as {
      ID: string;
      Spec: { Labels: Record<string, string> };
    }[];
  const statusOf = (id: string) => cp.deploymentStatusOf(workerId).get(id);
  const tail = () => agent.output.slice(-3000);

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const config = join(await mkdtemp(join(tmpdir(), 'skp-secret-gc-')), 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    // Not this worker's: another worker's (same labels but its id) and one made by hand.
    for (const labels of [{ [LABEL.managed]: 'true', [LABEL.workerId]: randomUUID() }, {}]) {
      const name = `sp-gc-foreign-${randomUUID().slice(0, 12)}`;
      await docker.createSecret({ Name: name, Labels: labels, Data: Buffer.from('not-yours').toString('base64') });
      foreign.push(name);
    }
    agent = new AgentProcess(['run', '--config', config], { SKYPANEL_AGENT_POLL_INTERVAL: '1', SKYPANEL_AGENT_RESYNC_INTERVAL: '5' });
  });

  afterAll(async () => {
    await agent?.stop();
    if (workerId) {
      for (const s of await ownServices())
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
      await removeWorkerLeftovers(docker, workerId);
    }
    for (const name of foreign) {
      const found = (await docker.listSecrets({ filters: JSON.stringify({ name: [name] }) })) as SecretRow[];
      for (const s of found.filter((x) => x.Spec.Name === name))
        await docker
          .getSecret(s.ID)
          .remove()
          .catch(() => {});
    }
    const everything = capturedOutput.join('\n') + JSON.stringify(cp?.requests ?? []) + JSON.stringify(cp?.reportsOf(workerId) ?? []);
    expect(everything).not.toContain(token);
    for (const v of Object.values(VALUES)) expect(everything).not.toContain(v);
    await cp?.close();
  });

  it("removes a rotated value's secret and a withdrawn deployment's, each after its tasks stopped, and nobody else's", async () => {
    const rotated = app(VALUES.v1);
    const withdrawn = app(VALUES.w, { slug: 'secret-gc-withdrawn' });
    cp.setDeployments(workerId, [rotated, withdrawn]);
    await waitFor(() => statusOf(rotated.id)?.status === 'running' && statusOf(withdrawn.id)?.status === 'running', 60_000, tail);
    const initial = (await ownSecrets()).map((s) => s.Spec.Name);
    expect(initial).toHaveLength(2);

    // Watch throughout: a secret of this worker gone while a task of it that has not ended still mounts it.
    const violations: string[] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        // Secrets first, then tasks: a task seen not ended after its secret was seen gone was not ended before either.
        const present = new Set((await ownSecrets()).map((s) => s.Spec.Name));
        const tasks = (await docker.listTasks({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as TaskRow[];
        for (const t of tasks) {
          if (ENDED.has(t.Status.State)) continue;
          for (const ref of t.Spec.ContainerSpec?.Secrets ?? []) {
            if (initial.includes(ref.SecretName) && !present.has(ref.SecretName))
              violations.push(`${ref.SecretName} removed while a ${t.Status.State} task mounts it`);
          }
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    try {
      const mounted = async (deploymentId: string) => {
        const svc = (await ownServices()).find((x) => x.Spec.Labels[LABEL.deploymentId] === deploymentId)!;
        const live = (await docker.getService(svc.ID).inspect()) as {
          Spec: { TaskTemplate: { ContainerSpec: { Secrets: { SecretName: string }[] } } };
        };
        return live.Spec.TaskTemplate.ContainerSpec.Secrets.map((x) => x.SecretName);
      };
      const [oldName] = await mounted(rotated.id);
      const [withdrawnName] = await mounted(withdrawn.id);
      expect([oldName, withdrawnName].sort()).toEqual([...initial].sort());

      // Rotate: a new secret, the service updated onto it, the old one removed once the old task stopped.
      const rotatedNow = { ...rotated, secrets: [{ name: 'db', value: VALUES.v2, envVarName: 'DB' }] };
      cp.setDeployments(workerId, [rotatedNow, withdrawn]);
      await waitFor(
        async () => !(await mounted(rotated.id)).includes(oldName!),
        30_000,
        () => `the service updated\n${tail()}`,
      );
      const [newName] = await mounted(rotated.id);
      await waitFor(
        async () =>
          (await ownSecrets())
            .map((x) => x.Spec.Name)
            .sort()
            .join() === [newName, withdrawnName].sort().join(),
        60_000,
        () => `the rotated secret removed\n${tail()}`,
      );
      await waitFor(() => statusOf(rotated.id)?.status === 'running', 30_000, tail);

      // Withdraw: the service goes, then its secret once its task has stopped.
      cp.setDeployments(workerId, [rotatedNow]);
      await waitFor(async () => !(await ownServices()).some((x) => x.Spec.Labels[LABEL.deploymentId] === withdrawn.id), 30_000, tail);
      await waitFor(
        async () => (await ownSecrets()).map((x) => x.Spec.Name).join() === newName,
        60_000,
        () => `the withdrawn secret removed\n${tail()}`,
      );
      expect(
        agent
          .logs()
          .filter((l) => l.msg === 'unused secret removed')
          .map((l) => l.secretName)
          .sort(),
      ).toEqual([...initial].sort());
    } finally {
      watching = false;
      await watch;
    }
    expect(violations).toEqual([]);
    // Not this worker's: untouched.
    for (const name of foreign) {
      const found = (await docker.listSecrets({ filters: JSON.stringify({ name: [name] }) })) as SecretRow[];
      expect(found.map((s) => s.Spec.Name)).toContain(name);
    }
    expect(statusOf(rotated.id)?.status).toBe('running');
  }, 180_000);
});
