import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlaneClient } from '../../src/controlplane/control-plane-client.js';
import { createStatusServer } from '../../src/agent/status/status-server.js';
import { UsageLoop } from '../../src/agent/usage/usage-loop.js';
import { LABEL } from '../../src/domain/labels.js';
import { usageKey, type UsageRecord } from '../../src/protocol/usage.js';
import { startReferenceControlPlane, type ReferenceControlPlane } from '../../src/refcp/index.js';
import { Secret } from '../../src/secret.js';
import { createContainerStatsSampler, type ContainerStatsSampler } from '../../src/swarm/container-stats.js';
import { countDockerCalls } from '../../src/swarm/call-counter.js';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { getEngineFacts } from '../../src/swarm/engine.js';
import { waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

/**
 * Usage metering against the real swarm: services labelled like the agent's, the real Engine API
 * sampler, the real reference control plane; 10 s periods sampled every second. Truth comes from
 * the kernel's own counters read straight from the cgroup files (cgroup v1 here), not through the
 * code under test.
 */

const dockerReady = await ensureDocker();
/** The agent's client, for the code under test; `docker` is the test's own look at Docker. */
const engine = createDockerClient({ timeoutMs: 30_000 });
const docker = dockerode({ timeoutMs: 30_000 });
const WORKER = randomUUID();
const ORG = 'org-usage-e2e';
const PERIOD_SEC = 10;
const MIB = 1024 * 1024;
const GIB = 1024 ** 3;
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

let cp: ReferenceControlPlane;
let client: ControlPlaneClient;
let token: string;
let nodeId: string;
let sampler: ContainerStatsSampler;
const dirs: string[] = [];
const services: string[] = [];
const figures: string[] = [];

async function stateDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'usage-e2e-'));
  dirs.push(d);
  return d;
}

function newLoop(dir: string): UsageLoop {
  return new UsageLoop({
    sampler,
    client,
    workerId: () => WORKER,
    stateDir: dir,
    sampleIntervalSec: 1,
    periodSec: PERIOD_SEC,
    backoff: { baseMs: 200, capMs: 1_000 },
    logger: logger.child({ loop: 'usage' }),
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface Svc {
  id: string;
  deploymentId: string;
}

async function createService(
  name: string,
  cmd: string,
  opts: { cpus?: number; memoryMb?: number; port?: { target: number; published: number } } = {},
): Promise<Svc> {
  const deploymentId = randomUUID();
  const labels = {
    [LABEL.managed]: 'true',
    [LABEL.workerId]: WORKER,
    [LABEL.deploymentId]: deploymentId,
    [LABEL.serviceId]: randomUUID(),
    [LABEL.organizationId]: ORG,
  };
  const created = (await docker.createService({
    Name: `sp-usage-${name}-${deploymentId.slice(0, 8)}`,
    Labels: labels,
    TaskTemplate: {
      ContainerSpec: { Image: TEST_IMAGE, Args: ['sh', '-c', cmd], Labels: labels },
      Resources: { Limits: { NanoCPUs: Math.round((opts.cpus ?? 1) * 1e9), MemoryBytes: (opts.memoryMb ?? 128) * MIB } },
      RestartPolicy: { Condition: 'any', Delay: 500_000_000 },
      Placement: { Constraints: [`node.id==${nodeId}`] },
    },
    Mode: { Replicated: { Replicas: 1 } },
    ...(opts.port
      ? {
          EndpointSpec: {
            Ports: [{ Protocol: 'tcp', TargetPort: opts.port.target, PublishedPort: opts.port.published, PublishMode: 'host' }],
          },
        }
      : {}),
  } as never)) as { id?: string; ID?: string };
  const id = created.id ?? created.ID!;
  services.push(id);
  return { id, deploymentId };
}

async function runningContainer(deploymentId: string, not: string[] = []): Promise<{ id: string; startedAt: number }> {
  let found: string | undefined;
  await waitFor(
    async () => {
      const list = (await docker.listContainers({ filters: JSON.stringify({ label: [`${LABEL.deploymentId}=${deploymentId}`] }) })) as {
        Id: string;
      }[];
      found = list.find((c) => !not.includes(c.Id))?.Id;
      return found !== undefined;
    },
    60_000,
    () => `a running container for ${deploymentId}`,
  );
  const info = (await docker.getContainer(found!).inspect()) as { State: { StartedAt: string } };
  return { id: found!, startedAt: Date.parse(info.State.StartedAt) };
}

/** CPU seconds used by a container, from its cgroup (v1, cgroupfs) or, failing that, v2. */
async function cgroupCpuSec(id: string): Promise<number> {
  try {
    return Number(await readFile(`/sys/fs/cgroup/cpuacct/docker/${id}/cpuacct.usage`, 'utf8')) / 1e9;
  } catch {
    const stat = await readFile(`/sys/fs/cgroup/system.slice/docker-${id}.scope/cpu.stat`, 'utf8');
    return Number(/usage_usec (\d+)/.exec(stat)![1]) / 1e6;
  }
}

/** Memory in use by a container now (usage − inactive file), from its cgroup. */
async function cgroupMemoryBytes(id: string): Promise<number> {
  const usage = Number(await readFile(`/sys/fs/cgroup/memory/docker/${id}/memory.usage_in_bytes`, 'utf8'));
  const stat = await readFile(`/sys/fs/cgroup/memory/docker/${id}/memory.stat`, 'utf8');
  return usage - Number(/total_inactive_file (\d+)/.exec(stat)![1]);
}

const recordsOf = (deploymentId: string): UsageRecord[] =>
  [...cp.usageOf(WORKER).values()]
    .filter((r) => r.deploymentId === deploymentId)
    .sort((a, b) => Date.parse(a.periodStart) - Date.parse(b.periodStart));

const total = (rs: UsageRecord[], f: 'cpuHours' | 'memoryGbHours' | 'storageGbHours' | 'networkGb') => rs.reduce((a, r) => a + r[f], 0);

/** Waits until the control plane holds this deployment's records for every period ending by `t`. */
async function deliveredThrough(deploymentId: string, t: number, ms = 45_000): Promise<UsageRecord[]> {
  await waitFor(
    () => recordsOf(deploymentId).some((r) => Date.parse(r.periodEnd) >= t),
    ms,
    () => `usage of ${deploymentId} through ${new Date(t).toISOString()}: ${JSON.stringify(recordsOf(deploymentId))}`,
  );
  return recordsOf(deploymentId);
}

/** How many times each record key was POSTed to the usage API and answered 200. */
function postsPerKey(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of cp.requests) {
    if (!r.path.endsWith('/usage') || r.status !== 200) continue;
    for (const rec of (r.body as { records: UsageRecord[] }).records) counts.set(usageKey(rec), (counts.get(usageKey(rec)) ?? 0) + 1);
  }
  return counts;
}

function expectContiguous(rs: UsageRecord[]): void {
  for (let i = 1; i < rs.length; i++) expect(rs[i]!.periodStart).toBe(rs[i - 1]!.periodEnd);
}

/** CPU time of dockerd (user + system), ms, from /proc; NaN when it cannot be found. */
async function dockerdCpuMs(): Promise<number> {
  const { readdir } = await import('node:fs/promises');
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (comm.trim() !== 'dockerd') continue;
    const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime in USER_HZ (100)
  }
  return Number.NaN;
}

async function removeService(s: Svc): Promise<void> {
  await docker
    .getService(s.id)
    .remove()
    .catch(() => {});
}

describe.skipIf(!dockerReady.ok)('usage metering on a real swarm', () => {
  beforeAll(async () => {
    nodeId = (await getEngineFacts(engine)).swarm.nodeId!;
    cp = await startReferenceControlPlane();
    token = cp.mintToken(WORKER);
    client = new ControlPlaneClient({ baseUrl: cp.url, token: new Secret(token), timeoutMs: 5_000 });
    const reg = await client.postJson('/api/workers/register', {
      hostname: 'usage-e2e',
      ipAddress: '127.0.0.1',
      capacity: { cpuCores: 2, memoryMb: 4096, diskGb: 50 },
    });
    expect(reg.ok).toBe(true);
    sampler = createContainerStatsSampler(engine, { workerId: () => WORKER, storageIntervalMs: 2_000 });
  });

  afterAll(async () => {
    const own = (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${WORKER}`] }) }).catch(() => [])) as {
      ID: string;
    }[];
    for (const id of new Set([...services, ...own.map((s) => s.ID)]))
      await docker
        .getService(id)
        .remove()
        .catch(() => {});
    await client?.close();
    await cp?.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
    expect(logLines.join('')).not.toContain(token);
    process.stdout.write(`\n[usage e2e] ${figures.join('\n[usage e2e] ')}\n`);
  });

  it('cpu: a container burning CPU for 5 s is billed within 10 % of its cgroup counter', async () => {
    const loop = newLoop(await stateDir());
    await loop.start();
    await waitFor(
      () => loop.view().lastSampleAt !== null,
      10_000,
      () => 'a first sample',
    );
    const svc = await createService('cpu', 'timeout 5 yes > /dev/null; sleep 3600', { cpus: 1 });
    const c = await runningContainer(svc.deploymentId);
    await new Promise((r) => setTimeout(r, Math.max(0, c.startedAt + 6_500 - Date.now())));
    const truth = await cgroupCpuSec(c.id);
    const truthAt = Date.now();
    const rs = await deliveredThrough(svc.deploymentId, truthAt);
    await loop.stop();
    const billed = total(rs, 'cpuHours') * 3600;
    figures.push(
      `cpu: billed ${billed.toFixed(3)} s, cgroup ${truth.toFixed(3)} s (nominal 5 s at 1 core), error ${((billed / truth - 1) * 100).toFixed(2)} %`,
    );
    expect(truth).toBeGreaterThan(1);
    expect(Math.abs(billed / truth - 1)).toBeLessThan(0.1);
    expectContiguous(rs);
    expect(
      rs.every((r) => r.complete && r.organizationId === ORG && r.samples > 0),
      JSON.stringify({ rs, log: logLines.join('').slice(-3000) }),
    ).toBe(true);
    await removeService(svc);
  }, 90_000);

  it('memory: 48 MiB held in /dev/shm is billed within 10 % of 48 MiB × its lifetime; /v1/usage shows the open period', async () => {
    const loop = newLoop(await stateDir());
    await loop.start();
    await waitFor(
      () => loop.view().lastSampleAt !== null,
      10_000,
      () => 'a first sample',
    );
    const svc = await createService('mem', 'dd if=/dev/zero of=/dev/shm/x bs=1M count=48 2>/dev/null; sleep 3600', {
      cpus: 0.5,
      memoryMb: 128,
    });
    const c = await runningContainer(svc.deploymentId);
    await waitFor(
      async () => (await cgroupMemoryBytes(c.id)) > 48 * MIB,
      10_000,
      () => 'dd to fill /dev/shm',
    );
    const level = await cgroupMemoryBytes(c.id);

    // the status API serves the open period's running totals, behind the same bearer auth
    const server = createStatusServer({
      listen: '127.0.0.1:0',
      token: new Secret(token),
      metrics: { render: () => '' },
      logger,
      source: {
        status: () => ({}) as never,
        loopStalledForSec: () => 0,
        wedgedAfterSec: () => 90,
        deployments: () => [],
        usage: () => loop.view(),
      },
    });
    const { port } = await server.start();
    await waitFor(
      () => loop.view().open.some((o) => o.deploymentId === svc.deploymentId && o.memoryGbHours > 0),
      10_000,
      () => 'an open period with memory',
    );
    const res = await fetch(`http://127.0.0.1:${port}/v1/usage`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const view = (await res.json()) as { periodSec: number; open: (UsageRecord & { periodOpen: boolean })[]; unsent: { count: number } };
    expect(view.periodSec).toBe(PERIOD_SEC);
    expect(view.open.find((o) => o.deploymentId === svc.deploymentId)).toMatchObject({ periodOpen: true, organizationId: ORG });
    const denied = await fetch(`http://127.0.0.1:${port}/v1/usage`);
    expect(denied.status).toBe(401);
    await denied.body?.cancel();
    await server.stop();

    // two whole periods after the start, then compare the integral over the delivered periods
    const end = (Math.floor(c.startedAt / (PERIOD_SEC * 1000)) + 3) * PERIOD_SEC * 1000;
    const rs = await deliveredThrough(svc.deploymentId, end);
    await loop.stop();
    const lastEnd = Date.parse(rs.at(-1)!.periodEnd);
    const billed = total(rs, 'memoryGbHours');
    const expected48 = ((48 * MIB) / GIB) * ((lastEnd - c.startedAt) / 3_600_000);
    const expectedLevel = (level / GIB) * ((lastEnd - c.startedAt) / 3_600_000);
    figures.push(
      `memory: billed ${(billed * 3600).toFixed(4)} GiB·s, 48 MiB × lifetime ${(expected48 * 3600).toFixed(4)} GiB·s (error ${((billed / expected48 - 1) * 100).toFixed(2)} %), cgroup level ${(level / MIB).toFixed(1)} MiB × lifetime ${(expectedLevel * 3600).toFixed(4)} (error ${((billed / expectedLevel - 1) * 100).toFixed(2)} %)`,
    );
    expect(Math.abs(billed / expected48 - 1)).toBeLessThan(0.1);
    expect(Math.abs(billed / expectedLevel - 1)).toBeLessThan(0.1);
    expectContiguous(rs);
    await removeService(svc);
  }, 90_000);

  it('network and storage: 32 MiB served over a host-mode port is billed within 10 %; the written file is storage', async () => {
    const loop = newLoop(await stateDir());
    await loop.start();
    const published = await freePort();
    const svc = await createService(
      'net',
      'mkdir -p /www && dd if=/dev/zero of=/www/f bs=1M count=16 2>/dev/null && exec httpd -f -p 8080 -h /www',
      {
        cpus: 1,
        port: { target: 8080, published },
      },
    );
    const c = await runningContainer(svc.deploymentId);
    let payload = 0;
    await waitFor(
      async () => {
        try {
          const res = await fetch(`http://127.0.0.1:${published}/f`);
          const body = Buffer.from(await res.arrayBuffer());
          if (res.status !== 200) return false;
          payload += body.length;
          return true;
        } catch {
          return false;
        }
      },
      30_000,
      () => 'httpd to answer',
    );
    const again = await fetch(`http://127.0.0.1:${published}/f`);
    payload += Buffer.from(await again.arrayBuffer()).length;
    expect(payload).toBe(32 * MIB);
    const doneAt = Date.now();
    const rs = await deliveredThrough(svc.deploymentId, doneAt + 1_000);
    await loop.stop();
    const billedBytes = total(rs, 'networkGb') * GIB;
    figures.push(
      `network: billed ${(billedBytes / MIB).toFixed(3)} MiB for ${(payload / MIB).toFixed(0)} MiB of HTTP payload (error ${((billedBytes / payload - 1) * 100).toFixed(2)} %: Ethernet/IP/TCP headers, ACKs, HTTP headers)`,
    );
    expect(Math.abs(billedBytes / payload - 1)).toBeLessThan(0.1);
    // storage: the 16 MiB file in the writable layer, read every 2 s here (5 min by default)
    const lastEnd = Date.parse(rs.at(-1)!.periodEnd);
    const storageExpected = ((16 * MIB) / GIB) * ((lastEnd - c.startedAt) / 3_600_000);
    const storage = total(rs, 'storageGbHours');
    figures.push(
      `storage: billed ${(storage * 3600).toFixed(4)} GiB·s, 16 MiB × lifetime ${(storageExpected * 3600).toFixed(4)} GiB·s (ratio ${(storage / storageExpected).toFixed(3)}; the first size read comes up to one storage interval after the start)`,
    );
    expect(storage / storageExpected).toBeGreaterThan(0.6);
    expect(storage / storageExpected).toBeLessThan(1.1);
    await removeService(svc);
  }, 90_000);

  it('a container killed and replaced mid-period: neither run is lost or counted twice', async () => {
    const loop = newLoop(await stateDir());
    await loop.start();
    await waitFor(
      () => loop.view().lastSampleAt !== null,
      10_000,
      () => 'a first sample',
    );
    const svc = await createService('restart', 'timeout 3 yes > /dev/null; sleep 3600', { cpus: 1 });
    const first = await runningContainer(svc.deploymentId);
    await new Promise((r) => setTimeout(r, Math.max(0, first.startedAt + 4_000 - Date.now())));
    const truth1 = await cgroupCpuSec(first.id);
    await docker.getContainer(first.id).kill();
    const second = await runningContainer(svc.deploymentId, [first.id]);
    await new Promise((r) => setTimeout(r, Math.max(0, second.startedAt + 4_000 - Date.now())));
    const truth2 = await cgroupCpuSec(second.id);
    const rs = await deliveredThrough(svc.deploymentId, Date.now());
    await loop.stop();
    const billed = total(rs, 'cpuHours') * 3600;
    figures.push(
      `restart: billed ${billed.toFixed(3)} s for runs of ${truth1.toFixed(3)} s + ${truth2.toFixed(3)} s (error ${((billed / (truth1 + truth2) - 1) * 100).toFixed(2)} %)`,
    );
    expect(truth1).toBeGreaterThan(0.5);
    expect(truth2).toBeGreaterThan(0.5);
    expect(Math.abs(billed / (truth1 + truth2) - 1)).toBeLessThan(0.1);
    expectContiguous(rs);
    await removeService(svc);
  }, 90_000);

  it('a container restarted in place (same id, docker restart): the new run counts from zero, the old one stays counted', async () => {
    const loop = newLoop(await stateDir());
    await loop.start();
    await waitFor(
      () => loop.view().lastSampleAt !== null,
      10_000,
      () => 'a first sample',
    );
    const deploymentId = randomUUID();
    const labels = {
      [LABEL.managed]: 'true',
      [LABEL.workerId]: WORKER,
      [LABEL.deploymentId]: deploymentId,
      [LABEL.serviceId]: randomUUID(),
      [LABEL.organizationId]: ORG,
    };
    // Swarm never restarts a task's container in place, so this one is a plain container with the agent's labels.
    const container = await docker.createContainer({
      Image: TEST_IMAGE,
      Cmd: ['sh', '-c', 'timeout 2 yes > /dev/null; sleep 3600'],
      Labels: labels,
      HostConfig: { NanoCpus: 1e9 },
    });
    try {
      await container.start();
      await new Promise((r) => setTimeout(r, 3_500));
      const truth1 = await cgroupCpuSec(container.id);
      await container.restart({ t: 0 });
      await new Promise((r) => setTimeout(r, 3_500));
      const truth2 = await cgroupCpuSec(container.id);
      const rs = await deliveredThrough(deploymentId, Date.now());
      const billed = total(rs, 'cpuHours') * 3600;
      figures.push(
        `restart in place: billed ${billed.toFixed(3)} s for runs of ${truth1.toFixed(3)} s + ${truth2.toFixed(3)} s (error ${((billed / (truth1 + truth2) - 1) * 100).toFixed(2)} %)`,
      );
      expect(truth1).toBeGreaterThan(0.3);
      expect(truth2).toBeGreaterThan(0.3);
      expect(Math.abs(billed / (truth1 + truth2) - 1)).toBeLessThan(0.1);
    } finally {
      await loop.stop();
      await container.remove({ force: true }).catch(() => {});
    }
  }, 90_000);

  it('the loop stopped mid-period and restarted from its state directory delivers that period once, marked incomplete', async () => {
    const dir = await stateDir();
    const before = cp.duplicateUsage;
    let loop = newLoop(dir);
    await loop.start();
    await waitFor(
      () => loop.view().lastSampleAt !== null,
      10_000,
      () => 'a first sample',
    );
    const svc = await createService('stop', 'timeout 12 yes > /dev/null; sleep 3600', { cpus: 0.5 });
    const c = await runningContainer(svc.deploymentId);
    await new Promise((r) => setTimeout(r, 3_000));
    await loop.stop();
    const stoppedAt = Date.now();
    const openAtStop = loop.view().open.find((o) => o.deploymentId === svc.deploymentId)!;
    await new Promise((r) => setTimeout(r, 4_500)); // longer than 2 intervals + 1 s
    loop = newLoop(dir);
    await loop.start();
    await new Promise((r) => setTimeout(r, Math.max(0, c.startedAt + 13_500 - Date.now())));
    const truth = await cgroupCpuSec(c.id);
    const rs = await deliveredThrough(svc.deploymentId, Date.now());
    await loop.stop();
    const billed = total(rs, 'cpuHours') * 3600;
    figures.push(
      `stop/restart: billed ${billed.toFixed(3)} s, cgroup ${truth.toFixed(3)} s (error ${((billed / truth - 1) * 100).toFixed(2)} %), 4.5 s down`,
    );
    const gapPeriod = rs.find((r) => Date.parse(r.periodStart) <= stoppedAt && stoppedAt < Date.parse(r.periodEnd))!;
    expect(gapPeriod.periodStart).toBe(openAtStop.periodStart);
    expect(gapPeriod.complete).toBe(false);
    expect(gapPeriod.samples).toBeGreaterThanOrEqual(openAtStop.samples);
    expect(Math.abs(billed / truth - 1)).toBeLessThan(0.1);
    expectContiguous(rs);
    const posts = postsPerKey();
    for (const r of rs) expect(posts.get(usageKey(r)), r.periodStart).toBe(1);
    expect(cp.duplicateUsage).toBe(before);
    await removeService(svc);
  }, 90_000);

  it('a control-plane outage across period boundaries: every record is delivered once when it returns, Retry-After honoured', async () => {
    const before = cp.duplicateUsage;
    const loop = newLoop(await stateDir());
    await loop.start();
    const svc = await createService('outage', 'sleep 3600', { cpus: 0.25 });
    await runningContainer(svc.deploymentId);
    await deliveredThrough(svc.deploymentId, Date.now());
    await cp.close();
    const downAt = Date.now();
    const unsentOwn = () => loop.view().unsent.records.filter((r) => r.deploymentId === svc.deploymentId).length;
    await waitFor(
      () => unsentOwn() >= 2,
      40_000,
      () => `records to pile up: ${JSON.stringify(loop.view().unsent)}`,
    );
    expect(loop.view().delivery.consecutiveFailures).toBeGreaterThan(0);
    cp.setFault({ kind: 'status', status: 503, retryAfter: '2', count: 1, pathEndsWith: '/usage' });
    await cp.listen();
    const upAt = Date.now();
    await waitFor(
      () => loop.view().unsent.count === 0,
      30_000,
      () => `the outbox to drain: ${JSON.stringify(loop.view().delivery)}`,
    );
    await loop.stop();
    const usagePosts = cp.requests.filter((r) => r.path.endsWith('/usage') && r.at >= upAt);
    expect(usagePosts[0]!.fault).toBe('status');
    expect(usagePosts[1]!.at - usagePosts[0]!.at).toBeGreaterThanOrEqual(1_900);
    const rs = recordsOf(svc.deploymentId);
    expectContiguous(rs);
    expect(rs.filter((r) => Date.parse(r.periodStart) >= downAt - PERIOD_SEC * 1000).length).toBeGreaterThanOrEqual(2);
    const posts = postsPerKey();
    for (const r of rs) expect(posts.get(usageKey(r)), r.periodStart).toBe(1);
    expect(rs.every((r) => r.complete)).toBe(true);
    expect(cp.duplicateUsage).toBe(before);
    await removeService(svc);
  }, 90_000);

  it('reads the counters from the cgroup files with no Engine API call in steady state, agreeing with the Engine path; measures both', async () => {
    const svcs = await Promise.all([0, 1, 2, 3].map((i) => createService(`cost${i}`, 'sleep 3600', { cpus: 0.1, memoryMb: 16 })));
    await Promise.all(svcs.map((s) => runningContainer(s.deploymentId)));
    const n = 20;
    const costOf = async (source: 'auto' | 'engine') => {
      const s = createContainerStatsSampler(engine, { workerId: () => WORKER, source });
      const first = await s.sample(); // warm: first inspects, first size read
      const calls = countDockerCalls(engine);
      let containers = 0;
      let last = first;
      const daemon0 = await dockerdCpuMs();
      calls.reset();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < n; i++) containers += (last = await s.sample()).containers.length;
      const used = process.cpuUsage(cpu0);
      const wallPerSample = (performance.now() - t0) / n;
      const engineCalls = calls.count;
      calls.restore();
      const daemonMs = (await dockerdCpuMs()) - daemon0;
      s.close?.();
      const msPerContainer = (used.user + used.system) / 1000 / containers;
      figures.push(
        `sampler cost (${source === 'auto' ? 'cgroup files' : 'Engine API'}): ${msPerContainer.toFixed(3)} ms CPU per container per sample (${containers / n} containers, ${wallPerSample.toFixed(1)} ms wall per sample, ${engineCalls} Engine calls in ${n} samples) ⇒ ${((msPerContainer * 3600) / 15 / 1000).toFixed(3)} s CPU per container per hour at 15 s; dockerd meanwhile ${(daemonMs / containers).toFixed(2)} ms per container per sample (an upper bound: it also served other tests)`,
      );
      return { first, last, containers, engineCalls };
    };
    const files = await costOf('auto');
    const api = await costOf('engine');
    expect(files.containers / n).toBeGreaterThanOrEqual(4);
    expect(api.containers / n).toBeGreaterThanOrEqual(4);
    // Every container of the worker came from the files, and steady state asked dockerd nothing
    // (a storage refresh is due only every 5 min).
    expect(files.last.via).toMatchObject({ engine: 0 });
    expect(files.last.via!.cgroup).toBe(files.last.containers.length);
    expect(files.engineCalls).toBe(0);
    expect(api.engineCalls).toBeGreaterThanOrEqual(n * 5); // a list plus one stats call per container
    // The same counters both ways: cumulative CPU only grows between the two reads, memory within a page or two.
    const byId = new Map(api.last.containers.map((c) => [c.containerId, c]));
    for (const c of files.last.containers) {
      const other = byId.get(c.containerId);
      if (!other) continue;
      expect(other.startedAtMs).toBe(c.startedAtMs);
      expect(other.cpuNs).toBeGreaterThanOrEqual(c.cpuNs);
      expect(Math.abs(other.memoryBytes - c.memoryBytes)).toBeLessThan(1024 * 1024);
      expect(other.networkBytes).toBeGreaterThanOrEqual(c.networkBytes);
    }
    await Promise.all(svcs.map(removeService));
  }, 90_000);
});
