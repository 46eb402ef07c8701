// The agent's side of the blocking desired-set query: it holds call 3 only when a heartbeat answer
// announced it, a held call is not cut by the normal request bound, a change arrives at once, a
// panel that does not announce it is polled as before, and one that announces but answers at once
// is not hammered. Real parts: the reference control plane over HTTP and the agent's own client.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlPlaneClient } from '../../src/controlplane/control-plane-client.js';
import { DesiredStatePoller, type DesiredSet } from '../../src/agent/deployments/desired-state-poller.js';
import { createLogger } from '../../src/agent/logger.js';
import { StateStore } from '../../src/agent/state/state-store.js';
import { deploymentsEtagHint, deploymentsWaitHint } from '../../src/protocol/worker.js';
import { startReferenceControlPlane, type ReferenceControlPlane } from '../../src/refcp/index.js';
import type { ReferenceControlPlaneOptions } from '../../src/refcp/types.js';
import { Secret } from '../../src/secret.js';

const WORKER_ID = '0b6f7c1a-2d3e-4f50-8a9b-c0d1e2f3a4b6';
const METRICS = { cpuPercent: 1, memoryPercent: 2, diskPercent: 3, containerCount: 0 };
const logger = createLogger({ level: 'silent', pretty: false, destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function deployment(tag: string): Record<string, unknown> {
  return {
    id: 'd0000000-0000-4000-8000-0000000000b1',
    serviceId: 's0000000-0000-4000-8000-0000000000b1',
    organizationId: 'o0000000-0000-4000-8000-0000000000b1',
    slug: 'held-app',
    imageTag: `nginx:${tag}`,
    desiredState: 'running',
    replicas: 1,
    environmentVars: {},
    resourceLimits: { cpuCores: 0.1, memoryMb: 32 },
    internalPort: 80,
    externalPort: null,
    secrets: [],
  };
}

let cp: ReferenceControlPlane | undefined;
let client: ControlPlaneClient | undefined;
let poller: DesiredStatePoller | undefined;
let dir: string | undefined;

afterEach(async () => {
  await poller?.stop();
  await client?.close();
  await cp?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  poller = client = cp = dir = undefined;
});

interface Setup {
  cp: ReferenceControlPlane;
  sets: DesiredSet[];
  p: DesiredStatePoller;
  beat: () => Promise<void>;
}

async function setup(cpOpts: ReferenceControlPlaneOptions, timeoutMs = 5_000): Promise<Setup> {
  cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, ...cpOpts });
  const c = (client = new ControlPlaneClient({ baseUrl: cp.url, token: new Secret(cp.mintToken(WORKER_ID)), timeoutMs }));
  expect(
    (
      await c.postJson('/api/workers/register', {
        hostname: 'n1',
        ipAddress: '10.0.0.5',
        capacity: { cpuCores: 2, memoryMb: 2048, diskGb: 20 },
      })
    ).ok,
  ).toBe(true);
  dir = await mkdtemp(join(tmpdir(), 'skp-held-'));
  const sets: DesiredSet[] = [];
  // A one-minute poll interval: anything that arrives within seconds came by the held call.
  const store = new StateStore(dir);
  const p = (poller = new DesiredStatePoller({
    client: c,
    workerId: () => WORKER_ID,
    intervalMs: 60_000,
    store,
    logger,
    random: () => 0.5,
    onDesired: (s) => sets.push(s),
  }));
  p.start();
  // As the agent does with each heartbeat answer.
  const beat = async (): Promise<void> => {
    const res = await c.postJson(`/api/workers/${WORKER_ID}/heartbeat`, METRICS);
    expect(res.ok).toBe(true);
    if (!res.ok) return;
    p.noteBlockingWait(deploymentsWaitHint(res.body));
    const etag = deploymentsEtagHint(res.body);
    if (etag !== undefined) p.noteEtagHint(etag);
  };
  return { cp, sets, p, beat };
}

const gets = (c: ReferenceControlPlane) => c.requests.filter((r) => r.method === 'GET' && r.path.endsWith('/deployments'));

async function until(what: string, cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('blocking desired-set query, agent side', () => {
  it('announced: a change reaches the agent within a second, with no poll due for a minute', async () => {
    const { cp, sets, beat } = await setup({ blockingWaitSec: 20 });
    await until('the first poll', () => sets.length === 1);
    await beat();
    await sleep(500); // the held call is on its way
    const t = Date.now();
    cp.setDeployments(WORKER_ID, [deployment('1.27')]);
    await until('the change', () => sets.length === 2, 2_000);
    expect(Date.now() - t).toBeLessThan(1_000);
    expect(sets[1]!.deployments[0]!.imageTag).toBe('nginx:1.27');
    // And the next one too: the agent went straight back to a held call.
    await sleep(1_200);
    cp.setDeployments(WORKER_ID, [deployment('1.28')]);
    await until('the second change', () => sets.length === 3, 2_000);
    await sleep(1_500);
    // Quiet: one held call is outstanding, nothing else is sent.
    const before = gets(cp).length;
    await sleep(2_000);
    expect(gets(cp).length - before).toBe(0);
  });

  it('announced before the first poll answered: the held call follows that poll at once', async () => {
    const { cp, sets, p } = await setup({ blockingWaitSec: 20 });
    p.noteBlockingWait(20); // the first heartbeat answer can come before the first poll's
    await until('the first poll', () => sets.length === 1);
    await until('a held call', () => gets(cp).length === 2, 3_000);
    const t = Date.now();
    cp.setDeployments(WORKER_ID, [deployment('1.27')]);
    await until('the change', () => sets.length === 2, 2_000);
    expect(Date.now() - t).toBeLessThan(1_000);
  });

  it('a held call is bounded by its wait, not by the normal request timeout', async () => {
    const { cp, sets, beat } = await setup({ blockingWaitSec: 2 }, 500);
    await until('the first poll', () => sets.length === 1);
    await beat();
    await sleep(6_000);
    // Each held call lasts 2–2.125 s: two or three in six seconds, each a 304, none cut at 500 ms.
    const held = gets(cp).slice(1);
    expect(held.length).toBeGreaterThanOrEqual(2);
    expect(held.length).toBeLessThanOrEqual(4);
    const answered = held.slice(0, -1); // the last is still held
    expect(answered.map((r) => r.status)).toEqual(answered.map(() => 304));
    // The reference panel records when each was answered, not only when it arrived (the bench's latency phases use it).
    for (const r of answered) expect(r.answeredAt! - r.at).toBeGreaterThanOrEqual(1_900);
  });

  it('not announced (stock answer shape): the agent polls as before, without ?wait', async () => {
    const { cp, sets, beat, p } = await setup({});
    await until('the first poll', () => sets.length === 1);
    await beat();
    expect(p.mode).toBe('available');
    await sleep(1_000);
    // Nothing outstanding, no held calls: the next poll is due in a minute (hint-driven polls aside).
    expect(gets(cp).length).toBe(1);
    cp.setDeployments(WORKER_ID, [deployment('1.27')]);
    await beat(); // the hint names the new set: polled at once, as without the blocking query
    await until('the change', () => sets.length === 2, 2_000);
  });

  it('announced but not held (answers at once): backs off instead of spinning', async () => {
    const { cp, sets, p } = await setup({});
    await until('the first poll', () => sets.length === 1);
    p.noteBlockingWait(30); // as if announced; this server answers 304 at once
    await sleep(4_000);
    expect(gets(cp).length).toBeLessThanOrEqual(5);
  });
});
