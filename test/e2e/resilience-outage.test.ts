import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import type { StatusReportRecord } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';

/**
 * The control plane goes away while deployments run. The agent (built CLI, real swarm) keeps
 * enforcing the last desired set, queues the reports of what changes meanwhile, and delivers them
 * once the panel is back on the same address: in order, none lost, none counted twice. Also across
 * an agent restart in the middle of the outage (same state directory).
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const SECRET = `outage-e2e-secret-${randomUUID()}`;
const ORG = `org-outage-${randomUUID().slice(0, 8)}`;

interface OutboxEntry {
  deploymentId: string;
  bootId: string;
  seq: number;
  content: { status: string; containerId?: string; swarmServiceId?: string };
}

function sleeper(slug: string): Record<string, unknown> {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug,
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: { ROLE: slug },
    resourceLimits: { cpuCores: 0.05, memoryMb: 16 },
    command: ['sleep', '3600'],
    secrets: [{ name: 'token', value: SECRET, envVarName: 'TOKEN' }],
  };
}

async function readOutbox(stateDir: string): Promise<OutboxEntry[]> {
  try {
    return (JSON.parse(await readFile(join(stateDir, 'outbox.json'), 'utf8')) as { pending: OutboxEntry[] }).pending;
  } catch {
    return [];
  }
}

async function servicesOf(workerId: string) {
  return (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown as {
    ID: string;
    Spec: { Labels: Record<string, string> };
  }[];
}

async function runningContainer(swarmServiceId: string): Promise<string | undefined> {
  const tasks = (await docker.listTasks({ filters: JSON.stringify({ service: [swarmServiceId], 'desired-state': ['running'] }) })) as {
    Status?: { State?: string; ContainerStatus?: { ContainerID?: string } };
  }[];
  return tasks.find((t) => t.Status?.State === 'running')?.Status?.ContainerStatus?.ContainerID;
}

/** Distinct by (deploymentId, bootId, seq), and within one boot in seq order as they arrived. */
function expectOrderedAndDistinct(reports: readonly StatusReportRecord[]): void {
  const keys = reports.map((r) => `${r.deploymentId}|${r.report.bootId}|${r.report.seq}`);
  expect(new Set(keys).size).toBe(keys.length);
  const lastSeq = new Map<string, number>();
  for (const r of reports) {
    const prev = lastSeq.get(r.report.bootId) ?? 0;
    expect(r.report.seq, `seq order within boot ${r.report.bootId}`).toBeGreaterThan(prev);
    lastSeq.set(r.report.bootId, r.report.seq);
  }
}

describe.skipIf(!ready.ok)('control-plane outage with deployments running on a real swarm', () => {
  let cp: RefCp;
  let dir: string;
  const agents: AgentProcess[] = [];
  const tokens: string[] = [];
  const workers: string[] = [];

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    dir = await mkdtemp(join(tmpdir(), 'skp-outage-e2e-'));
  });

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    for (const w of workers)
      for (const s of await servicesOf(w))
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
    for (const w of workers) await removeWorkerLeftovers(docker, w);
    const everything = capturedOutput.join('\n') + JSON.stringify(cp.requests) + JSON.stringify(workers.map((w) => cp.reportsOf(w)));
    for (const t of tokens) expect(everything).not.toContain(t);
    expect(everything).not.toContain(SECRET);
    await cp.close();
  });

  async function startWorker(): Promise<{ workerId: string; config: string; env: NodeJS.ProcessEnv }> {
    const workerId = randomUUID();
    const token = cp.mintToken(workerId);
    tokens.push(token);
    workers.push(workerId);
    const config = join(dir, `${workerId}.json`);
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '1']);
    expect(reg.code, reg.stderr).toBe(0);
    const env = {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_BACKOFF_CAP: '2',
      SKYPANEL_AGENT_STATE_DIR: await mkdtemp(join(tmpdir(), 'skp-outage-state-')),
    };
    return { workerId, config, env };
  }

  const status = (workerId: string, id: unknown) => cp.deploymentStatusOf(workerId).get(id as string);

  it('keeps enforcing during the outage and delivers the reports queued meanwhile, in order, exactly once', async () => {
    const { workerId, config, env } = await startWorker();
    const a = sleeper('outage-a');
    const b = sleeper('outage-b');
    const c = sleeper('outage-c');
    cp.setDeployments(workerId, [a, b, c]);
    const agent = new AgentProcess(['run', '--config', config], env);
    agents.push(agent);
    const tail = () => agent.output.slice(-3000);
    const up = (d: Record<string, unknown>) => status(workerId, d.id)?.status === 'running' && status(workerId, d.id)?.containerId;
    await waitFor(() => up(a) && up(b) && up(c), 60_000, tail);
    const before = (await servicesOf(workerId)).map((s) => s.ID).sort();
    const bContainer = status(workerId, b.id)!.containerId!;
    const bootId = status(workerId, a.id)!.bootId;

    await cp.close();
    const down = Date.now();
    await agent.waitForLog((l) => l.outcome === 'network' && typeof l.msg === 'string' && l.msg.startsWith('heartbeat failed'));

    // Things change while nobody listens: C's container dies, then A's, and Swarm replaces them.
    // The agent notices on its own and queues each report durably.
    let queued: OutboxEntry[] = [];
    const replaced = new Map<unknown, string>();
    for (const d of [c, a]) {
      const old = status(workerId, d.id)!.containerId!;
      const swarmId = status(workerId, d.id)!.swarmServiceId!;
      await docker.getContainer(old).kill();
      const fresh = await waitFor(
        async () => {
          const id = await runningContainer(swarmId);
          return id && id !== old ? id : undefined;
        },
        45_000,
        tail,
      );
      replaced.set(d.id, fresh);
      queued = await waitFor(
        async () => {
          const pending = await readOutbox(agent.stateDir);
          return pending.some((e) => e.deploymentId === d.id && e.content.containerId === fresh && e.content.status === 'running')
            ? pending
            : undefined;
        },
        30_000,
        tail,
      );
    }
    const newA = replaced.get(a.id)!;
    await agent.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('status report failed'));

    // Still enforcing the last desired set: nothing removed, B untouched, the agent alive.
    expect((await servicesOf(workerId)).map((s) => s.ID).sort()).toEqual(before);
    expect(await runningContainer(status(workerId, b.id)!.swarmServiceId!)).toBe(bContainer);
    expect(agent.child.exitCode).toBeNull();
    // Make the outage last a while: the retries back off but never give up.
    await new Promise((r) => setTimeout(r, Math.max(0, 12_000 - (Date.now() - down))));
    const lastSnapshot = await readOutbox(agent.stateDir);
    expect(lastSnapshot.map((e) => e.deploymentId)).toEqual([c.id, a.id]);
    const reportsBefore = cp.reportsOf(workerId).length;

    await cp.listen();
    await waitFor(
      () => status(workerId, a.id)?.containerId === newA && status(workerId, c.id)?.containerId === replaced.get(c.id),
      30_000,
      tail,
    );
    await waitFor(async () => (await readOutbox(agent.stateDir)).length === 0, 15_000, tail);

    const all = cp.reportsOf(workerId);
    const delivered = all.slice(reportsBefore);
    console.log(
      `resilience-outage: ${queued.length} report(s) queued during ${Math.round((Date.now() - down) / 1000)} s down; after the return ${delivered.length} delivered: ` +
        delivered
          .map((r) => `${r.deploymentId === a.id ? 'A' : r.deploymentId === b.id ? 'B' : 'C'}#${r.report.seq}:${r.report.status}`)
          .join(', ') +
        `; duplicates acknowledged but not counted: ${cp.duplicateReports}`,
    );
    // None lost: every entry still queued when the panel came back arrived, in the order queued.
    const key = (e: { deploymentId: string; bootId: string; seq: number }) => `${e.deploymentId}|${e.bootId}|${e.seq}`;
    const arrived = delivered.map((r) => key({ deploymentId: r.deploymentId, bootId: r.report.bootId, seq: r.report.seq }));
    const expected = [...lastSnapshot].sort((x, y) => x.seq - y.seq).map(key);
    expect(arrived.filter((k) => expected.includes(k))).toEqual(expected);
    expect(delivered.every((r) => r.report.bootId === bootId)).toBe(true);
    // None counted twice, and in order overall.
    expectOrderedAndDistinct(all);
    // The services are what they were: enforced, not recreated.
    expect((await servicesOf(workerId)).map((s) => s.ID).sort()).toEqual(before);
    for (const d of [a, b, c]) expect(status(workerId, d.id)!.status).toBe('running');
  }, 90_000);

  it('restarted during the outage, still enforces the persisted desired set and delivers the queued outbox', async () => {
    const { workerId, config, env } = await startWorker();
    const a = sleeper('restart-a');
    const b = sleeper('restart-b');
    cp.setDeployments(workerId, [a, b]);
    const first = new AgentProcess(['run', '--config', config], env);
    agents.push(first);
    let tail = () => first.output.slice(-3000);
    await waitFor(
      () =>
        status(workerId, a.id)?.status === 'running' && status(workerId, b.id)?.status === 'running' && status(workerId, b.id)?.containerId,
      60_000,
      tail,
    );
    const bootId1 = status(workerId, a.id)!.bootId;
    const swarmA = status(workerId, a.id)!.swarmServiceId!;
    const swarmB = status(workerId, b.id)!.swarmServiceId!;
    const oldB = status(workerId, b.id)!.containerId!;

    await cp.close();
    await first.waitForLog((l) => l.outcome === 'network');
    // A report is queued by the first boot: B's container is replaced.
    await docker.getContainer(oldB).kill();
    const newB = await waitFor(
      async () => {
        const c = await runningContainer(swarmB);
        return c && c !== oldB ? c : undefined;
      },
      45_000,
      tail,
    );
    const queuedByFirst = await waitFor(
      async () =>
        (await readOutbox(first.stateDir)).find(
          (e) => e.deploymentId === b.id && e.content.containerId === newB && e.content.status === 'running',
        ),
      30_000,
      tail,
    );
    expect(queuedByFirst.bootId).toBe(bootId1);

    const stopped = await first.stop('SIGTERM');
    expect(stopped.code).toBe(0);
    // Stopping the agent stops nothing it runs.
    expect((await servicesOf(workerId)).map((s) => s.ID).sort()).toEqual([swarmA, swarmB].sort());
    // While no agent runs, A's service disappears (an operator's mistake, a swarm hiccup).
    await docker.getService(swarmA).remove();

    // Restarted with the panel still down: it restores the last desired set from its state directory and enforces it.
    const second = new AgentProcess(['run', '--config', config], env);
    agents.push(second);
    tail = () => second.output.slice(-3000);
    await second.waitForLog((l) => l.msg === 'restored the last desired set from the state directory' && l.deployments === 2);
    const recreated = await waitFor(
      async () => (await servicesOf(workerId)).find((s) => s.Spec.Labels[LABEL.deploymentId] === a.id),
      30_000,
      tail,
    );
    expect(recreated.ID).not.toBe(swarmA);
    await waitFor(() => runningContainer(recreated.ID), 45_000, tail);
    expect((await servicesOf(workerId)).length).toBe(2);
    // The first boot's report is still queued, next to the second boot's news about A.
    const pending = await waitFor(
      async () => {
        const p = await readOutbox(second.stateDir);
        return p.some((e) => e.bootId === bootId1 && e.deploymentId === b.id) &&
          p.some((e) => e.deploymentId === a.id && e.bootId !== bootId1 && e.content.status === 'running')
          ? p
          : undefined;
      },
      30_000,
      tail,
    );
    const bootId2 = pending.find((e) => e.deploymentId === a.id)!.bootId;
    const reportsBefore = cp.reportsOf(workerId).length;

    await cp.listen();
    await waitFor(
      () =>
        status(workerId, a.id)?.swarmServiceId === recreated.ID &&
        status(workerId, a.id)?.status === 'running' &&
        status(workerId, b.id)?.containerId === newB,
      30_000,
      tail,
    );
    await waitFor(async () => (await readOutbox(second.stateDir)).length === 0, 15_000, tail);
    const delivered = cp.reportsOf(workerId).slice(reportsBefore);
    console.log(
      `resilience-outage (restart): delivered after the return: ` +
        delivered
          .map(
            (r) => `${r.deploymentId === a.id ? 'A' : 'B'}@boot${r.report.bootId === bootId1 ? 1 : 2}#${r.report.seq}:${r.report.status}`,
          )
          .join(', '),
    );
    // The first boot's queued report arrived exactly as queued.
    expect(delivered.filter((r) => r.report.bootId === bootId1 && r.deploymentId === b.id).map((r) => r.report.seq)).toEqual([
      queuedByFirst.seq,
    ]);
    expect(delivered.some((r) => r.report.bootId === bootId2 && r.deploymentId === a.id && r.report.status === 'running')).toBe(true);
    expectOrderedAndDistinct(cp.reportsOf(workerId));
    // Exactly one service per deployment, and heartbeats flow again from the new boot.
    const final = await servicesOf(workerId);
    expect(final.map((s) => s.Spec.Labels[LABEL.serviceId]).sort()).toEqual([a.serviceId, b.serviceId].sort());
    await waitFor(() => cp.workers.get(workerId)?.lastHeartbeatExtras?.bootId === bootId2, 15_000, tail);
  }, 90_000);
});
