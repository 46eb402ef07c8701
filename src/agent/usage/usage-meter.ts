import type { UsageRecord } from '../../protocol/usage.js';
import type { MeterReading, MeterSample } from '../../ports.js';

/**
 * The pure core of usage metering: turns successive readings of cumulative container counters
 * into usage per deployment and period. No I/O and no clock of its own: every time comes in with
 * the sample, so tests drive it with synthetic samples.
 *
 * Rules:
 * - Periods are [k·P, (k+1)·P) in epoch milliseconds, P = the period length: whole UTC hours at
 *   the default 3600 s. A period closes (its records are emitted) on the first sample at or after
 *   its end, and a closed period never changes again: any usage that would fall into one (a late
 *   container, a restart that re-reads older counters) is dropped and counted in `dropped`,
 *   never added twice.
 * - CPU and network come from counter deltas per container. A container seen before continues
 *   from its last counters. A new run (a container id not seen before that started since the
 *   meter began watching, or a known id whose start time changed or whose counters went down,
 *   i.e. restarted in place) counts its whole counter, which is its usage since it started: a
 *   delta is never negative and a run is never counted twice. A container that was already
 *   running when the meter first saw it (and started before the meter's history began) only sets
 *   the baseline.
 * - A delta is spread uniformly over its interval (for a new run, from its start): an interval
 *   that crosses period boundaries is split in proportion to the time on each side.
 * - Memory and storage are time integrals by the trapezoid rule between consecutive readings of
 *   the same container (linear interpolation, also at a period boundary). A new run counts its
 *   first reading as a constant from its start (or the previous sample) to now; a container that
 *   disappeared counts nothing after its last reading. Over a span longer than the gap threshold
 *   nothing is integrated: memory and storage during a gap are not invented.
 * - Time: interval lengths come from the monotonic clock while the process runs (a stepped wall
 *   clock neither stretches nor shrinks usage), placed at the wall-clock time of the sample; the
 *   meter's time never runs backwards. After a restart (no monotonic reference) the wall clock
 *   alone is used.
 * - A sample spacing longer than the gap threshold (agent down, Docker unreachable, process
 *   stalled) marks every period it overlaps incomplete (`complete: false`). Counters of
 *   containers that kept running still cover the gap's CPU and network. The first sample the
 *   meter ever takes marks a period incomplete for a deployment whose containers ran unobserved
 *   in it for longer than the gap threshold.
 */

export interface UsageMeterOptions {
  /** Period length, ms: 3_600_000 by default in the loop. */
  periodMs: number;
  /** A sample spacing above this is a gap in observation. */
  gapMs: number;
  /** One interval spreads usage over at most this many periods (the oldest part is dropped). Default 168. */
  maxSpanPeriods?: number;
  /** Containers not seen for this long are forgotten. Default max(24 h, 2 periods). */
  forgetAfterMs?: number;
}

interface Tracked {
  deploymentId: string;
  serviceId: string;
  organizationId: string;
  startedAtMs: number;
  cpuNs: number;
  networkBytes: number;
  memoryBytes: number;
  storageBytes?: number;
  /** Meter time of the last reading. */
  lastAt: number;
}

export interface Accumulator {
  deploymentId: string;
  serviceId: string;
  organizationId: string;
  periodStart: number;
  periodEnd: number;
  cpuSec: number;
  memoryGiBSec: number;
  storageGiBSec: number;
  networkBytes: number;
  samples: number;
  incomplete: boolean;
}

/** The meter's whole state, JSON-safe, persisted by the loop after every sample. */
export interface MeterState {
  version: 1;
  periodMs: number;
  lastAt: number | null;
  historyStart: number | null;
  closedThrough: number | null;
  containers: Record<string, Tracked>;
  open: Accumulator[];
}

export interface ObserveResult {
  /** Records of the periods this sample closed, oldest period first. */
  closed: UsageRecord[];
  /** True when this sample ended a gap in observation. */
  gap: boolean;
  /** Length of the interval this sample closed, ms (0 for the first sample). */
  elapsedMs: number;
  /** Usage that fell into already-closed periods (or beyond the span limit), not counted. */
  dropped: { cpuSec: number; networkBytes: number };
}

const GIB = 1024 ** 3;
const NS_PER_SEC = 1e9;

/** 12 significant digits: shorter bodies, no float noise, no loss that could matter for billing. */
function round(x: number): number {
  return x > 0 ? Number(x.toPrecision(12)) : 0;
}

export function accumulatorToRecord(a: Accumulator): UsageRecord {
  return {
    deploymentId: a.deploymentId,
    serviceId: a.serviceId,
    organizationId: a.organizationId,
    periodStart: new Date(a.periodStart).toISOString(),
    periodEnd: new Date(a.periodEnd).toISOString(),
    cpuHours: round(a.cpuSec / 3600),
    memoryGbHours: round(a.memoryGiBSec / 3600),
    storageGbHours: round(a.storageGiBSec / 3600),
    networkGb: round(a.networkBytes / GIB),
    samples: a.samples,
    complete: !a.incomplete,
  };
}

export class UsageMeter {
  readonly #periodMs: number;
  readonly #gapMs: number;
  readonly #maxSpan: number;
  readonly #forgetAfterMs: number;
  #lastAt: number | null = null;
  #lastMono: number | undefined;
  #historyStart: number | null = null;
  #closedThrough: number | null = null;
  #containers = new Map<string, Tracked>();
  /** key: deploymentId|periodStart */
  #open = new Map<string, Accumulator>();
  #dropped = { cpuSec: 0, networkBytes: 0 };

  constructor(opts: UsageMeterOptions) {
    if (!(opts.periodMs >= 1000) || !Number.isInteger(opts.periodMs)) throw new RangeError('periodMs must be an integer of at least 1000');
    if (!(opts.gapMs > 0)) throw new RangeError('gapMs must be positive');
    this.#periodMs = opts.periodMs;
    this.#gapMs = opts.gapMs;
    this.#maxSpan = opts.maxSpanPeriods ?? 168;
    this.#forgetAfterMs = opts.forgetAfterMs ?? Math.max(24 * 3_600_000, 2 * opts.periodMs);
  }

  get periodMs(): number {
    return this.#periodMs;
  }

  /** End of the last closed period (epoch ms), or null. */
  get closedThrough(): number | null {
    return this.#closedThrough;
  }

  get lastSampleAt(): number | null {
    return this.#lastAt;
  }

  periodStartOf(t: number): number {
    return Math.floor(t / this.#periodMs) * this.#periodMs;
  }

  /**
   * Loads persisted state. `closedThrough` from the outbox wins when later (the outbox is written
   * before the meter's state, so a crash between the two must not close a period twice).
   * Returns records to queue at once: open periods of a different period length, closed as
   * incomplete, since their boundaries no longer fit.
   */
  restore(state: MeterState, outboxClosedThrough: number | null = null): UsageRecord[] {
    const out: UsageRecord[] = [];
    this.#lastAt = state.lastAt;
    this.#lastMono = undefined;
    this.#historyStart = state.historyStart;
    this.#closedThrough = maxNullable(state.closedThrough, outboxClosedThrough);
    this.#containers = new Map(Object.entries(state.containers ?? {}));
    this.#open.clear();
    const opens = (state.open ?? []).filter((a) => this.#closedThrough === null || a.periodStart >= this.#closedThrough);
    if (state.periodMs !== this.#periodMs) {
      for (const a of opens.sort(byPeriodThenDeployment)) {
        out.push(accumulatorToRecord({ ...a, incomplete: true }));
        this.#closedThrough = maxNullable(this.#closedThrough, a.periodEnd);
      }
      return out;
    }
    for (const a of opens) this.#open.set(keyOf(a.deploymentId, a.periodStart), { ...a });
    return out;
  }

  snapshot(): MeterState {
    return {
      version: 1,
      periodMs: this.#periodMs,
      lastAt: this.#lastAt,
      historyStart: this.#historyStart,
      closedThrough: this.#closedThrough,
      containers: Object.fromEntries(this.#containers),
      open: [...this.#open.values()].map((a) => ({ ...a })),
    };
  }

  /** Open periods as they would be reported now (running totals). */
  openRecords(): (UsageRecord & { periodOpen: true })[] {
    return [...this.#open.values()].sort(byPeriodThenDeployment).map((a) => ({ ...accumulatorToRecord(a), periodOpen: true as const }));
  }

  /** Totals of usage that could not be attributed (fell into closed periods), since this object was made. */
  get dropped(): { cpuSec: number; networkBytes: number } {
    return { ...this.#dropped };
  }

  observe(sample: MeterSample): ObserveResult {
    const dropped = { cpuSec: 0, networkBytes: 0 };
    const t0 = this.#lastAt;
    let t1: number;
    let intervalStart: number;
    if (t0 === null) {
      t1 = sample.wallMs;
      intervalStart = t1;
    } else if (sample.monoMs !== undefined && this.#lastMono !== undefined) {
      const dur = Math.max(0, sample.monoMs - this.#lastMono);
      t1 = Math.max(sample.wallMs, t0 + dur);
      intervalStart = t1 - dur;
    } else {
      t1 = Math.max(sample.wallMs, t0);
      intervalStart = t0;
    }
    // A forward wall-clock step leaves a hole between t0 and intervalStart: nobody used anything there.
    const shift = t0 === null ? 0 : intervalStart - t0;
    const gap = t0 !== null && t1 - intervalStart > this.#gapMs;
    const floor = this.#floor(t1);
    const first = t0 === null && this.#historyStart === null;
    if (first) this.#historyStart = Math.min(t1, sample.listedAtMs ?? t1);

    const present = new Map<string, MeterReading>();
    for (const r of sample.containers) {
      if (!present.has(r.deploymentId)) present.set(r.deploymentId, r);
      const tr = this.#containers.get(r.containerId);
      const ids = { deploymentId: r.deploymentId, serviceId: r.serviceId, organizationId: r.organizationId };
      const continuing = tr !== undefined && tr.startedAtMs === r.startedAtMs && r.cpuNs >= tr.cpuNs && r.networkBytes >= tr.networkBytes;
      const newRun = !continuing && (tr !== undefined || (this.#historyStart !== null && r.startedAtMs >= this.#historyStart && !first));
      if (continuing && this.#addWithinOnePeriod(r, tr, tr.lastAt + shift, t1, floor)) {
        // The common case, done without splitting: see #addWithinOnePeriod.
      } else if (continuing) {
        const from = tr.lastAt + shift;
        this.#spread(ids, from, t1, r.cpuNs - tr.cpuNs, r.networkBytes - tr.networkBytes, floor, dropped);
        // Unread for longer than a gap (its stats failed meanwhile): the same as a gap, for this deployment.
        if (t1 - from > this.#gapMs)
          for (const p of this.#pieces(from, t1)) if (p.start + this.#periodMs > floor) this.#acc(ids, p.start).incomplete = true;
        if (t1 - from <= this.#gapMs) {
          this.#integrate(ids, from, t1, tr.memoryBytes, r.memoryBytes, 'memoryGiBSec', floor);
          const sa = tr.storageBytes ?? r.storageBytes;
          const sb = r.storageBytes ?? tr.storageBytes;
          if (sa !== undefined && sb !== undefined) this.#integrate(ids, from, t1, sa, sb, 'storageGiBSec', floor);
        }
      } else if (newRun) {
        const lowest = tr !== undefined ? tr.lastAt + shift : (this.#historyStart ?? t1);
        const from = Math.min(t1, Math.max(r.startedAtMs, lowest));
        this.#spread(ids, from, t1, r.cpuNs, r.networkBytes, floor, dropped);
        if (t1 - from <= this.#gapMs) {
          this.#integrate(ids, from, t1, r.memoryBytes, r.memoryBytes, 'memoryGiBSec', floor);
          if (r.storageBytes !== undefined) this.#integrate(ids, from, t1, r.storageBytes, r.storageBytes, 'storageGiBSec', floor);
        }
      } else {
        // Baseline only: it ran before the meter watched. Whatever it did in this period unseen makes the period incomplete.
        const unseenFrom = Math.max(r.startedAtMs, this.periodStartOf(t1));
        if (t1 - unseenFrom > this.#gapMs && this.periodStartOf(t1) + this.#periodMs > floor)
          this.#acc(ids, this.periodStartOf(t1)).incomplete = true;
      }
      const kept: Tracked = {
        ...ids,
        startedAtMs: r.startedAtMs,
        cpuNs: r.cpuNs,
        networkBytes: r.networkBytes,
        memoryBytes: r.memoryBytes,
        lastAt: t1,
      };
      const storage = r.storageBytes ?? (continuing ? tr.storageBytes : undefined);
      if (storage !== undefined) kept.storageBytes = storage;
      this.#containers.set(r.containerId, kept);
    }

    const current = this.periodStartOf(t1);
    // (After a period-length change the current period can lie within one already closed: not counted.)
    if (current + this.#periodMs > floor) for (const r of present.values()) this.#acc(r, current).samples++;
    if (gap) {
      for (const a of this.#open.values()) if (a.periodStart < t1 && a.periodEnd > intervalStart) a.incomplete = true;
    }

    const closed: UsageRecord[] = [];
    const closing = [...this.#open.values()].filter((a) => a.periodEnd <= t1).sort(byPeriodThenDeployment);
    for (const a of closing) {
      this.#open.delete(keyOf(a.deploymentId, a.periodStart));
      closed.push(accumulatorToRecord(a));
    }
    this.#closedThrough = maxNullable(this.#closedThrough, current);
    for (const [id, tr] of this.#containers) if (tr.lastAt < t1 - this.#forgetAfterMs) this.#containers.delete(id);
    this.#lastAt = t1;
    this.#lastMono = sample.monoMs;
    this.#dropped.cpuSec += dropped.cpuSec;
    this.#dropped.networkBytes += dropped.networkBytes;
    return { closed, gap, elapsedMs: t0 === null ? 0 : t1 - intervalStart, dropped };
  }

  /**
   * A continuing container whose interval lies inside one open period and is no gap: what
   * #spread and #integrate would add, computed the same way (so to the same bits), without
   * their per-period iteration. It is every reading but those of the sample that crosses a period
   * boundary, and the meter's hottest path. Returns false (nothing added) for any other case.
   */
  #addWithinOnePeriod(r: MeterReading, tr: Tracked, from: number, to: number, floor: number): boolean {
    const start = this.periodStartOf(to);
    if (!(to > from) || from < start || to - from > this.#gapMs || start + this.#periodMs <= floor) return false;
    const acc = this.#acc(r, start);
    const cpuNs = r.cpuNs - tr.cpuNs;
    const netBytes = r.networkBytes - tr.networkBytes;
    // #spread's share of a single piece is exactly 1.
    if (cpuNs > 0 || netBytes > 0) {
      acc.cpuSec += Math.max(0, cpuNs) / NS_PER_SEC;
      acc.networkBytes += Math.max(0, netBytes);
    }
    acc.memoryGiBSec += wholeSpanGiBSec(from, to, tr.memoryBytes, r.memoryBytes);
    const sa = tr.storageBytes ?? r.storageBytes;
    const sb = r.storageBytes ?? tr.storageBytes;
    if (sa !== undefined && sb !== undefined) acc.storageGiBSec += wholeSpanGiBSec(from, to, sa, sb);
    return true;
  }

  /** Periods ending at or before this time can take no more usage. */
  #floor(t1: number): number {
    const spanFloor = this.periodStartOf(t1) - (this.#maxSpan - 1) * this.#periodMs;
    return Math.max(this.#closedThrough ?? Number.NEGATIVE_INFINITY, spanFloor);
  }

  #acc(ids: Pick<MeterReading, 'deploymentId' | 'serviceId' | 'organizationId'>, periodStart: number): Accumulator {
    const key = keyOf(ids.deploymentId, periodStart);
    let a = this.#open.get(key);
    if (!a) {
      a = {
        deploymentId: ids.deploymentId,
        serviceId: ids.serviceId,
        organizationId: ids.organizationId,
        periodStart,
        periodEnd: periodStart + this.#periodMs,
        cpuSec: 0,
        memoryGiBSec: 0,
        storageGiBSec: 0,
        networkBytes: 0,
        samples: 0,
        incomplete: false,
      };
      this.#open.set(key, a);
    }
    return a;
  }

  /** Each period overlapping [from, to) with the overlap; a zero-length span is the instant `to`. */
  *#pieces(from: number, to: number): Generator<{ start: number; a: number; b: number }> {
    if (to <= from) {
      yield { start: this.periodStartOf(to), a: to, b: to };
      return;
    }
    for (let start = this.periodStartOf(from); start < to; start += this.#periodMs) {
      yield { start, a: Math.max(start, from), b: Math.min(start + this.#periodMs, to) };
    }
  }

  #spread(
    ids: Pick<MeterReading, 'deploymentId' | 'serviceId' | 'organizationId'>,
    from: number,
    to: number,
    cpuNs: number,
    netBytes: number,
    floor: number,
    dropped: ObserveResult['dropped'],
  ): void {
    if (cpuNs <= 0 && netBytes <= 0) return;
    const span = to - from;
    for (const p of this.#pieces(from, to)) {
      const share = span > 0 ? (p.b - p.a) / span : 1;
      const cpuSec = (Math.max(0, cpuNs) / NS_PER_SEC) * share;
      const net = Math.max(0, netBytes) * share;
      if (p.start + this.#periodMs <= floor) {
        dropped.cpuSec += cpuSec;
        dropped.networkBytes += net;
        continue;
      }
      const acc = this.#acc(ids, p.start);
      acc.cpuSec += cpuSec;
      acc.networkBytes += net;
    }
  }

  /** ∫ of the line from (from, va) to (to, vb), bytes·ms → GiB·s, split at period boundaries. */
  #integrate(
    ids: Pick<MeterReading, 'deploymentId' | 'serviceId' | 'organizationId'>,
    from: number,
    to: number,
    va: number,
    vb: number,
    field: 'memoryGiBSec' | 'storageGiBSec',
    floor: number,
  ): void {
    if (to <= from || (va <= 0 && vb <= 0)) return;
    const at = lineThrough(from, to, va, vb);
    for (const p of this.#pieces(from, to)) {
      if (p.start + this.#periodMs <= floor || p.b <= p.a) continue;
      this.#acc(ids, p.start)[field] += trapezoidGiBSec(at(p.a), at(p.b), p.a, p.b);
    }
  }
}

/** The line from (from, va) to (to, vb). */
function lineThrough(from: number, to: number, va: number, vb: number): (t: number) => number {
  return (t) => va + ((vb - va) * (t - from)) / (to - from);
}

/** Area under a straight piece from (a, ya) to (b, yb), bytes·ms → GiB·s. */
function trapezoidGiBSec(ya: number, yb: number, a: number, b: number): number {
  return (((ya + yb) / 2) * (b - a)) / GIB / 1000;
}

/** #integrate over [from, to] when it is one piece: 0 when both ends are ≤ 0, as there. */
function wholeSpanGiBSec(from: number, to: number, va: number, vb: number): number {
  if (va <= 0 && vb <= 0) return 0;
  const at = lineThrough(from, to, va, vb);
  return trapezoidGiBSec(at(from), at(to), from, to);
}

function keyOf(deploymentId: string, periodStart: number): string {
  return `${deploymentId}|${periodStart}`;
}

function byPeriodThenDeployment(
  a: Pick<Accumulator, 'periodStart' | 'deploymentId'> | Pick<UsageRecord, 'periodStart' | 'deploymentId'>,
  b: typeof a,
): number {
  const pa = typeof a.periodStart === 'number' ? a.periodStart : Date.parse(a.periodStart);
  const pb = typeof b.periodStart === 'number' ? b.periodStart : Date.parse(b.periodStart);
  return pa - pb || (a.deploymentId < b.deploymentId ? -1 : a.deploymentId > b.deploymentId ? 1 : 0);
}

function maxNullable(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}
