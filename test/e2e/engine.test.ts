import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDockerClient, defaultSocketPath, describeDockerEndpoint, type EngineClient } from '../../src/swarm/docker-client.js';
import { DockerUnavailableError, getEngineFacts } from '../../src/swarm/engine.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

const run = promisify(execFile);
const docker = await ensureDocker();

/** Resolves to how long `p` took to settle and what it rejected with (or undefined). */
async function timed(p: Promise<unknown>): Promise<{ ms: number; err: unknown }> {
  const t0 = performance.now();
  try {
    await p;
    return { ms: performance.now() - t0, err: undefined };
  } catch (err) {
    return { ms: performance.now() - t0, err };
  }
}

describe.skipIf(!docker.ok)('engine facts from the real dockerd', () => {
  let client: EngineClient;
  const cli = dockerode();
  let started: string | undefined;

  beforeAll(() => {
    client = createDockerClient();
  });

  afterAll(async () => {
    if (started) await run('docker', ['rm', '-f', started]).catch(() => undefined);
  });

  it('reports an active swarm manager, its node id, root dir and engine version', async () => {
    const facts = await getEngineFacts(client);
    const cli = await run('docker', ['info', '--format', '{{json .}}']);
    const info = JSON.parse(cli.stdout) as { ServerVersion: string; Swarm: { NodeID: string } };

    expect(facts.swarm.state).toBe('active');
    expect(facts.swarm.role).toBe('manager');
    expect(facts.swarm.nodeId).toMatch(/^[a-z0-9]{25}$/);
    expect(facts.swarm.nodeId).toBe(info.Swarm.NodeID);
    expect(facts.swarm.nodeAddr).toEqual(expect.any(String));
    expect(facts.swarm.managers).toBeGreaterThanOrEqual(1);
    expect(facts.dockerVersion).toBe(info.ServerVersion);
    expect((await stat(facts.dockerRootDir)).isDirectory()).toBe(true);
    expect(facts.ncpu).toBeGreaterThan(0);
    expect(facts.memTotalBytes).toBeGreaterThan(0);
  });

  it('counts a started container and stops counting it once removed', async () => {
    // Other test files start and stop containers meanwhile (up to 100 at once), and the engine's
    // running counter (what /info reports) moves a moment before or after its container list does.
    // A sample counts only when the list is the same on both sides of the count and agrees with it.
    const sample = async () => {
      let last = '';
      for (let i = 0; i < 120; i++) {
        const ids = (await cli.listContainers())
          .map((c) => c.Id)
          .sort()
          .join(',');
        const n = (await getEngineFacts(client)).containersRunning;
        const again = (await cli.listContainers())
          .map((c) => c.Id)
          .sort()
          .join(',');
        const list = ids ? ids.split(',') : [];
        if (ids === again && n === list.length) return { n, ids: list };
        last = `count ${n}, listed ${list.length}`;
        await new Promise((r) => setTimeout(r, 250));
      }
      throw new Error(`containers kept changing for 30 s; could not take a stable sample (last: ${last})`);
    };
    const others = (ids: string[]) => ids.filter((id) => id !== started).length;

    const before = await sample();
    started = (await run('docker', ['run', '-d', '--rm', '--label', 'skypanel-test=engine', TEST_IMAGE, 'sleep', '300'])).stdout.trim();
    const during = await sample();
    expect(during.ids).toContain(started);
    expect(during.n).toBe(before.n + 1 + others(during.ids) - others(before.ids));

    await run('docker', ['rm', '-f', started]);
    const after = await sample();
    expect(after.ids).not.toContain(started);
    expect(after.n).toBe(during.n - 1 + others(after.ids) - others(during.ids));
    started = undefined;
  }, 120_000);
});

describe('when Docker cannot be reached', () => {
  let dir: string;
  const servers: Server[] = [];
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'skp-engine-'));
  });

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await rm(dir, { recursive: true, force: true });
  });

  /** A unix socket that accepts connections and then does `behave` with them (default: nothing). */
  async function socketServer(name: string, behave: (s: Socket) => void = () => {}): Promise<{ path: string; accepted: () => number }> {
    const path = join(dir, name);
    let accepted = 0;
    const server = createServer((s) => {
      accepted++;
      sockets.add(s);
      s.on('error', () => {});
      behave(s);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(path, r));
    return { path, accepted: () => accepted };
  }

  it('rejects with DockerUnavailableError naming a socket that does not exist', async () => {
    const path = join(dir, 'no-such-docker.sock');
    const client = createDockerClient({ socketPath: path, timeoutMs: 2_000 });
    const { ms, err } = await timed(getEngineFacts(client));
    expect(err).toBeInstanceOf(DockerUnavailableError);
    const e = err as DockerUnavailableError;
    expect(e.code).toBe('SKP_ERR_DOCKER_UNAVAILABLE');
    expect(e.causeCode).toBe('ENOENT');
    expect(e.message).toContain(`unix://${path}`);
    expect(e.message).not.toMatch(/\n|\(node:|\.js:\d+/);
    expect(ms).toBeLessThan(2_000);
  });

  it('gives up on a socket that accepts and never answers within timeoutMs', async () => {
    const silent = await socketServer('silent.sock');
    const client = createDockerClient({ socketPath: silent.path, timeoutMs: 400 });
    const { ms, err } = await timed(getEngineFacts(client));
    expect(err).toBeInstanceOf(DockerUnavailableError);
    expect((err as DockerUnavailableError).causeCode).toBe('ETIMEDOUT');
    expect((err as Error).message).toContain('no answer within 400 ms');
    expect((err as Error).message).toContain(silent.path);
    expect(ms).toBeGreaterThanOrEqual(350);
    expect(ms).toBeLessThan(1_500);
    expect(silent.accepted()).toBe(1);
  });

  it('bounds the whole call even when the peer keeps trickling bytes (idle timeout alone would not)', async () => {
    const trickle = await socketServer('trickle.sock', (s) => {
      s.write('HTTP/1.1 200 OK\r\n');
      const t = setInterval(() => (s.writable ? s.write('X-Drip: 1\r\n') : clearInterval(t)), 100);
      s.on('close', () => clearInterval(t));
    });
    const client = createDockerClient({ socketPath: trickle.path, timeoutMs: 500 });
    const { ms, err } = await timed(getEngineFacts(client));
    expect((err as DockerUnavailableError).causeCode).toBe('ETIMEDOUT');
    expect(ms).toBeLessThan(1_500);
  });

  it('rejects an answer that is not Docker, and reports HTTP errors with their status', async () => {
    const path = join(dir, 'not-docker.sock');
    let infoStatus = 200;
    const http = createHttpServer((req, res) => {
      const body = infoStatus === 200 ? { hello: 'world' } : { message: 'daemon is\n  broken' };
      res.writeHead(infoStatus, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    servers.push(http as unknown as Server);
    await new Promise<void>((r) => http.listen(path, r));
    const client = createDockerClient({ socketPath: path, timeoutMs: 2_000 });

    const notDocker = (await timed(getEngineFacts(client))).err as DockerUnavailableError;
    expect(notDocker.causeCode).toBe('EBADRESPONSE');
    infoStatus = 500;
    const failing = (await timed(getEngineFacts(client))).err as DockerUnavailableError;
    expect(failing.causeCode).toBe('HTTP_500');
    expect(failing.message).toContain('HTTP 500: daemon is broken');
  });

  it('uses the socket it was given even when DOCKER_HOST points elsewhere', async () => {
    const saved = process.env.DOCKER_HOST;
    process.env.DOCKER_HOST = 'tcp://127.0.0.1:1';
    try {
      const path = join(dir, 'explicit.sock');
      const client = createDockerClient({ socketPath: path, timeoutMs: 1_000 });
      expect(describeDockerEndpoint(client)).toBe(`unix://${path}`);
      const { err } = await timed(getEngineFacts(client));
      expect((err as DockerUnavailableError).causeCode).toBe('ENOENT');
      expect(defaultSocketPath({ DOCKER_HOST: 'unix:///run/other.sock' })).toBe('/run/other.sock');
      expect(defaultSocketPath({ DOCKER_HOST: 'tcp://10.0.0.1:2375' })).toBe('/var/run/docker.sock');
      expect(describeDockerEndpoint(createDockerClient({ host: 'tcp://10.0.0.1:2376', ca: 'x' }))).toBe('https://10.0.0.1:2376');
    } finally {
      if (saved === undefined) delete process.env.DOCKER_HOST;
      else process.env.DOCKER_HOST = saved;
    }
  });
});
