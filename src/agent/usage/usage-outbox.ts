import { usageKey, usageRecordSchema, type UsageRecord } from '../../protocol/usage.js';
import { classifyResponse } from '../../controlplane/classify.js';
import { DEFAULT_BACKOFF, delayAfterFailure, type BackoffPolicy, type Random } from '../../controlplane/backoff.js';
import type { ControlPlaneClient } from '../../controlplane/control-plane-client.js';
import { EXTENSION_PROBE_MS } from '../deployments/desired-state-poller.js';
import type { Logger } from '../logger.js';
import { TimerLoop } from '../../util/timer-loop.js';
import type { StateStore } from '../state/state-store.js';
import type { z } from 'zod';
import { storedUsageOutboxSchema } from '../state/state-schemas.js';

/** SkyPanelV2-style panels refuse bodies over ~100 kB (413): batches stay well under. */
export const MAX_USAGE_BATCH_BYTES = 80_000;
export const MAX_USAGE_BATCH_RECORDS = 200;
/** ~330 bytes a record: 20 000 records is a 6.6 MB file, 8 days of outage at 100 deployments and 1 h periods. */
export const DEFAULT_MAX_UNSENT_RECORDS = 20_000;

const STATE_FILE = 'usage-outbox.json';
const ENVELOPE_BYTES = Buffer.byteLength('{"records":[]}');

type StoredUsageOutbox = Omit<z.infer<typeof storedUsageOutboxSchema>, 'pending'> & { pending: UsageRecord[] };

export interface UsageOutboxDeps {
  client: Pick<ControlPlaneClient, 'postJson'>;
  workerId(): string;
  store: StateStore;
  logger: Logger;
  backoff?: BackoffPolicy;
  random?: Random;
  /** Bound on unsent records; beyond it the oldest periods are dropped (last resort, logged as an error). */
  maxRecords?: number;
  maxBatchRecords?: number;
  maxBatchBytes?: number;
  /** Retry delay while the panel lacks the usage API (404 "API not found"); default 10 min. */
  extensionProbeMs?: number;
  /**
   * New records are first offered after a uniform random delay up to this (default 0), so a fleet
   * whose periods all close on the hour does not post in the same second.
   */
  sendSpreadMs?: number;
}

export interface UsageDeliveryView {
  lastAttemptAt: string | null;
  lastOutcome: string | null;
  /** The panel answered 404 "API not found": records are kept and offered again every 10 minutes. */
  apiMissing: boolean;
  consecutiveFailures: number;
  nextAttemptInMs: number | null;
  droppedRecords: number;
}

/**
 * Durable outbox of closed usage records, the same pattern as ReportOutbox: records are written
 * to the state directory before the first attempt to send them and removed only once the control
 * plane accepted them (2xx); everything is resent after any failure, which is safe because
 * (deploymentId, periodStart) identifies a record and the panel counts repeats once. Batches are
 * bounded by count and serialised size; a 400/413 halves the batch until the offending record is
 * isolated and dropped.
 */
export class UsageOutbox {
  readonly #deps: UsageOutboxDeps;
  readonly #pending = new Map<string, UsageRecord>();
  #closedThrough: number | null = null;
  #failures = 0;
  #batchLimit: number;
  /** Sends while records are pending; idle when the outbox is empty, waiting out a failure's delay otherwise. */
  readonly #loop: TimerLoop;
  /** A flush() in progress (it drains outside the loop, which is stopped meanwhile). */
  #flushing: Promise<unknown> | undefined;
  /** Between start() and stop(): the loop runs again after a flush. */
  #running = false;
  /** stop() was called: a drain in progress ends after its current batch. */
  #stopping = false;
  #persisting: Promise<void> = Promise.resolve();
  #apiMissing = false;
  #lastAttemptAt: number | null = null;
  #lastOutcome: string | null = null;
  #droppedRecords = 0;

  constructor(deps: UsageOutboxDeps) {
    this.#deps = deps;
    this.#batchLimit = deps.maxBatchRecords ?? MAX_USAGE_BATCH_RECORDS;
    this.#loop = new TimerLoop(
      () => this.#send(),
      (err) => {
        deps.logger.error({ err: (err as Error).message }, 'usage outbox failed unexpectedly');
        return 5_000;
      },
    );
  }

  get depth(): number {
    return this.#pending.size;
  }

  get closedThrough(): number | null {
    return this.#closedThrough;
  }

  /** Unsent records, oldest period first. */
  records(): UsageRecord[] {
    return [...this.#pending.values()];
  }

  delivery(): UsageDeliveryView {
    return {
      lastAttemptAt: this.#lastAttemptAt === null ? null : new Date(this.#lastAttemptAt).toISOString(),
      lastOutcome: this.#lastOutcome,
      apiMissing: this.#apiMissing,
      consecutiveFailures: this.#failures,
      nextAttemptInMs: this.#loop.nextRunInMs(),
      droppedRecords: this.#droppedRecords,
    };
  }

  async restore(): Promise<void> {
    const stored = await this.#deps.store.read(STATE_FILE, storedUsageOutboxSchema);
    if (!stored) return;
    this.#closedThrough = stored.closedThrough;
    let unusable = 0;
    for (const raw of stored.pending) {
      const r = usageRecordSchema.safeParse(raw);
      if (r.success) this.#pending.set(usageKey(r.data), r.data);
      else unusable++;
    }
    if (unusable > 0) this.#deps.logger.error({ unusable }, 'usage outbox records of the wrong shape were dropped at load');
  }

  /**
   * Queues the records of closed periods and writes the outbox (awaited) before anything is sent:
   * once this resolves, the records survive a crash, unless the disk refused the write (then they
   * are sent from memory and the store retries the write). `closedThrough` is the meter's, kept so
   * a restart never closes the same period twice.
   */
  async add(records: readonly UsageRecord[], closedThrough: number | null): Promise<void> {
    const { logger } = this.#deps;
    for (const r of records) {
      const parsed = usageRecordSchema.safeParse(r);
      if (!parsed.success) {
        logger.error(
          {
            deploymentId: r.deploymentId,
            periodStart: r.periodStart,
            issue: parsed.error.issues[0]?.message,
            path: parsed.error.issues[0]?.path,
          },
          'usage record does not fit the protocol; dropped',
        );
        this.#droppedRecords++;
        continue;
      }
      const key = usageKey(r);
      // A period is closed once; a second version of it would be counted as a duplicate by the panel.
      if (this.#pending.has(key)) continue;
      this.#pending.set(key, r);
    }
    if (closedThrough !== null) this.#closedThrough = Math.max(this.#closedThrough ?? closedThrough, closedThrough);
    this.#trim();
    await this.#persist();
    // A pending retry keeps its time (backoff, Retry-After, the 10-minute probe) and a drain in
    // flight sends them too: the new records go with either.
    if (this.#pending.size > 0) this.#loop.wake(Math.floor((this.#deps.random ?? Math.random)() * (this.#deps.sendSpreadMs ?? 0)));
  }

  start(): void {
    this.#running = true;
    this.#stopping = false;
    this.#loop.start(this.#pending.size > 0 ? 0 : null);
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#stopping = true;
    await this.#loop.stop();
    await this.#flushing?.catch(() => undefined);
    await this.#persisting;
  }

  /** One drain now (tests, diagnostics); resolves with the retry delay after a failure, if any. */
  async flush(): Promise<number | undefined> {
    await this.#flushing?.catch(() => undefined);
    // The loop's pending wait is cancelled and its run in flight awaited: one drain at a time.
    await this.#loop.stop();
    const drained = this.#drain();
    this.#flushing = drained;
    let next: number | undefined;
    try {
      next = await drained;
      return next;
    } finally {
      this.#flushing = undefined;
      // Not after a stop() that came meanwhile.
      if (this.#running) this.#loop.start(this.#pending.size > 0 ? (next ?? 5_000) : null);
    }
  }

  /** The loop's step: resolves with the delay before the next drain, or undefined (idle) once nothing is left. */
  async #send(): Promise<number | undefined> {
    const next = await this.#drain();
    if (next !== undefined) return next;
    return this.#pending.size > 0 && !this.#stopping ? 0 : undefined;
  }

  #batch(): UsageRecord[] {
    const max = this.#deps.maxBatchBytes ?? MAX_USAGE_BATCH_BYTES;
    const batch: UsageRecord[] = [];
    let bytes = ENVELOPE_BYTES;
    for (const r of this.#pending.values()) {
      const size = Buffer.byteLength(JSON.stringify(r)) + (batch.length > 0 ? 1 : 0);
      if (batch.length >= this.#batchLimit || (batch.length > 0 && bytes + size > max)) break;
      batch.push(r);
      bytes += size;
    }
    return batch;
  }

  async #drain(): Promise<number | undefined> {
    const { client, logger } = this.#deps;
    while (this.#pending.size > 0) {
      if (this.#stopping) return undefined;
      const batch = this.#batch();
      this.#lastAttemptAt = Date.now();
      const res = await client.postJson(`/api/workers/${encodeURIComponent(this.#deps.workerId())}/usage`, { records: batch });
      if (res.ok) {
        if (this.#failures > 0 || this.#apiMissing)
          logger.info({ failures: this.#failures, unsent: this.#pending.size - batch.length }, 'usage delivery recovered');
        this.#failures = 0;
        this.#apiMissing = false;
        this.#lastOutcome = `accepted ${batch.length}`;
        for (const r of batch) {
          const key = usageKey(r);
          if (this.#pending.get(key) === r) this.#pending.delete(key);
        }
        logger.debug({ records: batch.length, unsent: this.#pending.size }, 'usage delivered');
        await this.#persist();
        continue;
      }
      this.#lastOutcome = res.kind === 'http' ? `HTTP ${res.status}${res.code ? ` ${res.code}` : ''}` : res.kind;
      const answer = classifyResponse(res);
      if (answer === 'extension-missing') {
        // A stock panel without the usage API: keep everything (bounded) and ask again later.
        if (!this.#apiMissing)
          logger.info(
            { unsent: this.#pending.size },
            'control plane has no usage API (404 API not found); usage kept and offered again every 10 minutes',
          );
        this.#apiMissing = true;
        return this.#deps.extensionProbeMs ?? EXTENSION_PROBE_MS;
      }
      if (answer === 'refused') {
        if (batch.length > 1) {
          this.#batchLimit = Math.ceil(batch.length / 2);
          logger.warn(
            { status: res.status, records: batch.length, message: res.message },
            'control plane refused a usage batch; retrying in smaller batches',
          );
          continue;
        }
        const [r] = batch;
        logger.error(
          { status: res.status, deploymentId: r!.deploymentId, periodStart: r!.periodStart, message: res.message },
          'control plane refused a usage record; dropped',
        );
        this.#pending.delete(usageKey(r!));
        this.#droppedRecords++;
        await this.#persist();
        continue;
      }
      const next = delayAfterFailure(res, this.#failures++, this.#deps.backoff ?? DEFAULT_BACKOFF, this.#deps.random);
      if (this.#failures === 1)
        logger.warn(
          { kind: res.kind, status: res.status, unsent: this.#pending.size, retryInMs: next },
          `usage delivery failed: ${res.message}; kept in the outbox`,
        );
      return next;
    }
    this.#batchLimit = this.#deps.maxBatchRecords ?? MAX_USAGE_BATCH_RECORDS;
    return undefined;
  }

  #trim(): void {
    const max = this.#deps.maxRecords ?? DEFAULT_MAX_UNSENT_RECORDS;
    if (this.#pending.size <= max) return;
    // Last resort: whole periods, oldest first, so what remains is still every deployment's usage per period.
    const byPeriod = [...this.#pending.entries()].sort(([, a], [, b]) => Date.parse(a.periodStart) - Date.parse(b.periodStart));
    let dropped = 0;
    let i = 0;
    const periods = new Set<string>();
    while (this.#pending.size > max && i < byPeriod.length) {
      const period = byPeriod[i]![1].periodStart;
      for (; i < byPeriod.length && byPeriod[i]![1].periodStart === period; i++) {
        this.#pending.delete(byPeriod[i]![0]);
        dropped++;
      }
      periods.add(period);
    }
    this.#droppedRecords += dropped;
    this.#deps.logger.error({ dropped, periods: [...periods], max }, 'usage outbox full: the oldest periods were dropped unsent');
  }

  /** The store serialises writes (an older snapshot never lands after a newer one) and retries failed ones. */
  #persist(): Promise<void> {
    const snapshot: StoredUsageOutbox = { version: 1, closedThrough: this.#closedThrough, pending: [...this.#pending.values()] };
    this.#persisting = this.#deps.store.write(STATE_FILE, snapshot).then(
      () => undefined,
      (err: Error) => this.#deps.logger.error({ err: err.message }, 'cannot serialise the usage outbox for the state directory'),
    );
    return this.#persisting;
  }
}
