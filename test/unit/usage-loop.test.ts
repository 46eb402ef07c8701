import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CallResult } from '../../src/controlplane/control-plane-client.js';
import { StateStore } from '../../src/agent/state/state-store.js';
import { UsageLoop } from '../../src/agent/usage/usage-loop.js';
import type { MeterReading, UsageSampler } from '../../src/ports.js';
import { MAX_USAGE_BATCH_BYTES, UsageOutbox } from '../../src/agent/usage/usage-outbox.js';
import { usageBatchSchema, usageKey, type UsageRecord } from '../../src/protocol/usage.js';

const T = Date.UTC(2026, 0, 1, 0, 0, 0);
const SEC = 1e9;

let dir: string;
let logLines: string[];
let logger: pino.Logger;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'usage-loop-'));
  logLines = [];
  logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _e, cb) {
        logLines.push(String(chunk));
        cb();
      },
    }),
  );
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Responder = (body: { records: UsageRecord[] }, path: string) => CallResult | Promise<CallResult>;

const ok = (): CallResult => ({ ok: true, status: 200, body: { success: true }, headers: {}, rttMs: 1 });
const fail = (status: number, extra: Partial<Extract<CallResult, { ok: false }>> = {}): CallResult => ({
  ok: false,
  kind: 'http',
  status,
  message: `HTTP ${status}`,
  rttMs: 1,
  ...extra,
});

function fakeClient(respond: Responder = ok) {
  const calls: { path: string; records: UsageRecord[]; bytes: number }[] = [];
  const client = {
    calls,
    respond,
    async postJson<T>(path: string, body: unknown): Promise<CallResult<T>> {
      const b = body as { records: UsageRecord[] };
      expect(usageBatchSchema.safeParse(b).success).toBe(true);
      calls.push({ path, records: b.records, bytes: Buffer.byteLength(JSON.stringify(b)) });
      return (await client.respond(b, path)) as CallResult<T>;
    },
  };
  return client;
}

function record(i: number, over: Partial<UsageRecord> = {}): UsageRecord {
  const start = T + Math.floor(i / 10) * 3_600_000;
  return {
    deploymentId: `dep-${i % 10}`,
    serviceId: 's',
    organizationId: 'o',
    periodStart: new Date(start).toISOString(),
    periodEnd: new Date(start + 3_600_000).toISOString(),
    cpuHours: 0.1,
    memoryGbHours: 0.2,
    storageGbHours: 0.3,
    networkGb: 0.4,
    samples: 240,
    complete: true,
    ...over,
  };
}

function outbox(client: ReturnType<typeof fakeClient>, extra: Partial<ConstructorParameters<typeof UsageOutbox>[0]> = {}) {
  return new UsageOutbox({ client, workerId: () => 'w-1', store: new StateStore(dir), logger, random: () => 0.5, ...extra });
}

/** Resolves once `cond` holds; fails after 5 s. */
async function until(cond: () => boolean): Promise<void> {
  for (const end = Date.now() + 5_000; !cond();) {
    if (Date.now() > end) throw new Error('condition not met within 5 s');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function storedOutbox(): Promise<{ closedThrough: number | null; pending: UsageRecord[] }> {
  return JSON.parse(await readFile(join(dir, 'usage-outbox.json'), 'utf8'));
}

/** A sampler driven by the test: the clock and the counters are whatever the test sets. */
function fakeSampler() {
  const s = {
    wallMs: T,
    monoMs: 0,
    containers: [] as MeterReading[],
    fail: false,
    advance(ms: number) {
      s.wallMs += ms;
      s.monoMs += ms;
    },
    async sample() {
      if (s.fail) throw new Error('docker unreachable');
      return { wallMs: s.wallMs, monoMs: s.monoMs, containers: s.containers.map((c) => ({ ...c })) };
    },
  };
  return s satisfies UsageSampler;
}

const burner = (cpuSec: number, over: Partial<MeterReading> = {}): MeterReading => ({
  containerId: 'c1',
  deploymentId: 'd1',
  serviceId: 's1',
  organizationId: 'o1',
  startedAtMs: T - 1_000,
  cpuNs: cpuSec * SEC,
  memoryBytes: 64 * 1024 * 1024,
  networkBytes: cpuSec * 1000,
  ...over,
});

describe('UsageOutbox', () => {
  it('sends batches of at most 200 records and 80 kB, oldest period first, and forgets only what was accepted', async () => {
    const client = fakeClient();
    const box = outbox(client);
    const long = 'x'.repeat(128);
    const records = Array.from({ length: 450 }, (_, i) =>
      record(i, { serviceId: long, organizationId: long, deploymentId: `${long.slice(0, 120)}-${i % 10}` }),
    );
    await box.add(records, null);
    expect(await box.flush()).toBeUndefined();
    expect(client.calls.length).toBeGreaterThanOrEqual(4); // 450 × ~560 bytes: the byte bound binds before the count
    for (const c of client.calls) {
      expect(c.records.length).toBeLessThanOrEqual(200);
      expect(c.bytes).toBeLessThanOrEqual(MAX_USAGE_BATCH_BYTES);
    }
    expect(client.calls.flatMap((c) => c.records.map(usageKey))).toEqual(records.map(usageKey));
    expect(box.depth).toBe(0);
    await box.stop();
    expect((await storedOutbox()).pending).toEqual([]);
  });

  it('keeps everything while the panel lacks the usage API (404 API not found) and asks again every 10 minutes', async () => {
    const client = fakeClient(() => fail(404, { message: 'API not found' }));
    const box = outbox(client);
    await box.add([record(0), record(1)], T + 3_600_000);
    expect(await box.flush()).toBe(10 * 60_000);
    expect(box.depth).toBe(2);
    expect(box.delivery().apiMissing).toBe(true);
    expect((await storedOutbox()).pending).toHaveLength(2);
    expect(logLines.join('')).toContain('no usage API');
    client.respond = ok;
    expect(await box.flush()).toBeUndefined();
    expect(box.depth).toBe(0);
    expect(box.delivery().apiMissing).toBe(false);
  });

  it('a 404 WORKER_NOT_FOUND is an ordinary failure (the heartbeat re-registers): backoff, not the 10-minute probe', async () => {
    const client = fakeClient(() => fail(404, { code: 'WORKER_NOT_FOUND' }));
    const box = outbox(client, { backoff: { baseMs: 1000, capMs: 60_000 } });
    await box.add([record(0)], null);
    const delay = await box.flush();
    expect(delay).toBeLessThanOrEqual(1000);
    expect(box.depth).toBe(1);
  });

  it('honours Retry-After on 429 and 503, and backs off on 5xx and network errors', async () => {
    const client = fakeClient(() => fail(429, { retryAfterMs: 30_000 }));
    const box = outbox(client);
    await box.add([record(0)], null);
    expect(await box.flush()).toBeGreaterThanOrEqual(30_000);
    client.respond = () => fail(503, { retryAfterMs: 120_000 });
    expect(await box.flush()).toBeGreaterThanOrEqual(120_000);
    client.respond = () => ({ ok: false, kind: 'network', message: 'ECONNREFUSED', rttMs: 1 });
    expect(await box.flush()).toBeLessThanOrEqual(60_000);
    expect(box.depth).toBe(1);
    expect(logLines.filter((l) => l.includes('usage delivery failed')).length).toBe(1); // once per outage
    client.respond = ok;
    await box.flush();
    expect(box.depth).toBe(0);
    expect(logLines.join('')).toContain('usage delivery recovered');
  });

  it('records closed during a pending retry wait for it: Retry-After is not cut short', async () => {
    const client = fakeClient(() => fail(429, { retryAfterMs: 30_000 }));
    const box = outbox(client);
    box.start();
    await box.add([record(0)], null);
    await new Promise((r) => setTimeout(r, 100));
    expect(client.calls).toHaveLength(1);
    await box.add([record(10)], null);
    await new Promise((r) => setTimeout(r, 100));
    expect(client.calls).toHaveLength(1);
    expect(box.delivery().nextAttemptInMs).toBeGreaterThan(29_000);
    await box.stop();
  });

  it('retries by itself after the failure delay, then goes idle until new records arrive; stop() ends it', async () => {
    let answers = [fail(503), ok()];
    const client = fakeClient(() => answers.shift() ?? ok());
    const box = outbox(client, { backoff: { baseMs: 50, capMs: 50 } });
    box.start();
    expect(box.delivery().nextAttemptInMs).toBeNull(); // empty: idle, no timer
    await box.add([record(0)], null);
    await until(() => box.depth === 0);
    expect(client.calls).toHaveLength(2);
    expect(box.delivery().nextAttemptInMs).toBeNull();
    answers = [];
    await box.add([record(10)], null);
    await until(() => box.depth === 0);
    expect(client.calls).toHaveLength(3);
    await box.stop();
    await box.add([record(20)], null);
    await new Promise((r) => setTimeout(r, 100));
    expect(client.calls).toHaveLength(3);
    expect(box.delivery().nextAttemptInMs).toBeNull();
  });

  it('spreads the first offer of new records over sendSpreadMs', async () => {
    const client = fakeClient();
    const box = outbox(client, { sendSpreadMs: 400, random: () => 0.5 });
    box.start();
    await box.add([record(0)], null);
    await new Promise((r) => setTimeout(r, 100));
    expect(client.calls).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 250));
    expect(client.calls).toHaveLength(1);
    await box.stop();
  });

  it('a 413 halves the batch until it fits; a record refused on its own (400) is dropped with an error', async () => {
    const client = fakeClient((b) =>
      b.records.length > 2 ? fail(413) : b.records.some((r) => r.deploymentId === 'dep-3') ? fail(400, { message: 'cpuHours: bad' }) : ok(),
    );
    const box = outbox(client);
    await box.add(
      Array.from({ length: 7 }, (_, i) => record(i)),
      null,
    );
    expect(await box.flush()).toBeUndefined();
    expect(box.depth).toBe(0);
    const delivered = client.calls
      .filter((c) => c.records.length <= 2 && !c.records.some((r) => r.deploymentId === 'dep-3'))
      .flatMap((c) => c.records.map((r) => r.deploymentId));
    expect(delivered.sort()).toEqual(['dep-0', 'dep-1', 'dep-2', 'dep-4', 'dep-5', 'dep-6']);
    expect(box.delivery().droppedRecords).toBe(1);
    expect(logLines.join('')).toContain('refused a usage record; dropped');
  });

  it('is bounded: beyond the limit whole oldest periods are dropped, with an error', async () => {
    const client = fakeClient(() => fail(503));
    const box = outbox(client, { maxRecords: 25 });
    await box.add(
      Array.from({ length: 30 }, (_, i) => record(i)),
      null,
    ); // 3 periods of 10
    expect(box.depth).toBe(20);
    expect(box.records()[0]!.periodStart).toBe(new Date(T + 3_600_000).toISOString());
    expect(logLines.join('')).toMatch(/"level":50.*usage outbox full/);
  });

  it('survives a restart: records and closedThrough come back from the state directory', async () => {
    const first = outbox(fakeClient(() => fail(503)));
    await first.add([record(0), record(1)], T + 3_600_000);
    await first.stop();
    const client = fakeClient();
    const second = outbox(client);
    await second.restore();
    expect(second.depth).toBe(2);
    expect(second.closedThrough).toBe(T + 3_600_000);
    await second.flush();
    expect(client.calls[0]!.records.map(usageKey)).toEqual([record(0), record(1)].map(usageKey));
    expect((await stat(join(dir, 'usage-outbox.json'))).mode & 0o777).toBe(0o600);
  });
});

describe('UsageLoop', () => {
  const P = 10; // s

  function loop(sampler: UsageSampler, client: ReturnType<typeof fakeClient>) {
    return new UsageLoop({
      sampler,
      client,
      workerId: () => 'w-1',
      stateDir: dir,
      sampleIntervalSec: 1,
      periodSec: P,
      logger,
      random: () => 0.5,
    });
  }

  it('writes a closed period to the state directory before sending it', async () => {
    const sampler = fakeSampler();
    const seenOnDisk: UsageRecord[][] = [];
    const client = fakeClient(async () => {
      seenOnDisk.push((await storedOutbox()).pending);
      return ok();
    });
    const l = loop(sampler, client);
    await l.restore();
    for (let s = 0; s <= 10; s++) {
      sampler.containers = [burner(s * 0.5)];
      await l.tick();
      sampler.advance(1000);
    }
    expect(l.queueDepth).toBe(1);
    await l.flush();
    expect(client.calls).toHaveLength(1);
    expect(seenOnDisk[0]!.map(usageKey)).toEqual(client.calls[0]!.records.map(usageKey));
    const r = client.calls[0]!.records[0]!;
    expect(r).toMatchObject({
      deploymentId: 'd1',
      periodStart: new Date(T).toISOString(),
      periodEnd: new Date(T + 10_000).toISOString(),
      samples: 10,
      complete: true,
    });
    expect(r.cpuHours * 3600).toBeCloseTo(5, 6);
    expect((await storedOutbox()).pending).toEqual([]);
    const view = l.view();
    expect(view.open[0]).toMatchObject({
      deploymentId: 'd1',
      periodStart: new Date(T + 10_000).toISOString(),
      samples: 1,
      periodOpen: true,
    });
    expect(view.unsent.count).toBe(0);
  });

  it.each([
    ['a short stop (≤ 2 intervals) keeps the period complete', 2_000, true],
    ['a long stop marks the period incomplete; cpu still covers it from the counters', 5_000, false],
  ])('%s', async (_name, downMs, complete) => {
    const sampler = fakeSampler();
    const client = fakeClient();
    const a = loop(sampler, client);
    await a.restore();
    let s = 0;
    for (; s <= 3; s++) {
      sampler.containers = [burner(s * 0.5)];
      await a.tick();
      sampler.advance(1000);
    }
    await a.stop();
    sampler.advance(downMs - 1000);
    sampler.monoMs = 123; // a new process: unrelated monotonic clock
    const b = loop(sampler, client);
    await b.restore();
    expect(b.view().open[0]!.samples).toBe(4);
    while (sampler.wallMs <= T + 10_000) {
      sampler.containers = [burner(((sampler.wallMs - T) / 1000) * 0.5)];
      await b.tick();
      sampler.advance(1000);
    }
    await b.flush();
    const records = client.calls.flatMap((c) => c.records);
    expect(records).toHaveLength(1);
    expect(records[0]!.complete).toBe(complete);
    expect(records[0]!.cpuHours * 3600).toBeCloseTo(5, 6);
    await b.stop();
  });

  it('a sampler that fails for a while is a gap: the periods it overlaps are incomplete, nothing is lost', async () => {
    const sampler = fakeSampler();
    const client = fakeClient();
    const l = loop(sampler, client);
    await l.restore();
    for (let s = 0; s < 25; s++) {
      sampler.fail = s >= 4 && s < 14;
      sampler.containers = [burner(s * 0.25)];
      await l.tick();
      sampler.advance(1000);
    }
    await l.flush();
    const records = client.calls.flatMap((c) => c.records);
    expect(records.map((r) => [r.periodStart, r.complete])).toEqual([
      [new Date(T).toISOString(), false],
      [new Date(T + 10_000).toISOString(), false],
    ]);
    const total = records.reduce((a, r) => a + r.cpuHours * 3600, 0) + l.view().open[0]!.cpuHours * 3600;
    expect(total).toBeCloseTo(24 * 0.25, 6);
    expect(logLines.filter((x) => x.includes('usage sample failed')).length).toBe(1);
  });

  it('writes the meter state at the first sample, then at most once a minute, and at once when a period closes', async () => {
    const sampler = fakeSampler();
    const l = loop(sampler, fakeClient());
    await l.restore();
    const stored = async () =>
      JSON.parse(await readFile(join(dir, 'usage-meter.json'), 'utf8')) as { open: { periodStart: number; samples: number }[] };
    for (let s = 0; s < 5; s++) {
      sampler.containers = [burner(s * 0.5)];
      await l.tick();
      sampler.advance(1000);
    }
    // Five samples taken within a second of real time: the file still holds the first.
    expect((await stored()).open[0]!.samples).toBe(1);
    while (sampler.wallMs <= T + 10_000) {
      sampler.containers = [burner(((sampler.wallMs - T) / 1000) * 0.5)];
      await l.tick();
      sampler.advance(1000);
    }
    // The tick that closed the period wrote the state with the new period open.
    expect((await stored()).open.map((o) => o.periodStart)).toEqual([T + 10_000]);
    await l.stop();
  });

  it('says once (per change) when some counters come through the Engine API instead of the files, and why', async () => {
    const sampler = fakeSampler();
    let via: { cgroup: number; engine: number; note?: string } | undefined = {
      cgroup: 1,
      engine: 1,
      note: 'pid 42 is not visible in /proc',
    };
    const withVia: UsageSampler = { sample: async () => ({ ...(await sampler.sample()), via }) };
    const l = loop(withVia, fakeClient());
    await l.restore();
    sampler.containers = [burner(1)];
    for (let s = 0; s < 3; s++) {
      await l.tick();
      sampler.advance(1000);
    }
    via = { cgroup: 2, engine: 0 };
    await l.tick();
    const said = logLines.filter((x) => x.includes('read through the Engine API'));
    expect(said).toHaveLength(1);
    expect(said[0]).toContain('pid 42 is not visible in /proc');
    await l.stop();
  });

  it('start() samples at once and on the interval; stop() leaves the open period on disk', async () => {
    const sampler = fakeSampler();
    let samples = 0;
    const counting: UsageSampler = {
      sample: async () => {
        samples++;
        sampler.advance(50);
        return sampler.sample();
      },
    };
    const l = new UsageLoop({
      sampler: counting,
      client: fakeClient(),
      workerId: () => 'w-1',
      stateDir: dir,
      sampleIntervalSec: 0.05,
      periodSec: 3600,
      logger,
    });
    sampler.containers = [burner(1)];
    await l.start();
    await new Promise((r) => setTimeout(r, 400));
    await l.stop();
    const n = samples;
    expect(n).toBeGreaterThanOrEqual(3);
    await new Promise((r) => setTimeout(r, 150));
    expect(samples).toBe(n);
    const meter = JSON.parse(await readFile(join(dir, 'usage-meter.json'), 'utf8'));
    expect(meter.open).toHaveLength(1);
    expect(meter.open[0].samples).toBe(n);
  });
});
