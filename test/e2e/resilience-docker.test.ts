import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { DEFAULT_DOCKER_SOCKET } from '../../src/swarm/docker-client.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';

/**
 * Docker going away under a running agent. Restarting the shared dockerd would break every other
 * test file running in parallel, so the agent talks to Docker through a unix-socket proxy this test
 * owns (--docker-socket): cutting the proxy is, for the agent, exactly a daemon that is gone
 * (ECONNREFUSED/ENOENT, connections dropped mid-request); restoring it is the daemon coming back.
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const SECRET = `docker-e2e-secret-${randomUUID()}`;
const ORG = `org-docker-${randomUUID().slice(0, 8)}`;

/** A unix socket that forwards to the real Docker socket while it is "up". */
class DockerProxy {
  readonly path: string;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  connections = 0;

  constructor(path: string) {
    this.path = path;
  }

  get up(): boolean {
    return this.#server !== undefined;
  }

  async restore(): Promise<void> {
    if (this.#server) return;
    await rm(this.path, { force: true });
    const server = createServer((client) => {
      this.connections++;
      const upstream = connect(DEFAULT_DOCKER_SOCKET);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.#sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    this.#server = server;
  }

  /** The daemon is gone: no new connections, and every open one (requests in flight included) dropped. */
  async cut(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
    await rm(this.path, { force: true });
  }
}

function sleeper(slug: string): Record<string, unknown> {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug,
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: {},
    resourceLimits: { cpuCores: 0.05, memoryMb: 16 },
    command: ['sleep', '3600'],
    secrets: [{ name: 'token', value: SECRET }],
  };
}

describe.skipIf(!ready.ok)('Docker unavailable, restarted, flapping: the agent stays up and converges without duplicates', () => {
  let cp: RefCp;
  let proxy: DockerProxy;
  let agent: AgentProcess;
  let workerId: string;
  let token: string;
  let statusApi: string;
  const desired: Record<string, unknown>[] = [];
  const tail = () => agent.output.slice(-4000);
  const services = async () =>
    (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown as {
      ID: string;
      Spec: { Labels: Record<string, string> };
    }[];
  const status = (d: Record<string, unknown>) => cp.deploymentStatusOf(workerId).get(d.id as string);
  const extras = () => cp.workers.get(workerId)?.lastHeartbeatExtras;
  const healthz = async () => {
    const res = await fetch(`http://${statusApi}/healthz`);
    return { status: res.status, body: (await res.json()) as unknown };
  };
  /** Exactly one service per desired serviceId, and nothing else. */
  async function expectOnePerService(): Promise<void> {
    const list = await services();
    expect(list.map((s) => s.Spec.Labels[LABEL.serviceId]).sort()).toEqual(desired.map((d) => d.serviceId as string).sort());
  }

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    const dir = await mkdtemp(join(tmpdir(), 'skp-docker-e2e-'));
    proxy = new DockerProxy(join(dir, 'docker.sock'));
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const config = join(dir, 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '1']);
    expect(reg.code, reg.stderr).toBe(0);
    desired.push(sleeper('docker-a'));
    cp.setDeployments(workerId, desired);
    // Docker is down when the agent starts (the proxy is not listening).
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_DOCKER_SOCKET: proxy.path,
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_BACKOFF_CAP: '2',
    });
    statusApi = String((await agent.waitForLog((l) => l.msg === 'agent started')).statusApi);
  });

  afterAll(async () => {
    await agent?.stop();
    await proxy?.cut();
    if (workerId)
      for (const s of await services())
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
    if (workerId) await removeWorkerLeftovers(docker, workerId);
    const everything = capturedOutput.join('\n') + JSON.stringify(cp?.requests ?? []) + JSON.stringify(cp?.reportsOf(workerId) ?? []);
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(SECRET);
    await cp?.close();
  });

  it('starts with Docker down: stays up, heartbeats dockerHealthy=false, /healthz answers; applies the set once Docker answers', async () => {
    await waitFor(() => extras()?.dockerHealthy === false && (cp.workers.get(workerId)?.heartbeats ?? 0) >= 2, 15_000, tail);
    expect(await healthz()).toEqual({ status: 200, body: { status: 'ok' } });
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await services()).toEqual([]);
    expect(agent.child.exitCode).toBeNull();
    // It already fetched (and keeps) the desired set; it just cannot apply it.
    expect(cp.requests.some((r) => r.method === 'GET' && r.path.endsWith('/deployments') && r.status === 200)).toBe(true);

    await proxy.restore();
    await waitFor(() => extras()?.dockerHealthy === true, 15_000, tail);
    await agent.waitForLog((l) => l.msg === 'docker answers: deployment loops restarted in their mode' && l.reconcileMode === 'manager');
    await waitFor(() => status(desired[0]!)?.status === 'running', 60_000, tail);
    await expectOnePerService();
  }, 90_000);

  it('Docker goes away while deployments run: keeps the services, reports nothing false, catches up on what changed meanwhile', async () => {
    const a = desired[0]!;
    const aReport = status(a)!;
    const reportsBefore = cp.reportsOf(workerId).length;
    await proxy.cut();
    await waitFor(() => extras()?.dockerHealthy === false, 15_000, tail);
    await agent.waitForLog((l) => l.msg === 'reconcile pass failed; retrying');
    expect(await healthz()).toEqual({ status: 200, body: { status: 'ok' } });

    // The panel assigns B while Docker is away: nothing can be applied, nothing is invented.
    const b = sleeper('docker-b');
    desired.push(b);
    cp.setDeployments(workerId, desired);
    await new Promise((r) => setTimeout(r, 7_000)); // longer than a resync pass
    expect(
      cp
        .reportsOf(workerId)
        .slice(reportsBefore)
        .map((r) => r.report.status),
    ).toEqual([]);
    expect(agent.child.exitCode).toBeNull();
    expect((await services()).map((s) => s.ID)).toEqual([aReport.swarmServiceId]);

    await proxy.restore();
    await waitFor(() => extras()?.dockerHealthy === true, 15_000, tail);
    await waitFor(() => status(b)?.status === 'running', 60_000, tail);
    await expectOnePerService();
    expect(status(a)!.swarmServiceId).toBe(aReport.swarmServiceId);
    expect(status(a)!.status).toBe('running');
  }, 90_000);

  it('Docker flapping while a deployment is created (requests cut mid-flight): no duplicate services', async () => {
    const c = sleeper('docker-c');
    desired.push(c);
    const connectionsBefore = proxy.connections;
    cp.setDeployments(workerId, desired);
    // Up and down every 150–450 ms for 8 s: creates are cut before, during and after Docker acts on them.
    const until = Date.now() + 8_000;
    while (Date.now() < until) {
      if (proxy.up) await proxy.cut();
      else await proxy.restore();
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 300));
    }
    await proxy.restore();
    expect(proxy.connections).toBeGreaterThan(connectionsBefore);
    await waitFor(() => status(c)?.status === 'running', 60_000, tail);
    await waitFor(() => extras()?.dockerHealthy === true, 15_000, tail);
    // A couple of passes after the flapping: still one service per serviceId.
    await new Promise((r) => setTimeout(r, 6_000));
    await expectOnePerService();
    for (const d of desired) expect(status(d)!.status).toBe('running');
    expect(agent.child.exitCode).toBeNull();
  }, 90_000);
});
