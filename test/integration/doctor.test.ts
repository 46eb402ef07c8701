import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { AgentProcess, capturedOutput, runCli } from '../helpers/cli.js';
import { dockerode, ensureDocker } from '../helpers/docker.js';

type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
type Check = { id: string; status: 'pass' | 'warn' | 'fail' | 'skip'; message: string; fix?: string; ms: number };

const docker = await ensureDocker();
const IDS = ['config', 'docker', 'swarm', 'disk', 'control-plane', 'token', 'clock', 'status-port'];

let cp: RefCp;
let dir: string;
const tokens: string[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  dir = await mkdtemp(join(tmpdir(), 'skp-doctor-'));
});

afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f()));
});

afterAll(async () => {
  await cp.close();
  await rm(dir, { recursive: true, force: true });
  const all = capturedOutput.join('\n');
  for (const t of tokens) expect(all).not.toContain(t);
});

async function registered(extra: Record<string, unknown> = {}): Promise<{ config: string; workerId: string }> {
  const token = cp.mintToken(randomUUID());
  tokens.push(token);
  const config = join(dir, `${randomUUID()}.json`);
  const tokenFile = join(dir, `${randomUUID()}.token`);
  await writeFile(tokenFile, token, { mode: 0o600 });
  const res = await runCli(['register', '--control-plane', cp.url, '--token-file', tokenFile, '--config', config]);
  expect(res.code, res.stderr).toBe(0);
  const written = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
  if (Object.keys(extra).length > 0) await writeFile(config, JSON.stringify({ ...written, ...extra }), { mode: 0o600 });
  return { config, workerId: written.workerId as string };
}

async function configFile(body: Record<string, unknown>, mode = 0o600): Promise<string> {
  const path = join(dir, `${randomUUID()}.json`);
  await writeFile(path, JSON.stringify(body), { mode });
  await chmod(path, mode);
  return path;
}

async function doctor(config: string, env: NodeJS.ProcessEnv = {}) {
  const started = Date.now();
  const res = await runCli(['doctor', '--config', config, '--json'], { env, timeoutMs: 60_000 });
  const report = JSON.parse(res.stdout) as { ok: boolean; checks: Check[] };
  const by = Object.fromEntries(report.checks.map((c) => [c.id, c])) as Record<string, Check>;
  return { ...res, report, by, ms: Date.now() - started };
}

/** The human form: one line per check, in order, with ✓ ✗ ! or -. */
async function doctorText(config: string, env: NodeJS.ProcessEnv = {}) {
  const res = await runCli(['doctor', '--config', config], { env, timeoutMs: 60_000 });
  const lines = res.stdout.trim().split('\n');
  return { ...res, lines, line: (id: string) => lines.find((l) => new RegExp(`^. ${id} `).test(l)) ?? '' };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function listen(server: Server | HttpServer): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

describe.skipIf(!docker.ok)('doctor on a healthy host: reference control plane and the real dockerd', () => {
  it('passes every check, exits 0, and its one heartbeat carries the real metrics', async () => {
    const { config, workerId } = await registered();
    const before = cp.workers.get(workerId)!.heartbeats;
    const { code, report, by, stderr } = await doctor(config);
    expect(code, stderr).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.checks.map((c) => c.id)).toEqual(IDS);
    for (const c of report.checks) {
      if (c.id === 'disk') expect(['pass', 'warn']).toContain(c.status);
      else expect(c.status, `${c.id}: ${c.message}`).toBe('pass');
      expect(c.ms).toBeLessThanOrEqual(5_500);
    }
    expect(by.docker!.message).toMatch(/^Docker \S+ \(API \d+\.\d+\) at unix:\/\/\/var\/run\/docker\.sock \((default|from DOCKER_HOST)\)$/);
    expect(by.swarm!.message).toMatch(/manager .*reconcile mode manager/);
    expect(by.token!.message).toContain(`worker ${workerId} accepted (HTTP 200`);
    // What a 200 proves, and what it does not (a stock panel accepts a deleted worker's token).
    expect(by.token!.message).toMatch(/verified the token's signature and worker id; this does not prove the worker still exists/);
    expect(by.clock!.message).toMatch(/within .* of the control plane's/);

    const row = cp.workers.get(workerId)!;
    expect(row.heartbeats).toBe(before + 1);
    const info = (await dockerode().info()) as { Swarm: { NodeID: string } };
    expect(row.lastHeartbeatExtras).toMatchObject({
      seq: 1,
      dockerHealthy: true,
      swarmNodeId: info.Swarm.NodeID,
      bootId: expect.any(String),
    });
    for (const k of ['cpuPercent', 'memoryPercent', 'diskPercent', 'containerCount'] as const)
      expect(typeof row.currentLoad[k]).toBe('number');
    expect(row.currentLoad.memoryPercent).toBeGreaterThan(0);
  });

  it('prints one line per check with ✓ and a summary', async () => {
    const { config } = await registered();
    const { code, lines } = await doctorText(config);
    expect(code).toBe(0);
    expect(lines).toHaveLength(IDS.length + 1);
    IDS.forEach((id, i) => expect(lines[i]).toMatch(new RegExp(`^[✓!] ${id} `)));
    expect(lines.at(-1)).toMatch(/^all checks passed/);
  });

  it('accepts a status port held by the running agent itself', async () => {
    const { config } = await registered();
    const port = await freePort();
    const env = { SKYPANEL_AGENT_STATUS_LISTEN: `127.0.0.1:${port}` };
    const agent = new AgentProcess(['run', '--config', config], env);
    cleanups.push(() => agent.stop('SIGKILL'));
    await agent.waitForLog((l) => l.msg === 'agent started');
    const { code, by } = await doctor(config, env);
    expect(by['status-port']!.status).toBe('pass');
    expect(by['status-port']!.message).toBe(`127.0.0.1:${port} is held by the running skypanel-agent (healthz ok)`);
    expect(code).toBe(0);
  });
});

describe('doctor on broken setups', () => {
  it('no Docker socket: docker fails with a fix, swarm is skipped, exit 1; the token is still checked', async () => {
    const { config, workerId } = await registered({ dockerSocket: join(dir, 'no-such-docker.sock') });
    const { code, by } = await doctor(config);
    expect(code).toBe(1);
    expect(by.docker!.status).toBe('fail');
    expect(by.docker!.message).toMatch(/no-such-docker\.sock \(from the config file\) is unreachable \(ENOENT\)/);
    expect(by.docker!.fix).toMatch(/start Docker/);
    expect(by.swarm!.status).toBe('skip');
    expect(by.token!.status).toBe('pass');
    expect(cp.workers.get(workerId)!.lastHeartbeatExtras).toMatchObject({ dockerHealthy: false });
    const text = await doctorText(config);
    expect(text.line('docker')).toMatch(/^✗ docker .* — fix: start Docker/);
    expect(text.line('swarm')).toMatch(/^- swarm .*skipped/);
    expect(text.lines.at(-1)).toMatch(/check(s)? failed/);
  });

  it('a token the panel refuses: token fails (401) with how to get a new one, exit 1', async () => {
    const bad = 'eyJhbGciOiJIUzI1NiJ9.eyJ3b3JrZXJJZCI6IngifQ.bm90LWEtc2lnbmF0dXJl';
    tokens.push(bad);
    const config = await configFile({ controlPlaneUrl: cp.url, token: bad, workerId: randomUUID(), dockerSocket: join(dir, 'nope.sock') });
    const { code, by } = await doctor(config);
    expect(code).toBe(1);
    expect(by['control-plane']!.status).toBe('pass');
    expect(by.token!.status).toBe('fail');
    expect(by.token!.message).toMatch(/refused the worker token \(HTTP 401/);
    expect(by.token!.fix).toMatch(/new worker token/);
  });

  it('an unreachable control plane: fails at once, token and clock are skipped, exit 1', async () => {
    const { config } = await registered({ controlPlaneUrl: 'http://127.0.0.1:9' });
    const { code, by, ms } = await doctor(config);
    expect(code).toBe(1);
    expect(by['control-plane']!.status).toBe('fail');
    expect(by['control-plane']!.message).toMatch(/http:\/\/127\.0\.0\.1:9 is unreachable \(ECONNREFUSED/);
    expect(by.token!.status).toBe('skip');
    expect(by.clock!.status).toBe('skip');
    expect(ms).toBeLessThan(15_000);
  });

  it('a control plane that accepts connections but never answers: bounded at 5 s per check', async () => {
    const held: Socket[] = [];
    const silent = createServer((s) => held.push(s));
    const port = await listen(silent);
    cleanups.push(async () => {
      for (const s of held) s.destroy();
      await new Promise((r) => silent.close(r));
    });
    const { config } = await registered({ controlPlaneUrl: `http://127.0.0.1:${port}` });
    const { code, by, ms } = await doctor(config);
    expect(code).toBe(1);
    expect(by['control-plane']!.status).toBe('fail');
    expect(by['control-plane']!.message).toMatch(/no answer within 5 s/);
    expect(by['control-plane']!.ms).toBeLessThan(6_000);
    expect(ms).toBeLessThan(20_000);
  });

  it('a config others can read: fails with chmod 600, exit 1', async () => {
    const config = await configFile({ controlPlaneUrl: cp.url, token: 'tok-doctor-insecure-xyz', workerId: 'w1' }, 0o644);
    tokens.push('tok-doctor-insecure-xyz');
    const { code, by } = await doctor(config);
    expect(code).toBe(1);
    expect(by.config!.status).toBe('fail');
    expect(by.config!.message).toMatch(/mode 0644/);
    expect(by.config!.fix).toBe(`chmod 600 ${config}`);
    expect(by.token!.status).toBe('skip');
  });

  it('no config at all: fails with how to register, exit 1', async () => {
    const { code, by } = await doctor(join(dir, 'absent.json'));
    expect(code).toBe(1);
    expect(by.config!.status).toBe('fail');
    expect(by.config!.fix).toMatch(/skypanel-agent register/);
  });

  it('a status port held by another program fails, exit 1', async () => {
    const other = createHttpServer((_req, res) => res.end('hello'));
    const port = await listen(other);
    cleanups.push(() => {
      other.closeAllConnections();
      return new Promise((r) => other.close(r));
    });
    const { config } = await registered();
    const { code, by } = await doctor(config, { SKYPANEL_AGENT_STATUS_LISTEN: `127.0.0.1:${port}` });
    expect(by['status-port']!.status).toBe('fail');
    expect(by['status-port']!.message).toMatch(/in use by another program \(GET \/healthz answered HTTP 200\)/);
    expect(code).toBe(1);
  });

  describe('clock skew against the Date header', () => {
    async function panelWithClockOffset(offsetSec: number): Promise<string> {
      // A minimal panel whose clock is off: any route answers, heartbeats are accepted.
      const server = createHttpServer((req, res) => {
        req.resume();
        req.on('end', () => {
          res.sendDate = false;
          res.setHeader('date', new Date(Date.now() + offsetSec * 1000).toUTCString());
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ success: true, message: 'Heartbeat received' }));
        });
      });
      const port = await listen(server);
      cleanups.push(() => new Promise((r) => server.close(r)));
      return `http://127.0.0.1:${port}`;
    }

    it('warns above 5 s', async () => {
      const url = await panelWithClockOffset(-12);
      const config = await configFile({
        controlPlaneUrl: url,
        token: 'tok-doctor-skew-12',
        workerId: 'w-skew',
        dockerSocket: join(dir, 'nope.sock'),
        statusListen: '127.0.0.1:0',
      });
      tokens.push('tok-doctor-skew-12');
      const { by } = await doctor(config);
      expect(by.clock!.status).toBe('warn');
      expect(by.clock!.message).toMatch(/local clock is 1[123]\.\d s ahead of the control plane's/);
      expect(by.clock!.fix).toMatch(/ntp/i);
    });

    it('fails above 60 s, exit 1', async () => {
      const url = await panelWithClockOffset(120);
      const config = await configFile({
        controlPlaneUrl: url,
        token: 'tok-doctor-skew-120',
        workerId: 'w-skew',
        statusListen: '127.0.0.1:0',
      });
      tokens.push('tok-doctor-skew-120');
      const { code, by } = await doctor(config);
      expect(by.clock!.status).toBe('fail');
      expect(by.clock!.message).toMatch(/local clock is 1(19|20|21)\.\d s behind the control plane's/);
      expect(code).toBe(1);
    });
  });
});
