import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/secret.js';
import { countDockerCalls } from '../../src/swarm/call-counter.js';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { SwarmError, type ObservedTask } from '../../src/swarm/observed.js';
import { listServices, listTasks, serviceLogs } from '../../src/swarm/swarm-reader.js';
import {
  createService,
  ensureNetwork,
  ensureSecret,
  listSecrets,
  removeSecret,
  removeService,
  scaleService,
  updateService,
} from '../../src/swarm/swarm-writer.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

const dockerReady = await ensureDocker();
const RUN = randomUUID().slice(0, 8);
const SECRET_VALUE = `sv-${randomUUID()}`;
const REGISTRY_PW = `pw-${randomUUID()}`;
const MiB = 1024 * 1024;

async function until<T>(probe: () => Promise<T | undefined | false>, ms: number, what: () => string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function expectSwarmError(p: Promise<unknown>): Promise<SwarmError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SwarmError);
  expect((err as SwarmError).code).toBe('SKP_ERR_SWARM');
  return err as SwarmError;
}

const frame = (stream: number, text: string | Buffer) => {
  const payload = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const h = Buffer.alloc(8);
  h[0] = stream;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
};

// A stand-in engine on a unix socket for what a single-node manager cannot show: a worker's 503,
// a hung daemon, an error that quotes the request back, log streams cut at awkward places.
describe('swarm adapter against a stand-in engine', () => {
  const dir = mkdtempSync(join(tmpdir(), 'skp-fake-engine-'));
  const socketPath = join(dir, 'docker.sock');
  let server: Server;
  const logBytes = Buffer.concat([
    frame(1, 'l1\n'),
    frame(2, 'e1\n'),
    frame(1, `${'x'.repeat(50)}\n`),
    frame(1, Buffer.from([0x63, 0x61, 0x66, 0xc3])),
    frame(1, Buffer.from([0xa9, 0x0a])),
    frame(1, 'last'),
  ]);

  beforeAll(async () => {
    server = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://engine').pathname;
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => body.push(c));
      req.on('end', async () => {
        const json = (status: number, v: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(v));
        if (path === '/services')
          return json(503, {
            message:
              'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.',
          });
        if (path === '/tasks' || path === '/services/hung/logs') return; // never answers
        if (path === '/services/create') {
          const auth = JSON.parse(Buffer.from(String(req.headers['x-registry-auth'] ?? ''), 'base64url').toString() || '{}') as {
            password?: string;
          };
          return json(400, { message: `invalid spec ${Buffer.concat(body).toString()} (login ${auth.password})` });
        }
        if (path === '/services/framed/logs') {
          res.writeHead(200);
          for (let i = 0; i < logBytes.length; i += 5) {
            res.write(logBytes.subarray(i, i + 5));
            await new Promise((r) => setImmediate(r));
          }
          return res.end();
        }
        if (path === '/services/tty/logs') return res.writeHead(200).end('hello\r\nworld\n');
        if (path === '/services/stall/logs') return void res.writeHead(200).write(frame(1, 'early\n'));
        json(404, { message: `no route ${path}` });
      });
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('classifies a worker node, a hung daemon and a missing socket', async () => {
    const docker = createDockerClient({ socketPath, timeoutMs: 300 });
    const counter = countDockerCalls(docker);
    expect((await expectSwarmError(listServices(docker, ['a=b']))).kind).toBe('not-manager');
    const t0 = Date.now();
    expect((await expectSwarmError(listTasks(docker, { labelFilters: ['a=b'] }))).kind).toBe('unavailable');
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(counter.count).toBe(2);
    expect([...counter.byPath]).toEqual([
      ['GET /services', 1],
      ['GET /tasks', 1],
    ]);
    counter.restore();
    const gone = createDockerClient({ socketPath: join(dir, 'absent.sock'), timeoutMs: 300 });
    expect((await expectSwarmError(listServices(gone, []))).kind).toBe('unavailable');
  });

  it('never lets a revealed value reach an error message, whatever the engine quotes back', async () => {
    const docker = createDockerClient({ socketPath, timeoutMs: 2_000 });
    const tricky = `${SECRET_VALUE}"\\é`;
    const err = await expectSwarmError(
      createService(
        docker,
        { Name: 'x', TaskTemplate: { ContainerSpec: { Image: 'i', Env: [`TOKEN=${tricky}`] } } },
        {
          registryAuth: { serveraddress: 'registry.example', username: 'u', password: new Secret(REGISTRY_PW) },
          scrub: [new Secret(tricky)],
        },
      ),
    );
    expect(err.kind).toBe('rejected');
    expect(err.message).toContain('[redacted]');
    for (const text of [err.message, err.dockerMessage, String(err.stack), JSON.stringify(err)]) {
      expect(text).not.toContain(SECRET_VALUE);
      expect(text).not.toContain(REGISTRY_PW);
    }
  });

  it('demultiplexes logs across chunk boundaries, bounded in lines, line length and time', async () => {
    const docker = createDockerClient({ socketPath, timeoutMs: 5_000 });
    expect(await serviceLogs(docker, 'framed', 10, 2_000, { maxLineLength: 10 })).toEqual([
      'l1',
      'e1',
      `${'x'.repeat(10)}…`,
      'café',
      'last',
    ]);
    expect(await serviceLogs(docker, 'framed', 2, 2_000)).toEqual(['café', 'last']);
    expect(await serviceLogs(docker, 'tty', 5, 2_000)).toEqual(['hello', 'world']);
    const t0 = Date.now();
    expect(await serviceLogs(docker, 'stall', 5, 500)).toEqual(['early']);
    expect((await expectSwarmError(serviceLogs(docker, 'hung', 5, 500))).kind).toBe('unavailable');
    expect(Date.now() - t0).toBeLessThan(3_000);
  });
});

describe.skipIf(!dockerReady.ok)('swarm adapter against a real swarm', () => {
  const docker = createDockerClient({ timeoutMs: 30_000 });
  const cli = dockerode({ timeoutMs: 30_000 });
  const TEST_LABELS = { 'skypanel.test': 'adapter', 'skypanel.test.run': RUN };
  const OWN = { ...TEST_LABELS, 'skypanel.managed': 'true', 'skypanel.worker.id': `w-adapter-${RUN}` };
  const OWN_FILTERS = ['skypanel.managed=true', `skypanel.worker.id=w-adapter-${RUN}`];
  const name = (s: string) => `skp-ad-${RUN}-${s}`;
  const ids: Record<'web' | 'logs' | 'bad' | 'crash' | 'idle' | 'foreign', string> = {
    web: '',
    logs: '',
    bad: '',
    crash: '',
    idle: '',
    foreign: '',
  };
  let nodeId = '';
  let networkId = '';
  let secretId = '';
  const webSpec = (greeting: string): Docker.ServiceSpec => ({
    ...spec('web', ['httpd', '-f', '-p', '8080'], { env: [`GREETING=${greeting}`], secret: true }),
    EndpointSpec: { Mode: 'vip', Ports: [{ Protocol: 'tcp', TargetPort: 8080, PublishMode: 'host' }] },
  });

  const spec = (
    n: string,
    command: string[],
    extra: { image?: string; labels?: Record<string, string>; env?: string[]; secret?: boolean } = {},
  ): Docker.ServiceSpec => ({
    Name: name(n),
    Labels: extra.labels ?? OWN,
    TaskTemplate: {
      ContainerSpec: {
        Image: extra.image ?? TEST_IMAGE,
        Command: command,
        Env: extra.env ?? [],
        Labels: extra.labels ?? OWN,
        // sleep and httpd as PID 1 ignore SIGTERM: without this every removal waits the default 10 s.
        StopGracePeriod: 1_000_000_000,
        ...(extra.secret
          ? { Secrets: [{ SecretID: secretId, SecretName: name('app'), File: { Name: 'app-secret', UID: '0', GID: '0', Mode: 0o400 } }] }
          : {}),
      },
      Resources: { Limits: { NanoCPUs: 250_000_000, MemoryBytes: 64 * MiB }, Reservations: { NanoCPUs: 10_000_000, MemoryBytes: 4 * MiB } },
      RestartPolicy: { Condition: 'on-failure', Delay: 500_000_000, MaxAttempts: 2 },
      Placement: { Constraints: [`node.id==${nodeId}`] },
      Networks: [{ Target: networkId }],
    },
    Mode: { Replicated: { Replicas: 1 } },
  });

  const tasksOf = async (id: string) => (await listTasks(docker, { labelFilters: OWN_FILTERS })).filter((t) => t.serviceId === id);
  const runningTask = (id: string) =>
    until(
      async () => (await tasksOf(id)).find((t) => t.state === 'running' && t.desiredState === 'running'),
      60_000,
      () => `a running task of ${id}`,
    );

  beforeAll(async () => {
    nodeId = ((await cli.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID;
    networkId = (await ensureNetwork(docker, name('net'), OWN)).id;
    secretId = (await ensureSecret(docker, name('app'), new Secret(SECRET_VALUE), OWN)).id;
    ids.web = (await createService(docker, webSpec('one'))).id;
    ids.logs = (
      await createService(
        docker,
        spec('logs', ['sh', '-c', 'echo hello-from-task; echo secret-bytes=$(wc -c < /run/secrets/app-secret); exec sleep 3600'], {
          secret: true,
        }),
      )
    ).id;
    ids.bad = (await createService(docker, spec('bad', ['sh'], { image: 'skypanel-test/does-not-exist:1' }))).id;
    ids.crash = (await createService(docker, spec('crash', ['sh', '-c', 'echo boom; exit 3']))).id;
    const auth = { serveraddress: 'registry.invalid', username: 'robot', password: new Secret(REGISTRY_PW) };
    ids.idle = (await createService(docker, spec('idle', ['sleep', '3600']), { registryAuth: auth })).id;
    ids.foreign = (await createService(docker, spec('foreign', ['sleep', '3600'], { labels: TEST_LABELS }))).id;
  });

  afterAll(async () => {
    const mine = JSON.stringify({ label: [`skypanel.test.run=${RUN}`] });
    for (const s of (await cli.listServices({ filters: mine }).catch(() => [])) as { ID: string }[])
      await removeService(docker, s.ID).catch(() => {});
    for (const s of await listSecrets(docker, [`skypanel.test.run=${RUN}`]).catch(() => []))
      await removeSecret(docker, s.id).catch(() => {});
    // A network is refused while the removed services' containers are still being torn down.
    await until(
      async () => {
        const nets = (await cli.listNetworks({ filters: mine })) as { Id: string }[];
        for (const n of nets)
          await cli
            .getNetwork(n.Id)
            .remove()
            .catch(() => {});
        return nets.length === 0;
      },
      60_000,
      () => 'the test networks to be removable',
    );
    expect(await listServices(docker, [`skypanel.test.run=${RUN}`])).toEqual([]);
    expect(await listSecrets(docker, [`skypanel.test.run=${RUN}`])).toEqual([]);
  });

  it('lists its services by label, not the foreign one, with the spec as sent', async () => {
    const list = await listServices(docker, OWN_FILTERS);
    expect(list.map((s) => s.id).sort()).toEqual([ids.web, ids.logs, ids.bad, ids.crash, ids.idle].sort());
    const web = list.find((s) => s.id === ids.web)!;
    expect(web).toMatchObject({
      name: name('web'),
      image: TEST_IMAGE,
      replicas: 1,
      labels: OWN,
      publishedPorts: [{ target: 8080, mode: 'host' }],
    });
    expect(web.publishedPorts[0]!.published).toBeUndefined();
    expect(web.version).toBeGreaterThan(0);
    expect(Date.parse(web.createdAt)).not.toBeNaN();
  });

  it('a running task shows its container and the host port Docker chose, which answers HTTP', async () => {
    const task = await runningTask(ids.web);
    expect(task.containerId).toMatch(/^[0-9a-f]{64}$/);
    expect(task.nodeId).toBe(nodeId);
    expect(task.exitCode).toBeUndefined();
    expect(task.hostPorts).toHaveLength(1);
    const port = task.hostPorts[0]!;
    expect(port.target).toBe(8080);
    const res = await until(
      () => fetch(`http://127.0.0.1:${port.published}/`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined),
      20_000,
      () => `an answer on port ${port.published}`,
    );
    await res.body?.cancel();
    expect([200, 403, 404]).toContain(res.status);
  });

  it('reads what a service printed, including proof its secret file is mounted', async () => {
    const lines = await until(
      async () => {
        const l = await serviceLogs(docker, ids.logs, 50, 10_000);
        return l.includes('hello-from-task') && l.some((x) => x.startsWith('secret-bytes=')) ? l : undefined;
      },
      60_000,
      () => 'hello-from-task in the logs',
    );
    expect(lines).toContain(`secret-bytes=${SECRET_VALUE.length}`);
    expect(lines.join('\n')).not.toContain(SECRET_VALUE);
  });

  it('reports an image that does not exist and a crash loop with their reasons', async () => {
    const rejected = await until(
      async () => (await tasksOf(ids.bad)).find((t) => t.state === 'rejected' || t.state === 'failed'),
      60_000,
      () => 'a rejected task',
    );
    expect(rejected.err).toMatch(/does-not-exist/);
    expect(rejected.containerId).toBeUndefined();
    const failed = await until(
      async () => {
        const f = (await tasksOf(ids.crash)).filter((t) => t.state === 'failed');
        return f.length >= 2 ? f : undefined;
      },
      60_000,
      () => 'two failed tasks of the crash loop',
    );
    for (const t of failed) expect(t).toMatchObject({ exitCode: 3, err: expect.stringContaining('non-zero exit (3)') as unknown });
    expect(
      await until(
        async () => ((await serviceLogs(docker, ids.crash, 20, 10_000)).includes('boom') ? true : undefined),
        30_000,
        () => 'boom in the logs',
      ),
    ).toBe(true);
  });

  it('a steady-state look at five services costs exactly two Engine API calls', async () => {
    await runningTask(ids.idle);
    const counter = countDockerCalls(docker);
    try {
      const services = await listServices(docker, OWN_FILTERS);
      const tasks = await listTasks(docker, { labelFilters: OWN_FILTERS, serviceIds: services.map((s) => s.id) });
      expect(counter.count).toBe(2);
      expect(Object.fromEntries(counter.byPath)).toEqual({ 'GET /services': 1, 'GET /tasks': 1 });
      expect(services).toHaveLength(5);
      expect(new Set(tasks.map((t: ObservedTask) => t.serviceId))).toEqual(new Set(services.map((s) => s.id)));
      expect(tasks.some((t) => t.serviceId === ids.foreign)).toBe(false);
    } finally {
      counter.restore();
    }
  });

  it('keeps the registry login out of what Docker returns', async () => {
    const raw = JSON.stringify(await cli.getService(ids.idle).inspect());
    expect(raw).not.toContain(REGISTRY_PW);
    expect(raw).not.toContain(Buffer.from(REGISTRY_PW).toString('base64').slice(0, 20));
  });

  it('updates with a stale version by re-reading it once', async () => {
    const before = (await listServices(docker, OWN_FILTERS)).find((s) => s.id === ids.web)!;
    await updateService(docker, ids.web, before.version, webSpec('two'));
    // `before.version` is stale now: Swarm answers "update out of sequence".
    const counter = countDockerCalls(docker);
    await updateService(docker, ids.web, before.version, webSpec('three')).finally(() => counter.restore());
    expect(Object.fromEntries(counter.byPath)).toEqual({ [`POST /services/${ids.web}/update`]: 2, [`GET /services/${ids.web}`]: 1 });
    const after = (await cli.getService(ids.web).inspect()) as {
      Version: { Index: number };
      Spec: { TaskTemplate: { ContainerSpec: { Env: string[] } } };
    };
    expect(after.Spec.TaskTemplate.ContainerSpec.Env).toEqual(['GREETING=three']);
    expect(after.Version.Index).toBeGreaterThan(before.version);
  });

  it('errors are SwarmErrors with a kind, and a rejected update never shows the values it carried', async () => {
    const idle = (await listServices(docker, OWN_FILTERS)).find((s) => s.id === ids.idle)!;
    const bogus = spec('idle', ['sleep', '1'], { image: `Bad Image ${SECRET_VALUE}`, env: [`TOKEN=${SECRET_VALUE}`] });
    const err = await expectSwarmError(
      updateService(docker, ids.idle, idle.version, bogus, {
        registryAuth: { serveraddress: 'registry.invalid', username: 'robot', password: new Secret(REGISTRY_PW) },
        scrub: [new Secret(SECRET_VALUE)],
      }),
    );
    expect(err.kind).toBe('rejected');
    // Docker quoted the image back: the scrub had something to cut.
    expect(err.message).toContain('[redacted]');
    expect(err.message).not.toContain(SECRET_VALUE);
    expect(err.message).not.toContain(REGISTRY_PW);
    expect((await expectSwarmError(createService(docker, spec('idle', ['sleep', '1'])))).kind).toBe('conflict');
    expect((await expectSwarmError(scaleService(docker, `nope${RUN}`, 1))).kind).toBe('not-found');
  });

  it('scales to zero, then removes idempotently', async () => {
    await scaleService(docker, ids.web, 0);
    expect((await listServices(docker, OWN_FILTERS)).find((s) => s.id === ids.web)!.replicas).toBe(0);
    await until(
      async () => (await tasksOf(ids.web)).every((t) => t.desiredState !== 'running'),
      60_000,
      () => 'web tasks to stop',
    );
    expect(await removeService(docker, ids.web)).toBe(true);
    expect(await removeService(docker, ids.web)).toBe(false);
    expect((await listServices(docker, OWN_FILTERS)).some((s) => s.id === ids.web)).toBe(false);
  });

  it('ensureSecret and ensureNetwork are idempotent, also when racing', async () => {
    expect(await ensureSecret(docker, name('app'), new Secret(SECRET_VALUE), OWN)).toEqual({ id: secretId, created: false });
    expect(await ensureNetwork(docker, name('net'), OWN)).toEqual({ id: networkId, created: false });
    const raced = await Promise.all([1, 2, 3].map(() => ensureNetwork(docker, name('race'), OWN)));
    expect(new Set(raced.map((r) => r.id)).size).toBe(1);
    expect(raced.filter((r) => r.created)).toHaveLength(1);
    const created = await Promise.all([1, 2].map(() => ensureSecret(docker, name('race'), new Secret('x'), OWN)));
    expect(created[0]!.id).toBe(created[1]!.id);
    expect(created.filter((r) => r.created)).toHaveLength(1);
    // Same name, not our labels: someone else's network, not adopted.
    expect((await expectSwarmError(ensureNetwork(docker, name('race'), { ...OWN, 'skypanel.worker.id': 'other' }))).kind).toBe('conflict');
  });

  it('a secret in use is left alone; once free it is removed, twice without error', async () => {
    expect(await removeSecret(docker, secretId)).toBe(false);
    await removeService(docker, ids.logs);
    expect(await removeSecret(docker, secretId)).toBe(true);
    expect(await removeSecret(docker, secretId)).toBe(true);
    expect((await listSecrets(docker, OWN_FILTERS)).some((s) => s.id === secretId)).toBe(false);
  });
});
