// The desired-set hint on heartbeat answers (#7: polls cost CPU and count against the panel's
// per-IP rate limit). Real parts: the reference control plane over HTTP and the agent's own client;
// the "heartbeats" are real POSTs whose answers are fed to the poller as the agent does.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlPlaneClient } from '../../src/controlplane/control-plane-client.js';
import { DesiredStatePoller, type DesiredSet } from '../../src/agent/deployments/desired-state-poller.js';
import { createLogger } from '../../src/agent/logger.js';
import { StateStore } from '../../src/agent/state/state-store.js';
import { deploymentsEtagHint } from '../../src/protocol/worker.js';
import { startReferenceControlPlane, type ReferenceControlPlane } from '../../src/refcp/index.js';
import { Secret } from '../../src/secret.js';

const WORKER_ID = '0b6f7c1a-2d3e-4f50-8a9b-c0d1e2f3a4b5';
const DEP = 'd0000000-0000-4000-8000-00000000000a';
const METRICS = { cpuPercent: 1, memoryPercent: 2, diskPercent: 3, containerCount: 0 };
const logger = createLogger({ level: 'silent', pretty: false, destination: new Writable({ write: (_c, _e, cb) => cb() }) });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cp: ReferenceControlPlane;
let client: ControlPlaneClient;
let dir: string;
let poller: DesiredStatePoller | undefined;
let sets: DesiredSet[];

beforeEach(async () => {
  cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  // Time is compressed here (polls every 50-300 ms), so without the 1 s per-call floor the client keeps in production.
  client = new ControlPlaneClient({ baseUrl: cp.url, token: new Secret(cp.mintToken(WORKER_ID)), timeoutMs: 5_000, minCallSpacingMs: 0 });
  const reg = await client.postJson('/api/workers/register', {
    hostname: 'n1',
    ipAddress: '10.0.0.5',
    capacity: { cpuCores: 2, memoryMb: 2048, diskGb: 20 },
  });
  expect(reg.ok).toBe(true);
  dir = await mkdtemp(join(tmpdir(), 'skp-hint-'));
  sets = [];
});

afterEach(async () => {
  await poller?.stop();
  poller = undefined;
  await client.close();
  await cp.close();
  await rm(dir, { recursive: true, force: true });
});

function startPoller(intervalMs: number, extra: { hintedPollMaxMs?: number } = {}): DesiredStatePoller {
  poller = new DesiredStatePoller({
    client,
    workerId: () => WORKER_ID,
    intervalMs,
    store: new StateStore(dir),
    logger,
    random: () => 0.5,
    onDesired: (set) => sets.push(set),
    ...extra,
  });
  poller.start();
  return poller;
}

/** One heartbeat, its answer's hint handed to the poller as the agent does; returns the hint. */
async function beat(p: DesiredStatePoller, override?: string): Promise<string | undefined> {
  const res = await client.postJson(`/api/workers/${WORKER_ID}/heartbeat`, METRICS);
  expect(res.ok).toBe(true);
  const hint = override ?? (res.ok ? deploymentsEtagHint(res.body) : undefined);
  if (hint !== undefined) p.noteEtagHint(hint);
  return hint;
}

const polls = () => cp.requests.filter((r) => r.method === 'GET' && r.path.endsWith('/deployments')).length;

describe('desired-set hint on heartbeat answers', () => {
  it('a poll whose set a heartbeat answer vouched for is not sent', async () => {
    const p = startPoller(300);
    await sleep(700);
    const before = polls();
    expect(before).toBeGreaterThanOrEqual(2); // without hints, every tick polls
    // Beats several times per tick for about ten ticks: each tick finds a fresh answer naming the set held.
    const until = Date.now() + 2_400;
    while (Date.now() < until) {
      await beat(p);
      await sleep(30);
    }
    expect(polls() - before).toBeLessThanOrEqual(2); // against 8 ticks
    // Hints stop: ticks poll again.
    const quiet = polls();
    await sleep(1_000);
    expect(polls() - quiet).toBeGreaterThanOrEqual(2);
  });

  it('a changed set is polled as soon as a heartbeat answer names it, not at the next poll', async () => {
    const p = startPoller(60_000);
    await sleep(100);
    expect(sets).toHaveLength(1);
    cp.setDeployments(WORKER_ID, [{ id: DEP }]);
    const started = Date.now();
    await beat(p);
    while (sets.length < 2 && Date.now() - started < 3_000) await sleep(10);
    expect(sets).toHaveLength(2);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(sets[1]!.etag).toBe(cp.deploymentsEtagOf(WORKER_ID));
  });

  it('a hint that never matches what the panel serves starts one extra poll, and then is not trusted', async () => {
    const p = startPoller(60_000);
    await sleep(100);
    const before = polls();
    for (let i = 0; i < 5; i++) await beat(p, '"rewritten-by-a-proxy"');
    await sleep(100);
    expect(polls() - before).toBe(1);
    // A different hint later (the set really changed) is acted on.
    cp.setDeployments(WORKER_ID, [{ id: DEP }]);
    await beat(p);
    await sleep(100);
    expect(polls() - before).toBe(2);
    expect(sets.at(-1)!.etag).toBe(cp.deploymentsEtagOf(WORKER_ID));
  });

  it('sends a real poll at least every hintedPollMaxMs, hints or not', async () => {
    const p = startPoller(50, { hintedPollMaxMs: 300 });
    await sleep(100);
    const before = polls();
    const until = Date.now() + 1_000;
    while (Date.now() < until) {
      await beat(p);
      await sleep(25);
    }
    const sent = polls() - before;
    expect(sent).toBeGreaterThanOrEqual(2); // about one per 300 ms
    expect(sent).toBeLessThanOrEqual(6); // against ~20 ticks
  });

  it('a malformed or missing hint is ignored', () => {
    expect(deploymentsEtagHint({ success: true, message: 'Heartbeat received' })).toBeUndefined();
    expect(deploymentsEtagHint({ data: { deploymentsEtag: 'unquoted' } })).toBeUndefined();
    expect(deploymentsEtagHint({ data: { deploymentsEtag: `"${'a'.repeat(300)}"` } })).toBeUndefined();
    expect(deploymentsEtagHint({ data: { deploymentsEtag: '"a\nb"' } })).toBeUndefined();
    expect(deploymentsEtagHint({ data: { deploymentsEtag: 42 } })).toBeUndefined();
    expect(deploymentsEtagHint(null)).toBeUndefined();
    expect(deploymentsEtagHint({ data: { deploymentsEtag: 'W/"abc"' } })).toBe('W/"abc"');
  });
});
