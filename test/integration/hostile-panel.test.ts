import { randomUUID } from 'node:crypto';
import { access, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';
import { useReferencePanel } from '../helpers/reference-panel.js';

/**
 * A hostile control plane, played by the reference control plane's fault injection against the
 * built agent (no Docker: the agent heartbeats dockerHealthy=false and polls, applies nothing).
 * What this file pins down: whatever the panel answers, the agent neither spins nor falls silent
 * for longer than the documented cap, says so in /healthz while it waits, never takes on another
 * worker's identity, and does not flood its log with the same rejections.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NO_DOCKER = () => ({ SKYPANEL_AGENT_DOCKER_SOCKET: join(tmpdir(), `no-docker-${randomUUID()}`, 'docker.sock') });
const RATE_LIMITED_BODY = '{"success":false,"error":"Too many requests from this IP, please try again later."}';
/** retry-after.ts MAX_SERVER_WAIT_MS, plus the spread of at most one backoff cap (60 s by default). */
const MAX_WAIT_MS = 15 * 60_000 + 60_000;

const panel = useReferencePanel({ tmpPrefix: 'skp-hostile-panel-', agentEnv: NO_DOCKER });
const registered = (workerId?: string) => panel.register({ workerId });
const startAgent = (config: string, env: NodeJS.ProcessEnv = {}) => panel.startAgent(config, env);

async function statusApi(agent: AgentProcess): Promise<string> {
  const started = await agent.waitForLog((l) => l.msg === 'agent started');
  return `http://${String(started.statusApi)}`;
}

const since = (at: number) => panel.cp.requests.filter((r) => r.at >= at);

describe('every wait the panel asks for is capped, and no loop spins', () => {
  const cases: [string, () => string][] = [
    ['delta-seconds past 2^31 ms', () => '99999999999'],
    ['an HTTP date in the year 9999', () => 'Fri, 01 Jan 9999 00:00:00 GMT'],
    ['two days (fits a timer, but silences the worker)', () => '172800'],
    ['an HTTP date 30 days out (past 2^31 ms)', () => new Date(Date.now() + 30 * 86_400_000).toUTCString()],
  ];
  it.each(cases)(
    '429 with Retry-After %s: a handful of requests, then silence of at most 16 min that /healthz names',
    async (_name, retryAfter) => {
      const { config, token } = await registered();
      // Every /api/ request is refused, from the first one on.
      panel.cp.setFault({ kind: 'status', status: 429, retryAfter: retryAfter(), body: RATE_LIMITED_BODY });
      const from = Date.now();
      const agent = startAgent(config);
      const api = await statusApi(agent);
      await sleep(5_000);
      const sent = since(from);
      const counts = new Map<string, number>();
      for (const r of sent) counts.set(r.path.split('/').pop()!, (counts.get(r.path.split('/').pop()!) ?? 0) + 1);
      const byCall = [...counts].map(([call, n]) => `${n} ${call}`);
      console.log(
        `hostile-panel: ${sent.length} requests (${byCall.join(', ')}) in ${Date.now() - from} ms under 429 + Retry-After ${_name}`,
      );
      // One heartbeat, one poll, one registration refresh: before the cap these looped at hundreds a second.
      expect(sent.length).toBeLessThanOrEqual(6);
      expect(sent.every((r) => r.status === 429)).toBe(true);

      const health = await fetch(`${api}/healthz`);
      const body = (await health.json()) as { status: string; until: string; reason: string };
      expect(health.status).toBe(200);
      expect(body.status).toBe('waiting');
      expect(body.reason).toMatch(/rate limited \(HTTP 429\): next heartbeat at /);
      const waitMs = Date.parse(body.until) - Date.now();
      expect(waitMs).toBeGreaterThan(14 * 60_000);
      expect(waitMs).toBeLessThanOrEqual(MAX_WAIT_MS);
      const status = (await (await fetch(`${api}/v1/status`, { headers: { authorization: `Bearer ${token}` } })).json()) as Record<
        string,
        unknown
      >;
      expect(status.controlPlaneWait).toEqual({ until: body.until, reason: body.reason });
      expect(status.lastHeartbeat).toMatchObject({ outcome: 'rate-limited', status: 429 });
      // `skypanel-agent status` says it too: unhealthy, and until when.
      const cli = await runCli(['status', '--config', config, '--url', api]);
      expect(cli.code).toBe(1);
      expect(cli.stdout).toContain(`waiting     ${body.reason}`);
      expect(agent.child.exitCode).toBeNull();
    },
    30_000,
  );

  it("honours SkyPanelV2's RateLimit-Reset when the window ends before its 15-minute Retry-After", async () => {
    const { config, workerId } = await registered();
    // What express-rate-limit sends: Retry-After is always the whole window, RateLimit-Reset the time left in it.
    panel.cp.setFault({
      kind: 'status',
      status: 429,
      retryAfter: '900',
      body: RATE_LIMITED_BODY,
      count: 1,
      pathEndsWith: '/heartbeat',
      headers: { 'RateLimit-Limit': '200', 'RateLimit-Remaining': '0', 'RateLimit-Reset': '2' },
    });
    const agent = startAgent(config);
    const beats = () => panel.cp.requests.filter((r) => r.path === `/api/workers/${workerId}/heartbeat`);
    const accepted = await waitFor(
      () => beats().find((r) => r.status === 200),
      15_000,
      () => agent.output,
    );
    const limited = beats().find((r) => r.status === 429)!;
    expect(accepted.at - limited.at).toBeGreaterThanOrEqual(2_000);
    // 2 s plus at most 10 % spread, not 15 minutes.
    expect(accepted.at - limited.at).toBeLessThan(4_000);
    const health = (await (await fetch(`${await statusApi(agent)}/healthz`)).json()) as { status: string };
    expect(health.status).toBe('ok');
  }, 30_000);

  it('a panel that accepts every re-register but answers every heartbeat 404 gets a backing-off trickle, not a loop', async () => {
    const { config, workerId } = await registered();
    panel.cp.setFault({
      kind: 'status',
      status: 404,
      pathEndsWith: '/heartbeat',
      body: JSON.stringify({ success: false, error: { code: 'WORKER_NOT_FOUND', message: 'Worker not found' } }),
    });
    const from = Date.now();
    const agent = startAgent(config);
    await agent.waitForLog((l) => l.msg === 'agent started');
    await sleep(12_000);
    const beats = since(from).filter((r) => r.path === `/api/workers/${workerId}/heartbeat`).length;
    const registers = since(from).filter((r) => r.path === '/api/workers/register').length;
    console.log(`hostile-panel: ${beats} heartbeats and ${registers} registers in 12 s of 404 + successful re-register`);
    // Backoff from the second 404 (1 s base, doubling): about 5 of each. The 1 s floor alone
    // would allow 12; before either, hundreds a second.
    expect(beats).toBeLessThanOrEqual(9);
    expect(registers).toBeLessThanOrEqual(10);
    expect(agent.logs().filter((l) => l.msg === 'control plane no longer knows this worker; registering again')).toHaveLength(1);
  }, 30_000);
});

describe('identity: a register answer naming another worker is refused', () => {
  const otherWorker = () => JSON.stringify({ success: true, data: { id: randomUUID(), status: 'active' } });

  it('register: exits non-zero with a clear error and writes no config', async () => {
    const workerId = randomUUID();
    const token = panel.cp.mintToken(workerId);
    panel.mustNotLeak(token);
    const tokenFile = join(panel.dir, `${randomUUID()}.token`);
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
    const config = join(panel.dir, `${randomUUID()}.json`);
    const body = otherWorker();
    const other = (JSON.parse(body) as { data: { id: string } }).data.id;
    panel.cp.setFault({ kind: 'status', status: 201, body, pathEndsWith: '/register' });
    const res = await runCli(['register', '--control-plane', panel.cp.url, '--token-file', tokenFile, '--config', config]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(
      `the control plane answered register with worker id ${other}, but the token's workerId is ${workerId}: refused`,
    );
    await expect(access(config)).rejects.toThrow(/ENOENT/);
  });

  it('run: keeps its own id, leaves the config as it was, logs the refusal as an error', async () => {
    const { config, workerId } = await registered();
    const before = await readFile(config, 'utf8');
    const body = otherWorker();
    const other = (JSON.parse(body) as { data: { id: string } }).data.id;
    panel.cp.setFault({ kind: 'status', status: 201, body, pathEndsWith: '/register' });
    const agent = startAgent(config);
    // The registration refresh at start gets the foreign answer.
    const refused = await agent.waitForLog((l) => l.code === 'SKP_ERR_WORKER_ID_MISMATCH');
    expect(refused.level).toBe('error');
    expect(String(refused.msg)).toContain(`worker id ${other}, but`);
    const mark = Date.now();
    await waitFor(
      () => panel.cp.requests.some((r) => r.at >= mark && r.path === `/api/workers/${workerId}/heartbeat` && r.status === 200),
      10_000,
      () => agent.output,
    );
    expect(panel.cp.requests.some((r) => r.path.includes(other))).toBe(false);
    expect(await readFile(config, 'utf8')).toBe(before);
    expect(agent.logs().some((l) => l.msg === 'control plane assigned a new worker id')).toBe(false);
  }, 30_000);
});

describe('rejected deployments and the first heartbeat', () => {
  it('1000 rejected deployments re-sent with every poll are logged once each, not once per poll', async () => {
    const { config } = await registered();
    const rejected = Array.from({ length: 1000 }, () => ({
      id: randomUUID(),
      serviceId: randomUUID(),
      organizationId: 'org-hostile-panel',
      slug: 'x',
      imageTag: 'registry.example.com/app:1',
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.1, memoryMb: -1 },
    }));
    // A 200 with the whole set at every poll, whatever If-None-Match says: no 304 ever spares the parse.
    panel.cp.setFault({
      kind: 'status',
      status: 200,
      pathEndsWith: '/deployments',
      body: JSON.stringify({ success: true, data: { deployments: rejected } }),
    });
    const from = Date.now();
    const agent = startAgent(config, { SKYPANEL_AGENT_POLL_INTERVAL: '1' });
    await waitFor(
      () => since(from).filter((r) => r.path.endsWith('/deployments') && r.status === 200).length >= 4,
      20_000,
      () => agent.output.slice(-2000),
    );
    await sleep(300);
    const polls = since(from).filter((r) => r.path.endsWith('/deployments') && r.status === 200).length;
    const warnings = agent.logs().filter((l) => String(l.msg).startsWith('deployment rejected:'));
    console.log(`hostile-panel: ${warnings.length} rejection warnings over ${polls} polls of 1000 rejected deployments`);
    expect(warnings).toHaveLength(1000);
    expect(new Set(warnings.map((w) => w.deploymentId)).size).toBe(1000);
  }, 40_000);

  it('the first heartbeat carries CPU measured over at least a second, not over the start-up', async () => {
    const { config, workerId } = await registered();
    const spawned = Date.now();
    const agent = startAgent(config);
    const started = await agent.waitForLog((l) => l.msg === 'agent started');
    const first = await waitFor(
      () => panel.cp.requests.find((r) => r.path === `/api/workers/${workerId}/heartbeat`),
      10_000,
      () => agent.output,
    );
    console.log(
      `hostile-panel: spawn → first heartbeat ${first.at - spawned} ms ('agent started' → first heartbeat ${first.at - Number(started.time)} ms)`,
    );
    // The first CPU sample is taken as the process starts (after the spawn); the beat waits until a second has passed since.
    expect(first.at - spawned).toBeGreaterThanOrEqual(1_000);
    // ...and no longer: that second overlaps start-up instead of following it.
    expect(first.at - spawned).toBeLessThan(3_000);
    expect((first.body as { cpuPercent: number }).cpuPercent).toBeGreaterThanOrEqual(0);
  }, 20_000);
});
