import { statusReportSchema, type StatusReportContent } from '../../protocol/status-report.js';
import { classifyResponse } from '../../controlplane/classify.js';
import { TimerLoop } from '../../util/timer-loop.js';
import { DEFAULT_BACKOFF, delayAfterFailure, type BackoffPolicy, type Random } from '../../controlplane/backoff.js';
import type { ControlPlaneClient } from '../../controlplane/control-plane-client.js';
import type { Logger } from '../logger.js';
import type { StateStore } from '../state/state-store.js';
import { EXTENSION_PROBE_MS } from './desired-state-poller.js';
import { storedOutboxSchema, type StoredOutbox } from '../state/state-schemas.js';

/** The body of POST …/deployments/{deploymentId}/status minus seq, bootId and reportedAt. */
export type ReportContent = StatusReportContent;

/**
 * SkyPanelV2-style panels refuse bodies over 100 kB, and 64 KiB of logs can serialise far larger
 * (escaped control characters), so the whole JSON body is bounded, not just the log bytes.
 */
export const MAX_REPORT_BODY_BYTES = 90_000;

/**
 * Make a report the control plane will accept: fields that fail the protocol schema are dropped
 * (a bad publicUrl template must not lose the status itself), and logs are cut from the oldest
 * line until the body fits.
 */
export function fitReport(content: ReportContent): { content: ReportContent; dropped: string[] } {
  const dropped: string[] = [];
  let c: ReportContent = { ...content };
  const envelope = { seq: 1, bootId: 'x'.repeat(36), reportedAt: new Date(0).toISOString() };
  for (let i = 0; i < 10; i++) {
    const r = statusReportSchema.safeParse({ ...c, ...envelope });
    if (r.success) break;
    const field = String(r.error.issues[0]?.path[0] ?? '');
    if (!field || field === 'status' || !(field in c)) break;
    dropped.push(field);
    const { [field as keyof ReportContent]: _gone, ...rest } = c;
    c = rest as ReportContent;
  }
  while (c.deploymentLogs !== undefined && Buffer.byteLength(JSON.stringify({ ...c, ...envelope })) > MAX_REPORT_BODY_BYTES) {
    const logs = c.deploymentLogs;
    const cut = logs.indexOf('\n', Math.floor(logs.length / 4));
    c = cut < 0 ? (({ deploymentLogs: _l, ...rest }) => rest)(c) : { ...c, deploymentLogs: logs.slice(cut + 1) };
  }
  return { content: c, dropped };
}

type Entry = StoredOutbox['pending'][number];

const STATE_FILE = 'outbox.json';

export interface ReportOutboxDeps {
  client: ControlPlaneClient;
  workerId(): string;
  bootId: string;
  store: StateStore;
  logger: Logger;
  backoff?: BackoffPolicy;
  random?: Random;
  /** Bound on remembered deployments; the oldest entries go first. */
  maxEntries?: number;
}

/**
 * A durable outbox of status reports. Only the newest report per deployment is kept (coalescing),
 * so a long outage cannot grow it past one entry per deployment; entries are sent in the order
 * their deployments last changed, retried with backoff without limit, and removed only once the
 * control plane accepted them. Written to the state directory on every change.
 */
export class ReportOutbox {
  readonly #deps: ReportOutboxDeps;
  readonly #pending = new Map<string, Entry>();
  #lastSent = new Map<string, ReportContent>();
  #seq = 0;
  #failures = 0;
  readonly #loop: TimerLoop;
  #stopped = true;
  #persisting: Promise<void> = Promise.resolve();

  constructor(deps: ReportOutboxDeps) {
    this.#deps = deps;
    this.#loop = new TimerLoop(
      () => this.#drain(),
      (err) => {
        deps.logger.error({ err: (err as Error).message }, 'report outbox failed unexpectedly');
        return delayAfterFailure({ kind: 'invalid-response' }, this.#failures++, deps.backoff ?? DEFAULT_BACKOFF, deps.random);
      },
    );
  }

  get depth(): number {
    return this.#pending.size;
  }

  /** The newest report queued or accepted for a deployment. */
  lastReported(deploymentId: string): ReportContent | undefined {
    return this.#pending.get(deploymentId)?.content ?? this.#lastSent.get(deploymentId);
  }

  async restore(): Promise<void> {
    const stored = await this.#deps.store.read(STATE_FILE, storedOutboxSchema);
    if (!stored) return;
    for (const e of stored.pending) this.#pending.set(e.deploymentId, e);
    this.#lastSent = new Map(Object.entries(stored.lastSent));
    // (deploymentId, bootId, seq) identifies a report at the control plane: never hand out a seq twice.
    if (stored.lastSeq?.bootId === this.#deps.bootId) this.#seq = Math.max(this.#seq, stored.lastSeq.seq);
  }

  /** Queue a report if it differs from what was last sent (or queued) for that deployment. */
  offer(deploymentId: string, raw: ReportContent): void {
    const { content, dropped } = fitReport(raw);
    if (dropped.length > 0) this.#deps.logger.warn({ deploymentId, dropped }, 'report fields dropped: they do not fit the protocol');
    const queued = this.#pending.get(deploymentId);
    const reference = queued?.content ?? this.#lastSent.get(deploymentId);
    if (reference && sameReport(reference, content)) return;
    this.#pending.delete(deploymentId);
    this.#pending.set(deploymentId, {
      deploymentId,
      content,
      bootId: this.#deps.bootId,
      seq: ++this.#seq,
      reportedAt: new Date().toISOString(),
    });
    this.#trim();
    this.#persist();
    this.#loop.kick();
  }

  start(): void {
    this.#stopped = false;
    this.#loop.start(0);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop.stop();
    await this.#persisting;
  }

  /** Send in order until empty or a failure; resolves with a retry delay after a failure. */
  async #drain(): Promise<number | undefined> {
    const { client, logger } = this.#deps;
    for (const entry of this.#pending.values()) {
      if (this.#stopped) return undefined;
      const body = { ...entry.content, seq: entry.seq, bootId: entry.bootId, reportedAt: entry.reportedAt };
      const res = await client.postJson(
        `/api/workers/${encodeURIComponent(this.#deps.workerId())}/deployments/${encodeURIComponent(entry.deploymentId)}/status`,
        body,
      );
      if (res.ok) {
        this.#failures = 0;
        this.#done(entry, true);
        logger.debug({ deploymentId: entry.deploymentId, status: entry.content.status, seq: entry.seq }, 'status reported');
        continue;
      }
      const answer = classifyResponse(res);
      if (answer === 'extension-missing') {
        // A stock panel has no status API: keep the newest report per deployment and ask again later.
        return EXTENSION_PROBE_MS;
      }
      if (answer === 'refused') {
        if (res.status === 404)
          logger.warn({ deploymentId: entry.deploymentId }, 'control plane does not know this deployment; report dropped');
        else
          logger.error(
            { deploymentId: entry.deploymentId, message: res.message },
            'control plane rejected a status report as invalid; dropped',
          );
        this.#done(entry, false);
        continue;
      }
      // worker-gone, retry-after, failed: kept and retried with backoff (the heartbeat registers a lost worker again).
      const next = delayAfterFailure(res, this.#failures++, this.#deps.backoff ?? DEFAULT_BACKOFF, this.#deps.random);
      if (this.#failures === 1)
        logger.warn(
          { kind: res.kind, status: res.status, queued: this.#pending.size, retryInMs: next },
          `status report failed: ${res.message}; kept in the outbox`,
        );
      return next;
    }
    return undefined;
  }

  #done(entry: Entry, sent: boolean): void {
    // A newer report for the same deployment may have replaced this one while it was in flight.
    if (this.#pending.get(entry.deploymentId) === entry) this.#pending.delete(entry.deploymentId);
    if (sent) {
      this.#lastSent.delete(entry.deploymentId);
      this.#lastSent.set(entry.deploymentId, entry.content);
    }
    this.#trim();
    this.#persist();
  }

  #trim(): void {
    const max = this.#deps.maxEntries ?? 5_000;
    while (this.#pending.size > max) this.#pending.delete(this.#pending.keys().next().value!);
    while (this.#lastSent.size > max) this.#lastSent.delete(this.#lastSent.keys().next().value!);
  }

  /** The store serialises writes (an older snapshot never lands after a newer one) and retries failed ones. */
  #persist(): void {
    const snapshot: StoredOutbox = {
      pending: [...this.#pending.values()],
      lastSent: Object.fromEntries(this.#lastSent),
      lastSeq: { bootId: this.#deps.bootId, seq: this.#seq },
    };
    this.#persisting = this.#deps.store.write(STATE_FILE, snapshot).then(
      () => undefined,
      (err: Error) => this.#deps.logger.error({ err: err.message }, 'cannot serialise the report outbox for the state directory'),
    );
  }
}

function sameReport(a: ReportContent, b: ReportContent): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
