import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reconciler, type StatusChange } from '../../src/agent/deployments/reconciler.js';
import type { DesiredSet } from '../../src/agent/deployments/desired-state-poller.js';
import { parseDeployment, type Deployment } from '../../src/protocol/deployment.js';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { getEngineFacts } from '../../src/swarm/engine.js';
import { createSwarmPort } from '../../src/swarm/swarm-port.js';
import { LABEL } from '../../src/domain/labels.js';
import { waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

const dockerReady = await ensureDocker();
const run = promisify(execFile);
/** The agent's client, for the code under test; `docker` is the test's own look at Docker. */
const engine = createDockerClient({ timeoutMs: 30_000 });
const docker = dockerode({ timeoutMs: 30_000 });
const WORKER = `w-e2e-${randomUUID().slice(0, 8)}`;
const SECRET_VALUE = `s3cr3t-${randomUUID()}`;
const logLines: string[] = [];
const logger = pino(
  { level: 'debug' },
  new Writable({
    write(chunk, _e, cb) {
      logLines.push(String(chunk));
      cb();
    },
  }),
);

let nodeId: string;
let reconciler: Reconciler;
const latest = new Map<string, StatusChange>();
const allReports: StatusChange[] = [];
let desired: Deployment[] = [];

function deployment(overrides: Record<string, unknown>): Deployment {
  const raw = {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: 'org-e2e',
    slug: 'app',
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: {},
    resourceLimits: { cpuCores: 0.25, memoryMb: 32 },
    ...overrides,
  };
  const r = parseDeployment(raw);
  if (!r.ok) throw new Error(r.rejected.message);
  return r.deployment;
}

function setDesired(list: Deployment[]) {
  desired = list;
  const set: DesiredSet = { deployments: list, rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() };
  reconciler.setDesired(set);
}

const statusOf = (id: string) => latest.get(id)?.derived.status;
const waitStatus = (id: string, status: string, ms = 60_000) =>
  waitFor(
    () => statusOf(id) === status,
    ms,
    () => `${id} to be ${status}, is ${statusOf(id)} (${latest.get(id)?.derived.message ?? ''})`,
  );

async function ownServices() {
  return (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${WORKER}`] }) })) as {
    ID: string;
    Spec: {
      Labels: Record<string, string>;
      Mode: { Replicated: { Replicas: number } };
      TaskTemplate: { ContainerSpec: { Env?: string[] } };
    };
  }[];
}

describe.skipIf(!dockerReady.ok)('reconciling against a real swarm', () => {
  beforeAll(async () => {
    nodeId = (await getEngineFacts(engine)).swarm.nodeId!;
    reconciler = new Reconciler({
      port: createSwarmPort(engine, { workerId: WORKER, nodeId: () => nodeId }),
      workerId: WORKER,
      nodeId: () => nodeId,
      ipAddress: '127.0.0.1',
      publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
      resyncMs: 2_000,
      logger,
      onStatus: (changes) => {
        for (const c of changes) {
          latest.set(c.deploymentId, c);
          allReports.push(c);
        }
      },
    });
    reconciler.start();
  });

  afterAll(async () => {
    await reconciler?.stop();
    for (const s of await ownServices().catch(() => []))
      await docker
        .getService(s.ID)
        .remove()
        .catch(() => {});
    const secrets = (await docker.listSecrets({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${WORKER}`] }) })) as { ID: string }[];
    await new Promise((r) => setTimeout(r, 2_000));
    for (const s of secrets)
      await docker
        .getSecret(s.ID)
        .remove()
        .catch(() => {});
    const output = logLines.join('') + JSON.stringify(allReports);
    expect(output).not.toContain(SECRET_VALUE);
  });

  it('creates a labelled, limited, pinned service that answers at its public URL', async () => {
    const web = deployment({
      slug: 'web-' + 'x'.repeat(70),
      internalPort: 8080,
      environmentVars: { GREETING: 'hi-from-e2e' },
      command: ['sh', '-c', 'mkdir -p /www && echo "$GREETING" > /www/index.html && exec httpd -f -p 8080 -h /www'],
    });
    setDesired([web]);
    await waitStatus(web.id, 'running');
    const c = latest.get(web.id)!;
    expect(c.publicUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${c.publicUrl}/`);
    expect(await res.text()).toContain('hi-from-e2e');
    const [svc] = await ownServices();
    expect(svc!.Spec.Labels).toMatchObject({
      [LABEL.managed]: 'true',
      [LABEL.deploymentId]: web.id,
      [LABEL.serviceId]: web.serviceId,
      [LABEL.organizationId]: 'org-e2e',
    });
    type Limits = { NanoCPUs: number; MemoryBytes: number };
    const full = (await docker.getService(svc!.ID).inspect()) as {
      Spec: { Name: string; TaskTemplate: { Resources: { Limits: Limits }; Placement: { Constraints: string[] } } };
    };
    expect(full.Spec.Name.length).toBeLessThanOrEqual(63);
    expect(full.Spec.TaskTemplate.Resources.Limits).toMatchObject({ NanoCPUs: 250_000_000, MemoryBytes: 32 * 1024 * 1024 });
    expect(full.Spec.TaskTemplate.Placement.Constraints).toContain(`node.id==${nodeId}`);
    // A service the agent just made is not drift: later passes leave it alone.
    await new Promise((r) => setTimeout(r, 4_500));
    expect(logLines.join('')).not.toContain('service changed outside the agent');
    expect(latest.get(web.id)!.derived.containerId).toBe(c.derived.containerId);
  });

  it('an env change rolls the service; the same hash never restarts it', async () => {
    const [web] = desired;
    const containerBefore = latest.get(web!.id)!.derived.containerId;
    setDesired([web!]);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(latest.get(web!.id)!.derived.containerId).toBe(containerBefore);
    const changed = deployment({ ...rawOf(web!), environmentVars: { GREETING: 'changed' } });
    setDesired([changed]);
    await waitFor(
      () => latest.get(changed.id)?.derived.status === 'running' && latest.get(changed.id)?.derived.containerId !== containerBefore,
      90_000,
      () => JSON.stringify(latest.get(changed.id)),
    );
    const [svc] = await ownServices();
    expect(svc!.Spec.TaskTemplate.ContainerSpec.Env).toContain('GREETING=changed');
  });

  it('puts back a service changed by hand with docker service update, logging the drifted fields and not their values', async () => {
    const [svc] = await ownServices();
    const handValue = `hand-${randomUUID()}`;
    // As an operator would; --detach returns once Swarm has the new spec, without waiting for the rollout.
    await run('docker', ['service', 'update', '--detach', '--env-add', `HACKED=${handValue}`, '--limit-memory', '48M', svc!.ID]);
    await waitFor(
      async () => !(await ownServices())[0]!.Spec.TaskTemplate.ContainerSpec.Env?.some((e) => e.startsWith('HACKED=')),
      30_000,
      () => 'drift to be reverted',
    );
    const repairs = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'service changed outside the agent; put back');
    expect(repairs).toHaveLength(1);
    expect(repairs[0]).toMatchObject({
      level: 40,
      swarmServiceId: svc!.ID,
      reason: 'drift',
      drifted: ['TaskTemplate.ContainerSpec.Env', 'TaskTemplate.Resources.Limits.MemoryBytes'],
    });
    expect(logLines.join('')).not.toContain(handValue);
    // The put-back is a rolling update of its own; the next test starts once Swarm has finished it,
    // so its own update does not race the rollout's version bumps ("update out of sequence").
    await waitFor(
      async () => {
        const s = (await docker.getService(svc!.ID).inspect()) as { UpdateStatus?: { State?: string } };
        return s.UpdateStatus?.State === undefined || s.UpdateStatus.State === 'completed';
      },
      60_000,
      () => 'the put-back rollout to complete',
    );
  }, 120_000);

  it('stopped scales to zero and keeps the service; removed from the list removes it', async () => {
    const [web] = desired;
    const stopped = deployment({ ...rawOf(web!), desiredState: 'stopped' });
    setDesired([stopped]);
    await waitStatus(stopped.id, 'stopped', 60_000);
    expect((await ownServices())[0]!.Spec.Mode.Replicated.Replicas).toBe(0);
    setDesired([]);
    await waitFor(
      async () => (await ownServices()).length === 0,
      30_000,
      () => 'service to be removed',
    );
    expect(allReports.filter((r) => r.deploymentId === stopped.id).at(-1)!.derived.status).toBe('stopped');
  }, 120_000);

  it('a bad image fails with the reason, a crash loop fails with its log tail, and a good neighbour still runs', async () => {
    const bad = deployment({ slug: 'bad', imageTag: 'skypanel-test/does-not-exist:1' });
    const crash = deployment({ slug: 'crash', command: ['sh', '-c', 'echo boom-from-crash; exit 3'] });
    const good = deployment({ slug: 'good', command: ['sleep', '3600'] });
    setDesired([bad, crash, good]);
    await waitStatus(good.id, 'running');
    await waitStatus(bad.id, 'failed', 90_000);
    expect(latest.get(bad.id)!.derived.message).toMatch(/image|No such/i);
    await waitStatus(crash.id, 'failed', 90_000);
    const crashReport = allReports.find((r) => r.deploymentId === crash.id && r.derived.status === 'failed' && r.logs);
    expect(crashReport?.logs?.join('\n')).toContain('boom-from-crash');
    expect(latest.get(crash.id)!.derived.message).toMatch(/exit code 3/);
  });

  it('mounts a secret as a file and exposes it by _FILE env, never leaking the value', async () => {
    const app = deployment({
      slug: 'secretive',
      command: [
        'sh',
        '-c',
        'test "$(cat /run/secrets/API_KEY)" = "$EXPECTED_FROM_FILE" || true; cat "$API_KEY_FILE" >/dev/null && sleep 3600',
      ],
      secrets: [
        { name: 'api-key', value: SECRET_VALUE, envVarName: 'API_KEY' },
        { name: 'db-pass', value: `${SECRET_VALUE}-db`, mountPath: '/etc/app/db-pass' },
      ],
    });
    setDesired([app]);
    await waitStatus(app.id, 'running');
    const [svc] = (await ownServices()).filter((s) => s.Spec.Labels[LABEL.deploymentId] === app.id);
    const inspected = JSON.stringify(await docker.getService(svc!.ID).inspect());
    expect(inspected).not.toContain(SECRET_VALUE);
    expect(inspected).toContain('API_KEY_FILE=/run/secrets/API_KEY');
  });

  it('never touches a service without its labels', async () => {
    const foreign = (await docker.createService({
      Name: `foreign-${randomUUID().slice(0, 8)}`,
      Labels: { [LABEL.managed]: 'true', [LABEL.workerId]: 'someone-else' },
      TaskTemplate: { ContainerSpec: { Image: TEST_IMAGE, Args: ['sleep', '3600'] } },
      Mode: { Replicated: { Replicas: 0 } },
    } as never)) as { id?: string; ID?: string };
    const id = foreign.id ?? foreign.ID!;
    try {
      setDesired([]);
      await waitFor(
        async () => (await ownServices()).length === 0,
        30_000,
        () => 'own services removed',
      );
      await new Promise((r) => setTimeout(r, 2_500));
      const still = await docker.getService(id).inspect();
      expect(still).toBeDefined();
    } finally {
      await docker
        .getService(id)
        .remove()
        .catch(() => {});
    }
  });
});

function rawOf(d: Deployment): Record<string, unknown> {
  return { ...d, secrets: d.secrets?.map((s) => ({ ...s, value: s.value.reveal() })), registryAuth: undefined };
}
