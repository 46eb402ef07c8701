import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';

/**
 * Hostile desired sets, delivered by the reference control plane to one running agent (the built
 * CLI) on a real swarm. Two real services (A with a published port and a secret, B) stay up through
 * every case. Per case: the valid deployments still run, a bad deployment with a usable id is
 * reported `failed` naming the field, an unusable response changes nothing, the agent never exits.
 * At the end: no token or secret value in any output, request record or report.
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;

const SECRETS = {
  a: `hostile-a-secret-${randomUUID()}`,
  pathName: `hostile-path-name-${randomUUID()}`,
  nonString: `hostile-nested-${randomUUID()}`,
  registry: `hostile-registry-${randomUUID()}`,
  oddValid: `hostile-odd-valid-${randomUUID()}`,
  rejectedElsewhere: `hostile-rejected-elsewhere-${randomUUID()}`,
  dupName: `hostile-dup-name-${randomUUID()}`,
};
const ORG = `org-hostile-${randomUUID().slice(0, 8)}`;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

type Row = Record<string, unknown>;

/** A deployment that needs no container: stopped, so Swarm creates the service with 0 replicas. */
function stopped(overrides: Row = {}): Row {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug: 'hostile',
    imageTag: TEST_IMAGE,
    desiredState: 'stopped',
    environmentVars: {},
    resourceLimits: { cpuCores: 0.05, memoryMb: 16 },
    command: ['sleep', '3600'],
    ...overrides,
  };
}

type Expect =
  /** Nothing in the response may be applied; services and reports stay exactly as they were. */
  | { kind: 'unusable' }
  /** The deployment with this id is reported failed with a message naming `field`. */
  | { kind: 'rejected'; id: string; field: string }
  /** The entry has no usable id: nothing is reported for it, the rest runs. */
  | { kind: 'silent' }
  /** Odd but valid: the service is created (stopped) and reported stopped. */
  | { kind: 'runs'; id: string };

interface Case {
  name: string;
  /** A raw body, or the deployments to send alongside A and B. */
  body: string | ((base: Row[]) => Row[] | string);
  expect: Expect;
}

function bad(name: string, field: string, overrides: Row, drop: string[] = []): Case {
  const row = stopped(overrides);
  for (const k of drop) delete row[k];
  return { name, body: (base) => [...base, row], expect: { kind: 'rejected', id: row.id as string, field } };
}

function silent(name: string, entry: unknown): Case {
  return { name, body: (base) => [...base, entry as Row], expect: { kind: 'silent' } };
}

function odd(name: string, overrides: Row): Case {
  const row = stopped(overrides);
  return { name, body: (base) => [...base, row], expect: { kind: 'runs', id: row.id as string } };
}

function unusable(name: string, body: string | ((base: Row[]) => Row[] | string)): Case {
  return { name, body, expect: { kind: 'unusable' } };
}

const deep = (levels: number, leaf = '1') => '['.repeat(levels) + leaf + ']'.repeat(levels);

describe.skipIf(!ready.ok)('hostile desired sets against a running agent on a real swarm', () => {
  let cp: RefCp;
  let agent: AgentProcess;
  let workerId: string;
  let token: string;
  let extPort: number;
  let A!: Row;
  let B!: Row;
  let baseline: Map<string, string>;
  let reportMark = 0;
  let statusPort = 0;
  let hostCpus = 0;

  const services = async () =>
    (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown as {
      ID: string;
      Version: { Index: number };
      Spec: { Labels: Record<string, string>; TaskTemplate: { ContainerSpec: { Env?: string[] } } };
    }[];
  const statusOf = (id: string) => cp.deploymentStatusOf(workerId).get(id);
  const tail = () => agent.output.slice(-4000);

  /** A's and B's services: id, version and spec hash must not move while hostile sets come and go. */
  async function fingerprint(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const s of await services()) {
      const dep = s.Spec.Labels[LABEL.deploymentId]!;
      if (dep === A.id || dep === B.id) out.set(dep, `${s.ID}@${s.Version.Index}#${s.Spec.Labels[LABEL.specHash]}`);
    }
    return out;
  }

  function polls(from: number) {
    return cp.requests.slice(from).filter((r) => r.method === 'GET' && r.path.endsWith('/deployments'));
  }

  /**
   * Serve a body. With `settle`, wait until the agent fetched it and then polled again: polls are
   * sequential, so by then it has finished with the body (for cases whose effect is "nothing").
   */
  async function deliver(body: string | Row[], settle = true): Promise<void> {
    const mark = cp.requests.length;
    if (typeof body === 'string') cp.setDeploymentsBody(workerId, body);
    else cp.setDeployments(workerId, body);
    if (settle)
      await waitFor(
        () => polls(mark).length >= 2,
        15_000,
        () => `two polls after the new body\n${tail()}`,
      );
  }

  async function runCase(c: Case): Promise<void> {
    const reportsBefore = cp.reportsOf(workerId).length;
    const body = typeof c.body === 'string' ? c.body : c.body([A, B]);
    const e = c.expect;
    // Rejections and odd deployments have a visible effect to wait for; the others must be given time to (not) act.
    await deliver(body, e.kind === 'unusable' || e.kind === 'silent');
    if (e.kind === 'rejected') {
      const r = await waitFor(
        () => (statusOf(e.id)?.status === 'failed' ? statusOf(e.id) : undefined),
        15_000,
        () => `${c.name}: failed report for ${e.id}\n${tail()}`,
      );
      expect(r.message, c.name).toContain(e.field);
      expect(r.message, c.name).toMatch(/^invalid deployment: /);
    }
    if (e.kind === 'runs') {
      await waitFor(
        async () => statusOf(e.id)?.status === 'stopped' && (await services()).some((s) => s.Spec.Labels[LABEL.deploymentId] === e.id),
        30_000,
        () => `${c.name}: service for ${e.id}\n${tail()}`,
      );
      expect((await services()).filter((s) => s.Spec.Labels[LABEL.deploymentId] === e.id)).toHaveLength(1);
    }
    if (e.kind === 'unusable') {
      // Nothing was reported: not even a "stopped" for A or B, which a set without them would cause.
      expect(
        cp
          .reportsOf(workerId)
          .slice(reportsBefore)
          .filter((r) => r.deploymentId === A.id || r.deploymentId === B.id),
        c.name,
      ).toEqual([]);
    }
    // Always: the agent is alive, and A and B are untouched and still reported running.
    expect(agent.child.exitCode, c.name).toBeNull();
    expect(agent.child.signalCode, c.name).toBeNull();
    expect(await fingerprint(), c.name).toEqual(baseline);
    expect(statusOf(A.id as string)?.status, c.name).toBe('running');
    expect(statusOf(B.id as string)?.status, c.name).toBe('running');
  }

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    const dir = await mkdtemp(join(tmpdir(), 'skp-hostile-'));
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const config = join(dir, 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    extPort = await freePort();
    A = {
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: ORG,
      slug: 'hostile-a',
      imageTag: TEST_IMAGE,
      desiredState: 'running',
      environmentVars: { GREETING: 'still-here' },
      resourceLimits: { cpuCores: 0.1, memoryMb: 32 },
      internalPort: 8080,
      externalPort: extPort,
      command: ['sh', '-c', 'mkdir -p /www && echo "$GREETING" > /www/index.html && exec httpd -f -p 8080 -h /www'],
      secrets: [{ name: 'api-key', value: SECRETS.a, envVarName: 'API_KEY' }],
    };
    B = stopped({ slug: 'hostile-b', desiredState: 'running' });
    cp.setDeployments(workerId, [A, B]);
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_BACKOFF_CAP: '1',
    });
    statusPort = Number((await agent.waitForLog((l) => l.msg === 'status api listening')).port);
    hostCpus = Number(((await docker.info()) as { NCPU: number }).NCPU);
    await waitFor(
      () => statusOf(A.id as string)?.status === 'running' && statusOf(B.id as string)?.status === 'running',
      60_000,
      () => tail(),
    );
    baseline = await fingerprint();
    expect(baseline.size).toBe(2);
    reportMark = cp.reportsOf(workerId).length;
  });

  afterAll(async () => {
    await agent?.stop();
    if (workerId) {
      for (const s of await services())
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
      await removeWorkerLeftovers(docker, workerId);
    }
    const everything = capturedOutput.join('\n') + JSON.stringify(cp?.requests ?? []) + JSON.stringify(cp?.reportsOf(workerId) ?? []);
    expect(everything).not.toContain(token);
    for (const s of Object.values(SECRETS)) expect(everything).not.toContain(s);
    await cp?.close();
  });

  const unusableCases: Case[] = [
    unusable('HTML instead of JSON', '<html><body>502 Bad Gateway</body></html>'),
    unusable('empty body', ''),
    unusable('truncated JSON', '{"success":true,"data":{"deployments":['),
    unusable('JSON array, not an object', '[]'),
    unusable('JSON string', '"deployments"'),
    unusable('JSON number', '42'),
    unusable('JSON null', 'null'),
    unusable('no data', '{"success":true}'),
    unusable('data is null', '{"success":true,"data":null}'),
    unusable('data.deployments missing', '{"success":true,"data":{}}'),
    unusable('data.deployments is an object', JSON.stringify({ success: true, data: { deployments: { 0: {} } } })),
    unusable('data.deployments is a string', '{"success":true,"data":{"deployments":"[]"}}'),
    unusable(
      'success=false carrying an empty set',
      '{"success":false,"error":{"code":"INTERNAL","message":"db down"},"data":{"deployments":[]}}',
    ),
    unusable('UTF-8 BOM before an empty set', '\uFEFF{"success":true,"data":{"deployments":[]}}'),
    unusable('1001 entries (over the 1000 limit)', (base) => [...base, ...Array.from({ length: 999 }, () => ({ id: randomUUID() }))]),
    unusable(
      '10 MB body (the agent refuses > 1 MiB)',
      `{"success":true,"data":{"deployments":[]},"pad":"${'x'.repeat(10 * 1024 * 1024)}"}`,
    ),
    unusable('10 000 levels of nesting as the whole body', deep(10_000)),
    unusable('10 000 levels of nesting as data.deployments', `{"success":true,"data":{"deployments":${deep(10_000, '[]')}}}`),
  ];

  const rejectedCases: Case[] = [
    bad('imageTag missing', 'imageTag', {}, ['imageTag']),
    bad('imageTag is a number', 'imageTag', { imageTag: 42 }),
    bad('imageTag with upper-case path', 'imageTag', { imageTag: 'Library/BusyBox:1' }),
    bad('imageTag with a space', 'imageTag', { imageTag: 'busybox:1 --privileged' }),
    bad('imageTag with a short digest', 'imageTag', { imageTag: 'busybox@sha256:abc' }),
    bad('imageTag climbing paths', 'imageTag', { imageTag: '../../etc/passwd' }),
    bad('imageTag of 300 characters', 'imageTag', { imageTag: `a/${'b'.repeat(298)}` }),
    bad('unknown desiredState', 'desiredState', { desiredState: 'paused' }),
    bad('desiredState missing', 'desiredState', {}, ['desiredState']),
    bad('replicas as a numeric string', 'replicas', { replicas: '1' }),
    bad('replicas negative', 'replicas', { replicas: -1 }),
    bad('replicas absurd', 'replicas', { replicas: 1e9 }),
    bad('replicas fractional', 'replicas', { replicas: 1.5 }),
    bad('memoryMb negative', 'resourceLimits.memoryMb', { resourceLimits: { cpuCores: 0.1, memoryMb: -1 } }),
    bad('memoryMb absurd', 'resourceLimits.memoryMb', { resourceLimits: { cpuCores: 0.1, memoryMb: 1e15 } }),
    bad('cpuCores zero', 'resourceLimits.cpuCores', { resourceLimits: { cpuCores: 0, memoryMb: 16 } }),
    bad('cpuCores absurd', 'resourceLimits.cpuCores', { resourceLimits: { cpuCores: 1e308, memoryMb: 16 } }),
    bad('resourceLimits is a string', 'resourceLimits', { resourceLimits: 'lots' }),
    bad('resourceLimits only through __proto__', 'resourceLimits.cpuCores', {
      resourceLimits: JSON.parse('{"__proto__":{"cpuCores":1,"memoryMb":64}}'),
    }),
    bad('internalPort 0', 'internalPort', { internalPort: 0 }),
    bad('externalPort 70000', 'externalPort', { internalPort: 80, externalPort: 70_000 }),
    bad('externalPort without internalPort', 'externalPort', { externalPort: 31_999 }),
    bad('environmentVars is null', 'environmentVars', { environmentVars: null }),
    bad('environmentVars is an array', 'environmentVars', { environmentVars: ['A=1'] }),
    bad('env name containing =', 'environmentVars', { environmentVars: { 'A=B': 'x' } }),
    bad('env name containing NUL', 'environmentVars', { environmentVars: { 'A\u0000B': 'x' } }),
    bad('env name empty', 'environmentVars', { environmentVars: { '': 'x' } }),
    bad('env value containing NUL', 'environmentVars.X', { environmentVars: { X: 'a\u0000b' } }),
    bad('env value a number', 'environmentVars.X', { environmentVars: { X: 1 } }),
    bad('env value over 32 KiB', 'environmentVars.BIG', { environmentVars: { BIG: 'v'.repeat(40 * 1024) } }),
    bad('201 env vars', 'environmentVars', { environmentVars: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`V${i}`, 'x'])) }),
    bad('command argument with NUL', 'command[1]', { command: ['sh', 'a\u0000b'] }),
    bad('command of 65 arguments', 'command', { command: Array.from({ length: 65 }, () => 'x') }),
    bad('command as a string', 'command', { command: 'sleep 3600' }),
    bad('secret named like a path (its value must not leak)', 'secrets[0].name', {
      secrets: [{ name: '../../etc/passwd', value: SECRETS.pathName }],
    }),
    bad('secret named with an emoji', 'secrets[0].name', { secrets: [{ name: '🔑', value: SECRETS.pathName }] }),
    bad('secret value that is not a string', 'secrets[0].value', { secrets: [{ name: 'db', value: { nested: SECRETS.nonString } }] }),
    bad('secret value empty', 'secrets[0].value', { secrets: [{ name: 'db', value: '' }] }),
    bad('secret mountPath escaping with ..', 'secrets[0].mountPath', {
      secrets: [{ name: 'db', value: SECRETS.pathName, mountPath: '/run/secrets/../../etc/shadow' }],
    }),
    bad('secret mountPath relative', 'secrets[0].mountPath', {
      secrets: [{ name: 'db', value: SECRETS.pathName, mountPath: 'etc/shadow' }],
    }),
    bad('two secrets with one name', 'secrets[1].name', {
      secrets: [
        { name: 'db', value: SECRETS.dupName },
        { name: 'db', value: `${SECRETS.dupName}-2`, mountPath: '/run/other' },
      ],
    }),
    bad('secret envVarName with a dash', 'secrets[0].envVarName', {
      secrets: [{ name: 'db', value: SECRETS.pathName, envVarName: 'DB-PASSWORD' }],
    }),
    bad('registry password not a string', 'registryAuth.password', {
      registryAuth: { serveraddress: 'r.example.com', username: 'u', password: { v: SECRETS.registry } },
    }),
    bad('memory invalid next to a valid secret (the secret must not leak)', 'resourceLimits.memoryMb', {
      resourceLimits: { cpuCores: 0.1, memoryMb: 2 },
      secrets: [{ name: 'ok', value: SECRETS.rejectedElsewhere }],
    }),
    bad('slug of 256 characters', 'slug', { slug: 's'.repeat(256) }),
    bad('slug is a number', 'slug', { slug: 7 }),
    bad('organizationId with a space', 'organizationId', { organizationId: 'org 1' }),
    bad('serviceId with a slash', 'serviceId', { serviceId: 'svc/1' }),
    bad('serviceId null', 'serviceId', { serviceId: null }),
    bad('fields only through __proto__', 'imageTag', JSON.parse(`{"__proto__":{"imageTag":"${TEST_IMAGE}"}}`), ['imageTag']),
  ];

  // Host ports the host serves, and limits Docker cannot run: refused per deployment, never tried.
  const hostCases = (): Case[] => [
    bad("externalPort is the agent's own status port", 'externalPort', {
      desiredState: 'running',
      internalPort: 8080,
      externalPort: statusPort,
    }),
    bad('externalPort 22 (SSH)', 'externalPort', { desiredState: 'running', internalPort: 8080, externalPort: 22 }),
    bad('externalPort 2377 (Swarm management), even stopped', 'externalPort', { internalPort: 8080, externalPort: 2377 }),
    bad('externalPort 7946 (Swarm node discovery)', 'externalPort', { desiredState: 'running', internalPort: 8080, externalPort: 7946 }),
    bad('externalPort 443 (privileged range)', 'externalPort', { desiredState: 'running', internalPort: 8080, externalPort: 443 }),
    bad('cpuCores rounding to 0 NanoCPUs (would mean no limit)', 'resourceLimits.cpuCores', {
      desiredState: 'running',
      resourceLimits: { cpuCores: 1e-10, memoryMb: 16 },
    }),
    bad("cpuCores under the kernel's 1 ms CFS quota", 'resourceLimits.cpuCores', {
      desiredState: 'running',
      resourceLimits: { cpuCores: 0.005, memoryMb: 16 },
    }),
    bad("memoryMb under dockerd's 6 MiB", 'resourceLimits.memoryMb', {
      desiredState: 'running',
      resourceLimits: { cpuCores: 0.05, memoryMb: 5 },
    }),
    bad('cpuCores above the CPUs this host has (dockerd refuses the container)', 'resourceLimits.cpuCores', {
      desiredState: 'running',
      resourceLimits: { cpuCores: hostCpus + 0.5, memoryMb: 16 },
    }),
    // The smallest limits Docker accepts: Swarm takes the service (its reservation is at Swarm's 4 MiB floor).
    odd('limits at the minimums (0.01 cores, 6 MiB)', { resourceLimits: { cpuCores: 0.01, memoryMb: 6 } }),
  ];

  // Conflicts with A need A's values, so they are built once A exists.
  const conflictCases = (): Case[] => [
    bad("a second running deployment on A's external port", 'externalPort', {
      desiredState: 'running',
      internalPort: 8080,
      externalPort: extPort,
    }),
    bad('replicas 2 with an external port (one host-mode port per node)', 'replicas', {
      desiredState: 'running',
      replicas: 2,
      internalPort: 8080,
      externalPort: 31_998,
    }),
    bad("a second deployment for A's serviceId", 'serviceId', { serviceId: A.serviceId }),
    // The first (valid) A keeps running; the copy is rejected without a "failed" for A's id.
    {
      name: "A's id listed twice, the copy with another image",
      body: (base) => [...base, { ...A, imageTag: 'evil.example.com/miner:latest' }],
      expect: { kind: 'silent' },
    },
    // Only running deployments hold a host port: a stopped one may name A's.
    odd("a stopped deployment naming A's external port", { internalPort: 8080, externalPort: extPort }),
  ];

  const silentCases: Case[] = [
    silent('entry null', null),
    silent('entry a number', 42),
    silent('entry a string', 'deployment'),
    silent('entry an array', [A]),
    silent('id a number', stopped({ id: 123 })),
    silent('id empty', stopped({ id: '' })),
    silent('id with a slash', stopped({ id: 'a/b' })),
    silent('id of 200 characters', stopped({ id: 'i'.repeat(200) })),
    silent('id with unicode', stopped({ id: 'dép-1' })),
    silent('id null', stopped({ id: null })),
    silent('id only through __proto__', JSON.parse(`{"__proto__":{"id":"${randomUUID()}"}}`)),
  ];

  const oddCases: Case[] = [
    odd('unicode slug', { slug: '日本語のアプリ 🚀 ünïcödé' }),
    odd('200-character slug', { slug: 'long-'.repeat(40) }),
    odd('empty slug', { slug: '' }),
    odd('slug with NUL and control characters', { slug: 'a\u0000b\u001b[31mc' }),
    odd('128-character ids (the maximum)', { id: `x${'1'.repeat(127)}`, serviceId: `y${'2'.repeat(127)}` }),
    odd('env names __proto__ and constructor', {
      environmentVars: JSON.parse('{"__proto__":"polluted","constructor":"c","toString":"t"}'),
    }),
    odd('secret with an odd but valid name', { secrets: [{ name: 'a.b-c_D9', value: SECRETS.oddValid, envVarName: '_X' }] }),
    odd('nulls for every optional field', {
      replicas: null,
      internalPort: null,
      externalPort: null,
      command: null,
      secrets: null,
      registryAuth: null,
      resourceLimits: { cpuCores: 0.05, memoryMb: 16, diskGb: null },
    }),
    // 60 levels: under the bound of 64 per deployment (the deployment itself is one).
    odd('unknown fields, one of them deeply nested', {
      extra: { nested: { deeper: [1, 2, { x: 'y' }] } },
      tags: ['a'],
      deep: JSON.parse(deep(60)),
    }),
  ];

  it('refuses unusable responses as a whole and changes nothing', async () => {
    for (const c of unusableCases) await runCase(c);
    // The agent fetched each body again later (no ETag kept for an unusable one) and never stopped polling.
    expect(agent.logs().filter((l) => l.msg === 'desired set rejected as a whole; keeping the last one').length).toBeGreaterThanOrEqual(10);
  }, 90_000);

  it('reports each invalid deployment failed, naming the field, while A and B keep running (first half)', async () => {
    for (const c of rejectedCases.slice(0, 25)) await runCase(c);
  }, 90_000);

  it('reports each invalid deployment failed, naming the field, while A and B keep running (second half)', async () => {
    for (const c of rejectedCases.slice(25)) await runCase(c);
  }, 90_000);

  it('rejects conflicting entries without touching the deployment they conflict with', async () => {
    for (const c of conflictCases()) await runCase(c);
    // A was never reported anything but running, although a rejected duplicate carried its id.
    const aReports = cp
      .reportsOf(workerId)
      .slice(reportMark)
      .filter((r) => r.deploymentId === A.id);
    expect(aReports.map((r) => r.report.status).filter((s) => s !== 'running')).toEqual([]);
  }, 90_000);

  it('refuses host ports the host serves and limits Docker cannot run, per deployment', async () => {
    for (const c of hostCases()) await runCase(c);
    // The agent's status API still answers on its port.
    expect((await fetch(`http://127.0.0.1:${statusPort}/healthz`)).status).toBe(200);
    // And the minimums really run: a 1 ms CFS quota per 100 ms, a 6 MiB limit.
    const smallest = stopped({ slug: 'hostile-smallest', desiredState: 'running', resourceLimits: { cpuCores: 0.01, memoryMb: 6 } });
    await deliver([A, B, smallest], false);
    await waitFor(() => statusOf(smallest.id as string)?.status === 'running', 60_000, tail);
    await deliver([A, B]);
    await waitFor(async () => (await services()).length === 2, 30_000, tail);
  }, 90_000);

  it('rejects a deployment with a 50,000-deep unknown field alone and applies the rest of the same set', async () => {
    const deepOne = stopped({ extra: 'DEEP' });
    const fresh = stopped({ slug: 'hostile-fresh' });
    // As text: 50,000 levels cannot go through JSON.stringify. Before the bound, the whole set was refused (it could not be stored).
    const body = JSON.stringify({ success: true, data: { deployments: [A, B, deepOne, fresh] } }).replace('"DEEP"', deep(50_000));
    await deliver(body, false);
    const r = await waitFor(
      () => (statusOf(deepOne.id as string)?.status === 'failed' ? statusOf(deepOne.id as string) : undefined),
      15_000,
      tail,
    );
    expect(r.message).toBe('invalid deployment: extra: is nested deeper than 64 levels');
    await waitFor(
      async () =>
        statusOf(fresh.id as string)?.status === 'stopped' &&
        (await services()).some((s) => s.Spec.Labels[LABEL.deploymentId] === fresh.id),
      30_000,
      tail,
    );
    expect(await fingerprint()).toEqual(baseline);
    await deliver([A, B]);
    await waitFor(async () => (await services()).length === 2, 30_000, tail);
  }, 90_000);

  it('ignores entries without a usable id and runs the rest', async () => {
    for (const c of silentCases) await runCase(c);
  }, 90_000);

  it('runs odd but valid deployments (unicode, long names, __proto__ keys, nulls, unknown fields)', async () => {
    for (const c of oddCases) {
      await runCase(c);
      if (!c.name.startsWith('env names')) continue;
      // __proto__ stayed an ordinary variable name all the way into the service spec.
      const id = (c.expect as { id: string }).id;
      const svc = (await services()).find((s) => s.Spec.Labels[LABEL.deploymentId] === id)!;
      expect(svc.Spec.TaskTemplate.ContainerSpec.Env).toEqual(
        expect.arrayContaining(['__proto__=polluted', 'constructor=c', 'toString=t']),
      );
    }
    // Every odd deployment is withdrawn again: the agent removes what it created, A and B stay.
    await deliver([A, B]);
    await waitFor(async () => (await services()).length === 2, 30_000, tail);
    expect(await fingerprint()).toEqual(baseline);
    // No report ever said anything but running for A or B, and A still serves on its published port.
    const ab = cp
      .reportsOf(workerId)
      .slice(reportMark)
      .filter((r) => r.deploymentId === A.id || r.deploymentId === B.id);
    expect(ab.map((r) => r.report.status).filter((s) => s !== 'running')).toEqual([]);
    expect(await (await fetch(`http://127.0.0.1:${extPort}/`)).text()).toContain('still-here');
  }, 90_000);

  it('counts at least 40 hostile cases', () => {
    expect(
      unusableCases.length + rejectedCases.length + hostCases().length + conflictCases().length + silentCases.length + oddCases.length,
    ).toBeGreaterThanOrEqual(40);
  });
});

/** Secrets and networks labelled with this worker (best effort: a network goes once its tasks are gone). */
