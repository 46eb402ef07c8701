import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/agent/logger.js';
import { createAgentMetrics } from '../../src/agent/status/metrics.js';
import { createStatusServer } from '../../src/agent/status/status-server.js';
import { runStatus, statusUrlFromListen } from '../../src/cli/status.js';
import { Secret } from '../../src/secret.js';
import { FIXTURE, fakeSource } from '../helpers/status-fixture.js';

const source = fakeSource();
const healthyView = source.view;
const logger = createLogger({ level: 'silent', pretty: false, destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const server = createStatusServer({
  listen: '127.0.0.1:0',
  token: new Secret(FIXTURE.TOKEN),
  source,
  metrics: createAgentMetrics(),
  logger,
});
let url = '';
const printed: string[] = [];

async function status(opts: { url?: string; token?: string; json?: boolean; timeoutMs?: number; err?: boolean } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runStatus({
    url: opts.url ?? url,
    token: new Secret(opts.token ?? FIXTURE.TOKEN),
    json: opts.json ?? false,
    timeoutMs: opts.timeoutMs ?? 3000,
    out: (s) => out.push(s),
    ...(opts.err ? { err: (s: string) => err.push(s) } : {}),
  });
  printed.push(...out, ...err);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  const { port } = await server.start();
  url = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await server.stop();
  const all = printed.join('\n');
  for (const s of FIXTURE.SECRETS) expect(all).not.toContain(s);
});

describe('skypanel-agent status', () => {
  it('prints a summary and a deployment table and exits 0 when healthy', async () => {
    const r = await status();
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/^worker\s+w-7e3\s+\(agent 0\.1\.0, up 1h 2m\)/m);
    expect(r.out).toMatch(/^swarm\s+worker, reconcile mode agent, node nodeabcdef12$/m);
    expect(r.out).toMatch(/^docker\s+ok, unix:\/\/\/var\/run\/docker\.sock \(default\)$/m);
    expect(r.out).toMatch(/^state dir\s+ok$/m);
    expect(r.out).toMatch(/^heartbeat\s+accepted \(HTTP 200\) \d+s ago, rtt 42 ms$/m);
    expect(r.out).toMatch(/^ID\s+SLUG\s+DESIRED\s+OBSERVED\s+REPLICAS\s+URL\s+LAST ERROR$/m);
    expect(r.out).toMatch(/^6f1c2b7e\s+shop-frontend\s+running\s+running\s+2\/2\s+https:\/\/shop\.apps\.example\s+-$/m);
    expect(r.out).toMatch(
      /^a0b1c2d3\s+billing-worker\s+running\s+failed\s+0\/1\s+-\s+pull failed: unauthorized for user ci with password \[redact…$/m,
    );
    expect(r.out).not.toContain('unhealthy');
  });

  it('prints {status, deployments} as JSON with --json', async () => {
    const r = await status({ json: true });
    expect(r.code).toBe(0);
    const parsed = JSON.parse(r.out) as { status: { workerId: string; capacity: unknown }; deployments: { slug: string }[] };
    expect(parsed.status.workerId).toBe('w-7e3');
    // Fields the table does not show still come through.
    expect(parsed.status.capacity).toEqual({ cpuCores: 4, memoryMb: 8192, diskGb: 100 });
    expect(parsed.deployments.map((d) => d.slug)).toEqual(['shop-frontend', 'billing-worker']);
  });

  it('exits 1 with an unhealthy: line when docker is down or the last heartbeat failed', async () => {
    try {
      source.view = { ...healthyView, dockerHealthy: false };
      const down = await status();
      expect(down.code).toBe(1);
      expect(down.out).toMatch(/^docker\s+DOWN, unix:\/\/\/var\/run\/docker\.sock \(default\)$/m);
      expect(down.out.split('\n').at(-1)).toBe('unhealthy: docker is down');

      source.view = {
        ...healthyView,
        lastHeartbeat: { at: new Date().toISOString(), outcome: 'unauthorized', status: 401, rttMs: 9, message: 'token refused' },
      };
      const refused = await status({ err: true });
      expect(refused.code).toBe(1);
      expect(refused.err).toBe('unhealthy: last heartbeat unauthorized (HTTP 401): token refused');
      expect(refused.out).not.toContain('unhealthy');

      source.view = {
        ...healthyView,
        stateDir: {
          failing: [{ file: 'desired.json', error: 'ENOSPC', since: new Date().toISOString(), failures: 3 }],
          movedAside: [],
          writeFailuresTotal: 3,
        },
      };
      const full = await status();
      expect(full.code).toBe(1);
      expect(full.out).toMatch(/^state dir\s+CANNOT WRITE desired\.json \(ENOSPC\)$/m);
      expect(full.out.split('\n').at(-1)).toBe('unhealthy: cannot write the state directory: desired.json (ENOSPC)');

      source.view = { ...healthyView, lastHeartbeat: null };
      const json = await status({ json: true });
      expect(json.code).toBe(1);
      expect(JSON.parse(json.out)).toHaveProperty('status.lastHeartbeat', null);
    } finally {
      source.view = healthyView;
    }
  });

  it('says heartbeat-only mode on a line of its own; it is a mode, not unhealthy (exit 0)', async () => {
    try {
      source.view = {
        ...healthyView,
        deploymentsApi: 'heartbeat-only',
        heartbeatOnly: 'the control plane has no deployments API (stock SkyPanelV2): deployments are neither fetched nor applied',
      };
      const r = await status();
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^mode\s+HEARTBEAT-ONLY: the control plane has no deployments API/m);
      source.view = healthyView;
      expect((await status()).out).not.toMatch(/^mode/m);
    } finally {
      source.view = healthyView;
    }
  });

  it('exits 3 (answered, unreadable) when the agent refuses the token, without printing it', async () => {
    const r = await status({ token: `${FIXTURE.TOKEN}x` });
    expect(r.code).toBe(3);
    expect(r.out).toBe(
      `cannot read the status of the agent at ${url}: the agent refused the token (HTTP 401); use the worker token from the agent config`,
    );
  });

  it('exits 2 when nothing listens', async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as net.AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const r = await status({ url: `http://127.0.0.1:${port}` });
    expect(r.code).toBe(2);
    expect(r.out).toMatch(new RegExp(`^cannot reach the agent at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  });

  it('exits 2 within the timeout when the agent accepts but never answers', async () => {
    const sockets: net.Socket[] = [];
    const mute = net.createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const { port } = mute.address() as net.AddressInfo;
    try {
      const started = Date.now();
      const r = await status({ url: `http://127.0.0.1:${port}`, timeoutMs: 500 });
      expect(r.code).toBe(2);
      expect(r.out).toMatch(/^cannot reach the agent at .*: (no answer within 500 ms|.*[Tt]imeout)/);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
    }
  });

  it('maps the listen address to a loopback URL', () => {
    expect(statusUrlFromListen('0.0.0.0:9740')).toBe('http://127.0.0.1:9740');
    expect(statusUrlFromListen('[::]:9740')).toBe('http://[::1]:9740');
    expect(statusUrlFromListen('127.0.0.1:9740')).toBe('http://127.0.0.1:9740');
    expect(statusUrlFromListen('[fd00::5]:9740', { tls: true })).toBe('https://[fd00::5]:9740');
  });
});
