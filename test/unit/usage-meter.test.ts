import { describe, expect, it } from 'vitest';
import { UsageMeter } from '../../src/agent/usage/usage-meter.js';
import type { MeterReading, MeterSample } from '../../src/ports.js';
import { usageRecordSchema, type UsageRecord } from '../../src/protocol/usage.js';

const P = 10_000; // 10 s periods
const GAP = 3_000; // 1 s samples: 2 intervals + 1 s
const T = Date.UTC(2026, 0, 1, 0, 0, 0); // a period boundary
const GIB = 1024 ** 3;
const SEC = 1e9; // ns

function meter(extra: Partial<ConstructorParameters<typeof UsageMeter>[0]> = {}): UsageMeter {
  return new UsageMeter({ periodMs: P, gapMs: GAP, ...extra });
}

function c(over: Partial<MeterReading> & { containerId?: string }): MeterReading {
  return {
    containerId: 'c1',
    deploymentId: 'd1',
    serviceId: 's1',
    organizationId: 'o1',
    startedAtMs: T - 3_600_000,
    cpuNs: 0,
    memoryBytes: 0,
    networkBytes: 0,
    ...over,
  };
}

/** Sample at wall time t (ms after T), with a monotonic clock that agrees unless given. */
const at = (t: number, containers: MeterReading[], mono: number | undefined = t): MeterSample => ({
  wallMs: T + t,
  ...(mono === undefined ? {} : { monoMs: mono }),
  containers,
});

/** Feeds samples and collects every closed record. */
function run(m: UsageMeter, samples: MeterSample[]): UsageRecord[] {
  const out: UsageRecord[] = [];
  for (const s of samples) out.push(...m.observe(s).closed);
  return out;
}

const sum = (
  records: UsageRecord[],
  f: keyof Pick<UsageRecord, 'cpuHours' | 'memoryGbHours' | 'storageGbHours' | 'networkGb'>,
  dep?: string,
) => records.filter((r) => dep === undefined || r.deploymentId === dep).reduce((a, r) => a + r[f], 0);

describe('UsageMeter', () => {
  it('integrates cpu and network deltas, memory and storage as time integrals, and closes a period at its end', () => {
    const m = meter();
    const samples: MeterSample[] = [];
    // baseline at T+0 (running before the meter: large counters are not usage of this period)
    for (let s = 0; s <= 10; s++) {
      samples.push(
        at(s * 1000, [
          c({ cpuNs: 1000 * SEC + s * 0.5 * SEC, networkBytes: 1e6 + s * 1000, memoryBytes: 512 * 1024 * 1024, storageBytes: 1 * GIB }),
        ]),
      );
    }
    const closed = run(m, samples);
    expect(closed).toHaveLength(1);
    const r = closed[0]!;
    expect(usageRecordSchema.safeParse(r).success).toBe(true);
    expect(r).toMatchObject({
      deploymentId: 'd1',
      serviceId: 's1',
      organizationId: 'o1',
      periodStart: new Date(T).toISOString(),
      periodEnd: new Date(T + P).toISOString(),
    });
    expect(r.cpuHours * 3600).toBeCloseTo(5, 6); // 0.5 core for 10 s
    expect(r.networkGb * GIB).toBeCloseTo(10_000, 0);
    expect(r.memoryGbHours * 3600).toBeCloseTo(0.5 * 10, 6); // 0.5 GiB for 10 s
    expect(r.storageGbHours * 3600).toBeCloseTo(1 * 10, 6);
    // samples T+0..T+9 belong to the first period, T+10 opens the next
    expect(r.samples).toBe(10);
    // the baseline container started 1 h before: the 0 s it ran unobserved in this period is within the gap bound
    expect(r.complete).toBe(true);
    expect(m.openRecords().map((o) => o.periodStart)).toEqual([new Date(T + P).toISOString()]);
  });

  it('integrates memory and storage that change at every sample by the trapezoid rule, inside a period and across its end (#7 fast path)', () => {
    // Readings at 0.5 s steps with irregular values: most intervals lie inside one period (the fast
    // path), one crosses each boundary (the general path). Reference: the trapezoid sum, the part of
    // the crossing interval on each side interpolated linearly.
    const m = meter();
    const mem = (i: number) => ((i * 7919) % 13) * 64 * 1024 * 1024 + (i % 2 ? 0 : 5 * 1024 * 1024);
    const sto = (i: number) => (i < 5 ? undefined : ((i * 104729) % 11) * GIB);
    const cpu = (i: number) => 1e4 * SEC + i * i * 0.01 * SEC;
    const samples: MeterSample[] = [];
    for (let i = 0; i <= 45; i++) {
      const st = sto(i);
      samples.push(
        at(i * 500 + 250, [
          c({ cpuNs: cpu(i), memoryBytes: mem(i), networkBytes: 10 * i * i, ...(st === undefined ? {} : { storageBytes: st }) }),
        ]),
      );
    }
    const closed = run(m, samples);
    expect(closed.map((r) => r.periodStart)).toEqual([new Date(T).toISOString(), new Date(T + P).toISOString()]);
    const expected = [0, 0].map(() => ({ mem: 0, sto: 0, cpu: 0, net: 0 }));
    const addPiece = (p: number, a: number, b: number, va: number, vb: number, key: 'mem' | 'sto') => {
      if (p < 2) expected[p]![key] += ((va + vb) / 2) * ((b - a) / 1000);
    };
    const addDelta = (p: number, cpuSec: number, net: number) => {
      if (p >= 2) return;
      expected[p]!.cpu += cpuSec;
      expected[p]!.net += net;
    };
    for (let i = 0; i < 45; i++) {
      const t0 = i * 500 + 250;
      const t1 = t0 + 500;
      const p0 = Math.floor(t0 / P);
      const p1 = Math.floor(t1 / P);
      const split = (va: number, vb: number, key: 'mem' | 'sto') => {
        if (p0 === p1) return addPiece(p0, t0, t1, va, vb, key);
        const edge = p1 * P;
        const ve = va + ((vb - va) * (edge - t0)) / (t1 - t0);
        addPiece(p0, t0, edge, va, ve, key);
        addPiece(p1, edge, t1, ve, vb, key);
      };
      split(mem(i), mem(i + 1), 'mem');
      const sa = sto(i) ?? sto(i + 1);
      const sb = sto(i + 1) ?? sto(i);
      if (sa !== undefined && sb !== undefined) split(sa, sb, 'sto');
      const cpuSec = (cpu(i + 1) - cpu(i)) / SEC;
      const net = 10 * (i + 1) ** 2 - 10 * i * i;
      const share0 = p0 === p1 ? 1 : (p1 * P - t0) / (t1 - t0);
      addDelta(p0, cpuSec * share0, net * share0);
      if (p0 !== p1) addDelta(p1, cpuSec * (1 - share0), net * (1 - share0));
    }
    for (const [k, r] of closed.entries()) {
      const e = expected[k]!;
      expect(e.mem).toBeGreaterThan(0);
      expect(e.sto).toBeGreaterThan(0);
      expect((r.memoryGbHours * 3600 * GIB) / e.mem).toBeCloseTo(1, 9);
      expect((r.storageGbHours * 3600 * GIB) / e.sto).toBeCloseTo(1, 9);
      expect(r.cpuHours * 3600).toBeCloseTo(e.cpu, 6);
      expect((r.networkGb * GIB) / e.net).toBeCloseTo(1, 9);
    }
  });

  it('splits an interval that crosses a period boundary in proportion, memory by linear interpolation', () => {
    const m = meter({ gapMs: 20_000 });
    m.observe(at(6_000, [c({ cpuNs: 0, memoryBytes: 0 })]));
    const { closed } = m.observe(at(14_000, [c({ cpuNs: 8 * SEC, networkBytes: 800, memoryBytes: 8 * GIB })]));
    expect(closed).toHaveLength(1);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(4, 9); // [6,10] of [6,14]
    expect(closed[0]!.networkGb * GIB).toBeCloseTo(400, 6);
    // memory ramps 0 → 8 GiB over 8 s: 1 GiB/s; ∫ over [6,10] = 4·4/2 = 8 GiB·s, over [10,14] = (4+8)/2·4 = 24
    expect(closed[0]!.memoryGbHours * 3600).toBeCloseTo(8, 9);
    const open = m.openRecords()[0]!;
    expect(open.cpuHours * 3600).toBeCloseTo(4, 9);
    expect(open.memoryGbHours * 3600).toBeCloseTo(24, 9);
  });

  it('a long interval spreads over every period it spans; the periods wholly inside are created', () => {
    const m = meter({ gapMs: 60_000 });
    m.observe(at(5_000, [c({ cpuNs: 0 })]));
    const { closed } = m.observe(at(35_000, [c({ cpuNs: 30 * SEC })]));
    expect(closed.map((r) => [r.periodStart, Math.round(r.cpuHours * 3600 * 1e6) / 1e6])).toEqual([
      [new Date(T).toISOString(), 5],
      [new Date(T + P).toISOString(), 10],
      [new Date(T + 2 * P).toISOString(), 10],
    ]);
    expect(m.openRecords()[0]!.cpuHours * 3600).toBeCloseTo(5, 9);
  });

  it('a replacement container (new id) counts its counter since it started, never the old one again or negative', () => {
    const m = meter();
    const old = (t: number, cpu: number) => c({ containerId: 'old', cpuNs: cpu * SEC, networkBytes: cpu * 1000, memoryBytes: GIB });
    run(m, [at(0, [old(0, 100)]), at(1000, [old(1000, 101)]), at(2000, [old(2000, 102)])]);
    // the old one died after T+2; the new one started at T+2.5 and used 0.5 s by T+3
    const fresh = (cpu: number) =>
      c({ containerId: 'new', startedAtMs: T + 2_500, cpuNs: cpu * SEC, networkBytes: cpu * 1000, memoryBytes: GIB });
    const closed = run(m, [at(3000, [fresh(0.5)]), at(4000, [fresh(1.5)]), at(10_000, [fresh(1.5)])]);
    const r = closed[0]!;
    expect(r.cpuHours * 3600).toBeCloseTo(1 + 1 + 0.5 + 1, 9);
    expect(r.networkGb * GIB).toBeCloseTo(3500, 3);
    // memory: old [0,2] = 2 GiB·s, nothing after its last reading; new from its start 2.5 → 4
    // at 1 GiB, then 4 → 10 (6 s gap > 3 s: not integrated)
    expect(r.memoryGbHours * 3600).toBeCloseTo(2 + 1.5, 9);
    expect(r.complete).toBe(false); // the new container was not read for 6 s
  });

  it('a restart in place (same id, new start time) counts the new run from zero', () => {
    const m = meter();
    run(m, [at(0, [c({ cpuNs: 50 * SEC })]), at(1000, [c({ cpuNs: 51 * SEC })])]);
    // restarted at T+1.6; it already used more than before? No: 0.2 s. Counters dropped.
    run(m, [at(2000, [c({ startedAtMs: T + 1_600, cpuNs: 0.2 * SEC })])]);
    // restarted again at T+2.2 and, within the interval, passed its previous counter: the start time tells
    run(m, [at(3000, [c({ startedAtMs: T + 2_200, cpuNs: 0.7 * SEC })])]);
    const closed = run(m, [at(10_000, [c({ startedAtMs: T + 2_200, cpuNs: 0.7 * SEC })])]);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(1 + 0.2 + 0.7, 9);
  });

  it('a counter that goes down without a new start time is a reset too: never negative', () => {
    const m = meter();
    run(m, [
      at(0, [c({ cpuNs: 10 * SEC, networkBytes: 5000 })]),
      at(1000, [c({ cpuNs: 3 * SEC, networkBytes: 100 })]),
      at(2000, [c({ cpuNs: 4 * SEC, networkBytes: 200 })]),
    ]);
    const r = run(m, [at(10_000, [c({ cpuNs: 4 * SEC, networkBytes: 200 })])])[0]!;
    expect(r.cpuHours * 3600).toBeCloseTo(3 + 1, 9);
    expect(r.networkGb * GIB).toBeCloseTo(200, 6);
  });

  it('sums the containers (replicas) of one deployment and keeps deployments apart', () => {
    const m = meter();
    const a = (cpu: number) => c({ containerId: 'a', cpuNs: cpu * SEC, memoryBytes: GIB });
    const b = (cpu: number) => c({ containerId: 'b', cpuNs: cpu * SEC, memoryBytes: 2 * GIB });
    const x = (cpu: number) => c({ containerId: 'x', deploymentId: 'd2', serviceId: 's2', cpuNs: cpu * SEC, memoryBytes: GIB });
    const closed = run(m, [at(0, [a(0), b(0), x(0)]), at(5_000, [a(1), b(2), x(4)]), at(10_000, [a(2), b(4), x(8)])]);
    expect(closed.map((r) => r.deploymentId)).toEqual(['d1', 'd2']);
    expect(sum(closed, 'cpuHours', 'd1') * 3600).toBeCloseTo(6, 9);
    expect(sum(closed, 'memoryGbHours', 'd1') * 3600).toBe(0); // 5 s spacing > 3 s gap: no memory invented
    expect(sum(closed, 'cpuHours', 'd2') * 3600).toBeCloseTo(8, 9);
    expect(closed.every((r) => r.samples === 2 && !r.complete)).toBe(true);
  });

  it('the first sample ever is a baseline; a deployment that ran unobserved in the period is incomplete', () => {
    const m = meter();
    const closed = run(m, [
      at(6_000, [
        c({ containerId: 'early', cpuNs: 99 * SEC }), // running since an hour: 6 s of this period unseen
        c({ containerId: 'late', deploymentId: 'd2', startedAtMs: T + 5_500, cpuNs: 0.4 * SEC }), // 0.5 s unseen: within the bound
      ]),
      at(7_000, [
        c({ containerId: 'early', cpuNs: 100 * SEC }),
        c({ containerId: 'late', deploymentId: 'd2', startedAtMs: T + 5_500, cpuNs: 0.9 * SEC }),
      ]),
      at(10_000, [
        c({ containerId: 'early', cpuNs: 100 * SEC }),
        c({ containerId: 'late', deploymentId: 'd2', startedAtMs: T + 5_500, cpuNs: 0.9 * SEC }),
      ]),
    ]);
    expect(closed.map((r) => [r.deploymentId, r.complete, Math.round(r.cpuHours * 3600 * 1e6) / 1e6])).toEqual([
      ['d1', false, 1],
      ['d2', true, 0.5],
    ]);
  });

  it('on the very first sample, a container that started after the list was taken is new, not a baseline', () => {
    const m = meter();
    m.observe({ ...at(1_000, []), listedAtMs: T });
    const n = (cpu: number) => c({ containerId: 'n', startedAtMs: T + 500, cpuNs: cpu * SEC, networkBytes: cpu * 1e6 });
    const closed = run(m, [at(2_000, [n(1)]), at(10_000, [n(1)])]);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(1, 9);
    expect(closed[0]!.networkGb * GIB).toBeCloseTo(1e6, 3);
  });

  it('a container that appears later counts everything since its start, memory from its start', () => {
    const m = meter();
    run(m, [at(0, []), at(1000, [])]);
    const n = (cpu: number) => c({ containerId: 'n', startedAtMs: T + 1_400, cpuNs: cpu * SEC, memoryBytes: GIB, storageBytes: GIB });
    const closed = run(m, [at(2000, [n(0.6)]), at(3000, [n(1.6)]), at(10_000, [])]);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(1.6, 9);
    // 0.6 s (start → first reading) + 1 s; it then disappeared: nothing after its last reading
    expect(closed[0]!.memoryGbHours * 3600).toBeCloseTo(1.6, 9);
    expect(closed[0]!.storageGbHours * 3600).toBeCloseTo(1.6, 9);
  });

  it('resumes from its persisted state across a short stop: complete, nothing lost or doubled', () => {
    const m1 = meter();
    run(m1, [
      at(0, [c({ cpuNs: 0, memoryBytes: GIB })]),
      at(1000, [c({ cpuNs: 1 * SEC, memoryBytes: GIB })]),
      at(2000, [c({ cpuNs: 2 * SEC, memoryBytes: GIB })]),
    ]);
    const state = JSON.parse(JSON.stringify(m1.snapshot()));
    const m2 = meter();
    expect(m2.restore(state)).toEqual([]);
    // stopped for 2.5 s (< 3 s): no gap; the new process's monotonic clock is unrelated to the old one
    const closed = run(m2, [
      at(4_500, [c({ cpuNs: 4.5 * SEC, memoryBytes: GIB })], 17),
      at(7_000, [c({ cpuNs: 7 * SEC, memoryBytes: GIB })], 2_517),
      at(10_000, [c({ cpuNs: 10 * SEC, memoryBytes: GIB })], 5_517),
    ]);
    expect(closed).toHaveLength(1);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(10, 9);
    expect(closed[0]!.memoryGbHours * 3600).toBeCloseTo(10, 9);
    expect(closed[0]!.samples).toBe(5);
    expect(closed[0]!.complete).toBe(true);
  });

  it('after a long gap: cpu and network from the counters cover it, memory is not invented, every overlapped period is incomplete', () => {
    const m1 = meter();
    run(m1, [
      at(0, [c({ cpuNs: 0, memoryBytes: GIB })]),
      at(1000, [c({ cpuNs: 0.5 * SEC, memoryBytes: GIB })]),
      at(2000, [c({ cpuNs: 1 * SEC, memoryBytes: GIB })]),
    ]);
    const m2 = meter();
    m2.restore(JSON.parse(JSON.stringify(m1.snapshot())));
    // down from T+2 to T+26: 24 s at 0.5 core = 12 s of CPU across [2,10) [10,20) [20,26)
    const r = run(m2, [
      at(26_000, [c({ cpuNs: 13 * SEC, memoryBytes: GIB })]),
      at(27_000, [c({ cpuNs: 13.5 * SEC, memoryBytes: GIB })]),
      at(30_000, [c({ cpuNs: 15 * SEC, memoryBytes: GIB })]),
    ]);
    expect(
      r.map((x) => [
        x.periodStart,
        x.complete,
        x.samples,
        Math.round(x.cpuHours * 3600 * 1e6) / 1e6,
        Math.round(x.memoryGbHours * 3600 * 1e6) / 1e6,
      ]),
    ).toEqual([
      [new Date(T).toISOString(), false, 3, 1 + 4, 2],
      [new Date(T + P).toISOString(), false, 0, 5, 0],
      [new Date(T + 2 * P).toISOString(), false, 2, 3 + 0.5 + 1.5, 1 + 3],
    ]);
  });

  it('a container that started during the gap counts from its start, spread over the gap after it', () => {
    const m1 = meter();
    run(m1, [at(0, []), at(1000, [])]);
    const m2 = meter();
    m2.restore(m1.snapshot());
    const n = (cpu: number) => c({ containerId: 'n', startedAtMs: T + 8_000, cpuNs: cpu * SEC, memoryBytes: GIB });
    const r = run(m2, [at(12_000, [n(4)]), at(20_000, [n(4)])]);
    expect(r.map((x) => Math.round(x.cpuHours * 3600 * 1e6) / 1e6)).toEqual([2, 2]);
    expect(r.every((x) => !x.complete)).toBe(true);
  });

  it('a period closed (and queued) is never reopened, even when the meter state predates the close', () => {
    const m1 = meter();
    run(m1, [at(0, [c({ cpuNs: 0 })]), at(9_000, [c({ cpuNs: 9 * SEC })])]);
    const stale = JSON.parse(JSON.stringify(m1.snapshot()));
    const closed = run(m1, [at(10_000, [c({ cpuNs: 10 * SEC })])]);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(10, 9);
    // crash after the outbox write, before the meter's: the stale state still has period T open
    const m2 = meter();
    m2.restore(stale, m1.closedThrough);
    expect(m2.openRecords()).toEqual([]);
    const again = run(m2, [at(11_000, [c({ cpuNs: 11 * SEC })]), at(20_000, [c({ cpuNs: 20 * SEC })])]);
    expect(again.map((r) => r.periodStart)).toEqual([new Date(T + P).toISOString()]);
    // [9,10] is already in the closed record: dropped, not counted twice; [10,11] and on are new
    expect(again[0]!.cpuHours * 3600).toBeCloseTo(10, 9);
    expect(m2.dropped.cpuSec).toBeCloseTo(1, 9);
  });

  it('uses the monotonic clock for lengths: a wall clock stepped forward leaves a hole, not usage', () => {
    const m = meter();
    run(m, [at(0, [c({ cpuNs: 0, memoryBytes: GIB })], 0), at(1000, [c({ cpuNs: 1 * SEC, memoryBytes: GIB })], 1000)]);
    // wall jumps +60 s while one second passes
    const after: MeterSample[] = [];
    for (let s = 2; s <= 10; s++) after.push(at(60_000 + s * 1000, [c({ cpuNs: Math.min(s, 3) * SEC, memoryBytes: GIB })], s * 1000));
    const closed = run(m, after);
    const first = closed.find((r) => r.periodStart === new Date(T).toISOString())!;
    expect(first.cpuHours * 3600).toBeCloseTo(1, 9);
    expect(first.memoryGbHours * 3600).toBeCloseTo(1, 9);
    expect(first.complete).toBe(true); // one-second spacing all along: not a gap
    const later = closed.find((r) => r.periodStart === new Date(T + 6 * P).toISOString())!;
    expect(later.cpuHours * 3600).toBeCloseTo(2, 9); // [61,62] and [62,63]
    expect(later.memoryGbHours * 3600).toBeCloseTo(9, 9); // [61, 70]
    expect(later.complete).toBe(true);
    expect(closed.filter((r) => r.periodStart !== first.periodStart && r.periodStart !== later.periodStart)).toEqual([]);
  });

  it('never runs backwards: a wall clock stepped back keeps counting forward from the last sample', () => {
    const m = meter();
    run(m, [at(8_000, [c({ cpuNs: 0 })], 0), at(9_000, [c({ cpuNs: 1 * SEC })], 1000), at(10_000, [c({ cpuNs: 2 * SEC })], 2000)]);
    expect(m.closedThrough).toBe(T + P);
    // wall steps back 5 s: the meter's time is 11 s (mono), not 6 s, so the closed period stays closed
    const r = m.observe(at(6_000, [c({ cpuNs: 3 * SEC })], 3000));
    expect(r.closed).toEqual([]);
    expect(r.dropped.cpuSec).toBe(0);
    expect(m.lastSampleAt).toBe(T + 11_000);
    expect(m.openRecords()[0]!.cpuHours * 3600).toBeCloseTo(1, 9);
  });

  it('a restart whose wall clock is behind the persisted time places the delta at that time, not in the past', () => {
    const m1 = meter();
    run(m1, [at(0, [c({ cpuNs: 0 })]), at(12_000, [c({ cpuNs: 12 * SEC })])]);
    const m2 = meter();
    m2.restore(m1.snapshot());
    const r = m2.observe(at(11_000, [c({ cpuNs: 13 * SEC })], 5));
    expect(r.dropped.cpuSec).toBe(0);
    expect(m2.openRecords()[0]!.cpuHours * 3600).toBeCloseTo(2 + 1, 9);
  });

  it('a changed period length closes the restored open periods as incomplete and never overlaps them', () => {
    const m1 = meter();
    run(m1, [at(0, [c({ cpuNs: 0 })]), at(4_000, [c({ cpuNs: 4 * SEC })])]);
    const m2 = new UsageMeter({ periodMs: 5_000, gapMs: GAP });
    const late = m2.restore(m1.snapshot());
    expect(late).toHaveLength(1);
    expect(late[0]).toMatchObject({ periodStart: new Date(T).toISOString(), periodEnd: new Date(T + P).toISOString(), complete: false });
    expect(late[0]!.cpuHours * 3600).toBeCloseTo(4, 9);
    expect(m2.closedThrough).toBe(T + P);
    const closed = run(m2, [at(5_000, [c({ cpuNs: 5 * SEC })]), at(15_000, [c({ cpuNs: 15 * SEC })])]);
    expect(closed.map((r) => r.periodStart)).toEqual([new Date(T + P).toISOString()]);
    expect(closed[0]!.cpuHours * 3600).toBeCloseTo(5, 9);
  });

  it('bounds the span of one interval and forgets containers unseen for long', () => {
    const m = meter({ maxSpanPeriods: 3, forgetAfterMs: 60_000, gapMs: 1e9 });
    run(m, [at(0, [c({ cpuNs: 0 })])]);
    const { closed, dropped } = m.observe(at(100_000, [c({ cpuNs: 100 * SEC })]));
    // only [80, 100) of 100 s fits in 3 periods (2 closed, the open one is empty so far); T holds the first sample
    expect(closed.map((r) => r.periodStart)).toEqual([T, T + 8 * P, T + 9 * P].map((t) => new Date(t).toISOString()));
    expect(sum(closed, 'cpuHours') * 3600).toBeCloseTo(20, 9);
    expect(dropped.cpuSec).toBeCloseTo(80, 9);
    m.observe(at(200_000, []));
    expect(Object.keys(m.snapshot().containers)).toEqual([]);
  });

  it('rejects nonsense options', () => {
    expect(() => new UsageMeter({ periodMs: 10, gapMs: 1 })).toThrow(/periodMs/);
    expect(() => new UsageMeter({ periodMs: 10_000, gapMs: 0 })).toThrow(/gapMs/);
  });
});
