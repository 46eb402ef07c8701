import type { UsageRecord } from '../../protocol/usage.js';
import type { BackoffPolicy, Random } from '../../controlplane/backoff.js';
import type { ControlPlaneClient } from '../../controlplane/control-plane-client.js';
import type { Logger } from '../logger.js';
import { StateStore } from '../state/state-store.js';
import { UsageMeter, type MeterState } from './usage-meter.js';
import type { UsageSampler } from '../../ports.js';
import { meterStateSchema } from '../state/state-schemas.js';
import { UsageOutbox, type UsageDeliveryView } from './usage-outbox.js';
import { DEFAULT_USAGE_PERIOD_SEC, DEFAULT_USAGE_SAMPLE_INTERVAL_SEC } from '../config-schema.js';
import { TimerLoop } from '../../util/timer-loop.js';

/**
 * A sample waits up to one tick of the daemon's stats collector (1 s), so the spacing that counts
 * as a gap is two intervals plus that.
 */
const SAMPLE_LATENCY_ALLOWANCE_MS = 1_000;
const METER_FILE = 'usage-meter.json';
/** Closed periods are first offered within this long (uniformly): on the hour, a fleet spreads over half a minute. */
const MAX_SEND_SPREAD_MS = 30_000;
const MAX_LISTED_RECORDS = 1_000;
/**
 * The meter's state is written at most this often (and at every period close and at stop): each
 * write is a JSON document of every container plus two fsyncs, and at the default 15 s interval
 * writing every sample was a sizeable share of the agent's idle CPU. What a crash can cost is the
 * memory and storage integral of at most this long (cumulative CPU and network counters catch up
 * from the saved ones), and the gap marks the period incomplete either way.
 */
const METER_SAVE_EVERY_MS = 60_000;

export interface UsageLoopOptions {
  sampler: UsageSampler;
  client: Pick<ControlPlaneClient, 'postJson'>;
  workerId(): string;
  stateDir: string;
  /** The agent's one store of the state directory (shared, so its health covers every file); built on stateDir when absent. */
  store?: StateStore;
  /** Seconds between samples; default DEFAULT_USAGE_SAMPLE_INTERVAL_SEC. */
  sampleIntervalSec?: number;
  /** Period length in seconds (periods are aligned to UTC multiples of it); default 3600. */
  periodSec?: number;
  backoff?: BackoffPolicy;
  random?: Random;
  logger: Logger;
  /** Bound on unsent records (oldest periods dropped beyond it); default 20 000. */
  maxUnsentRecords?: number;
  /** Retry delay while the panel lacks the usage API; default 10 min. */
  extensionProbeMs?: number;
}

/** The body of GET /v1/usage. */
export interface UsageView {
  periodSec: number;
  sampleIntervalSec: number;
  lastSampleAt: string | null;
  lastSampleError: string | null;
  containers: number;
  /** Running totals of the open period, per deployment (`complete` is what the record would say if the period closed now). */
  open: (UsageRecord & { periodOpen: true })[];
  unsent: { count: number; records: UsageRecord[]; truncated: boolean };
  delivery: UsageDeliveryView;
  /** Usage that fell into periods already closed and was not counted, since the agent started. */
  notAttributed: { cpuHours: number; networkGb: number };
}

/**
 * Usage metering: samples this worker's containers every interval, integrates them into the open
 * period per deployment (UsageMeter), and on each period's close queues its records in a durable
 * outbox that delivers them to `POST /api/workers/{id}/usage`.
 *
 * Durability: the outbox file is written before a closed period is sent, and the meter's state
 * (open period totals, last counters per container) after a period closes, at stop, and otherwise
 * at most once a minute, outbox first; a restart resumes the open period. A restart (or any
 * stall) longer than two sample intervals marks the periods it overlaps `complete: false`;
 * counters of containers that kept running cover its CPU and network, memory and storage during
 * it are not invented.
 */
export class UsageLoop {
  readonly #opts: UsageLoopOptions;
  readonly #store: StateStore;
  readonly #meter: UsageMeter;
  readonly #outbox: UsageOutbox;
  readonly #intervalMs: number;
  readonly #loop: TimerLoop;
  #ticking: Promise<void> | undefined;
  #restored = false;
  #lastError: string | null = null;
  #failing = false;
  #containers = 0;
  /** When the meter's state was last written (monotonic ms); unsaved samples since then. */
  #savedAt = Number.NEGATIVE_INFINITY;
  #unsaved = false;
  /** Why some counters come through the Engine API rather than the files, as last logged. */
  #engineNote: string | undefined;

  constructor(opts: UsageLoopOptions) {
    this.#opts = opts;
    const periodSec = opts.periodSec ?? DEFAULT_USAGE_PERIOD_SEC;
    this.#intervalMs = (opts.sampleIntervalSec ?? DEFAULT_USAGE_SAMPLE_INTERVAL_SEC) * 1000;
    if (!(this.#intervalMs > 0)) throw new RangeError('sampleIntervalSec must be positive');
    if (!Number.isInteger(periodSec) || periodSec < 1) throw new RangeError('periodSec must be a positive integer');
    this.#store = opts.store ?? new StateStore(opts.stateDir, { logger: opts.logger });
    this.#meter = new UsageMeter({ periodMs: periodSec * 1000, gapMs: 2 * this.#intervalMs + SAMPLE_LATENCY_ALLOWANCE_MS });
    this.#outbox = new UsageOutbox({
      client: opts.client,
      workerId: opts.workerId,
      store: this.#store,
      logger: opts.logger,
      backoff: opts.backoff,
      random: opts.random,
      maxRecords: opts.maxUnsentRecords,
      extensionProbeMs: opts.extensionProbeMs,
      sendSpreadMs: Math.min(MAX_SEND_SPREAD_MS, (periodSec * 1000) / 10),
    });
    // The step never throws (a failed sample is logged and counted as such); the error path is a guard.
    this.#loop = new TimerLoop(
      () => this.#sampleOnSchedule(),
      () => this.#intervalMs,
    );
  }

  /** Unsent records (for metrics). */
  get queueDepth(): number {
    return this.#outbox.depth;
  }

  /** Loads the meter and the outbox from the state directory (once; start() does it too). */
  async restore(): Promise<void> {
    if (this.#restored) return;
    const { logger } = this.#opts;
    await this.#store.init();
    await this.#outbox.restore();
    const state = await this.#store.read(METER_FILE, meterStateSchema);
    const fallback: MeterState = {
      version: 1,
      periodMs: this.#meter.periodMs,
      lastAt: null,
      historyStart: null,
      closedThrough: null,
      containers: {},
      open: [],
    };
    const late = this.#meter.restore(state ?? fallback, this.#outbox.closedThrough);
    if (late.length > 0) {
      logger.warn({ records: late.length }, 'usage period length changed: the open periods were closed as incomplete');
      await this.#outbox.add(late, this.#meter.closedThrough);
    }
    if (state?.lastAt)
      logger.info(
        { since: new Date(state.lastAt).toISOString(), open: state.open?.length ?? 0, unsent: this.#outbox.depth },
        'usage metering resumed from the state directory',
      );
    this.#restored = true;
  }

  /** Restores, then samples at once and every interval, and delivers closed periods. */
  async start(): Promise<void> {
    await this.restore();
    this.#outbox.start();
    this.#loop.start(0);
  }

  /** Stops sampling and sending; the open period stays in the state directory for the next start. */
  async stop(): Promise<void> {
    await this.#loop.stop();
    await this.#ticking?.catch(() => undefined);
    this.#opts.sampler.close?.();
    if (this.#unsaved) await this.#save();
    await this.#outbox.stop();
  }

  /** One sample now (also what the timer runs); call restore() or start() first. */
  async tick(): Promise<void> {
    if (!this.#restored) throw new Error('UsageLoop.tick() before restore()');
    if (this.#ticking) return this.#ticking;
    this.#ticking = this.#tick().finally(() => {
      this.#ticking = undefined;
    });
    return this.#ticking;
  }

  /** Sends what is unsent now; resolves with the retry delay after a failure. */
  flush(): Promise<number | undefined> {
    return this.#outbox.flush();
  }

  view(): UsageView {
    const unsent = this.#outbox.records();
    const dropped = this.#meter.dropped;
    const last = this.#meter.lastSampleAt;
    return {
      periodSec: this.#meter.periodMs / 1000,
      sampleIntervalSec: this.#intervalMs / 1000,
      lastSampleAt: last === null ? null : new Date(last).toISOString(),
      lastSampleError: this.#lastError,
      containers: this.#containers,
      open: this.#meter.openRecords(),
      unsent: { count: unsent.length, records: unsent.slice(0, MAX_LISTED_RECORDS), truncated: unsent.length > MAX_LISTED_RECORDS },
      delivery: this.#outbox.delivery(),
      notAttributed: { cpuHours: dropped.cpuSec / 3600, networkGb: dropped.networkBytes / 1024 ** 3 },
    };
  }

  /** One sample; the next is due one interval after this one started, so a slow sample does not drift the schedule. */
  async #sampleOnSchedule(): Promise<number> {
    const started = performance.now();
    await this.tick().catch((err: Error) => this.#opts.logger.error({ err: err.message }, 'usage sample failed unexpectedly'));
    return Math.max(0, this.#intervalMs - (performance.now() - started));
  }

  async #tick(): Promise<void> {
    const { sampler, logger } = this.#opts;
    let sample: Awaited<ReturnType<UsageSampler['sample']>>;
    try {
      sample = await sampler.sample();
    } catch (err) {
      this.#lastError = (err as Error).message;
      if (!this.#failing)
        logger.warn(
          { err: this.#lastError },
          'usage sample failed; the meter waits for the next one (a long outage marks the period incomplete)',
        );
      this.#failing = true;
      return;
    }
    if (this.#failing) logger.info('usage sampling recovered');
    this.#failing = false;
    this.#lastError =
      sample.failed && sample.failed.count > 0 ? `${sample.failed.count} container(s) not read: ${sample.failed.error ?? ''}` : null;
    if (this.#lastError) logger.debug({ err: this.#lastError }, 'usage sample incomplete');
    this.#containers = sample.containers.length;
    const note = sample.via && sample.via.engine > 0 ? sample.via.note : undefined;
    if (note !== this.#engineNote) {
      // Said once per change: the Engine path works, it only costs more (a stats call per container per sample).
      if (note !== undefined)
        logger.info(
          { viaEngine: sample.via!.engine, viaFiles: sample.via!.cgroup, why: note },
          'usage counters of some containers are read through the Engine API',
        );
      this.#engineNote = note;
    }
    const result = this.#meter.observe(sample);
    if (result.gap)
      logger.info(
        { gapSec: Math.round(result.elapsedMs / 1000) },
        'usage sampling resumed after a gap; the periods it overlaps are marked incomplete',
      );
    if (result.dropped.cpuSec > 0 || result.dropped.networkBytes > 0)
      logger.debug({ ...result.dropped }, 'usage that fell into closed periods was not counted');
    // Closed records reach the disk before anything is sent, and before the meter forgets them.
    if (result.closed.length > 0) {
      await this.#outbox.add(result.closed, this.#meter.closedThrough);
      logger.debug({ records: result.closed.length, periodStart: result.closed[0]!.periodStart }, 'usage period closed');
    }
    this.#unsaved = true;
    // A close is saved at once: the meter must not come back from a restart with periods the outbox already has.
    if (result.closed.length > 0 || result.gap || performance.now() - this.#savedAt >= METER_SAVE_EVERY_MS) await this.#save();
  }

  async #save(): Promise<void> {
    this.#savedAt = performance.now();
    // A failed write is retried by the store and shows in its health; the next save tries again too.
    this.#unsaved = !(await this.#store.write(METER_FILE, this.#meter.snapshot()));
  }
}
