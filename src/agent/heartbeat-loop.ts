import { randomUUID } from 'node:crypto';
import { classifyResponse } from '../controlplane/classify.js';
import type { Logger } from './logger.js';
import type { HeartbeatRequest } from '../protocol/worker.js';
import type { CallResult } from '../controlplane/control-plane-client.js';
import { TimerLoop } from '../util/timer-loop.js';
import { DEFAULT_BACKOFF, delayAfterFailure, jitteredInterval, type BackoffPolicy, type Random } from '../controlplane/backoff.js';

export type HeartbeatPayload = Omit<HeartbeatRequest, 'bootId' | 'seq' | 'sentAt'>;

export type HeartbeatOutcome =
  | 'accepted'
  | 'rejected'
  | 'unauthorized'
  | 'not-found'
  | 'rate-limited'
  | 'unavailable'
  | 'timeout'
  | 'network'
  | 'invalid-response'
  | 'collect-failed';

export interface HeartbeatRecord {
  at: number;
  outcome: HeartbeatOutcome;
  status?: number;
  rttMs?: number;
  message?: string;
  nextInMs: number;
  /** The panel asked for this wait (429/503 Retry-After, capped); the next beat waits it out. */
  serverWaitMs?: number;
}

export interface HeartbeatLoopDeps {
  send(workerId: string, body: HeartbeatRequest): Promise<CallResult>;
  collect(): Promise<HeartbeatPayload>;
  workerId(): string;
  /** Called on 404: the worker row is gone. Resolves true once registered again. */
  reregister(): Promise<boolean>;
  logger: Logger;
  intervalMs: number;
  backoff?: BackoffPolicy;
  random?: Random;
  now?: () => number;
  onBeat?(record: HeartbeatRecord): void;
}

/**
 * Sends one heartbeat per interval. Every failure is retried with jittered backoff and never
 * stops the loop, so the agent recovers by itself after an outage of any length.
 */
export class HeartbeatLoop {
  readonly bootId = randomUUID();
  readonly #deps: HeartbeatLoopDeps;
  readonly #loop: TimerLoop;
  #seq = 0;
  #failures = 0;
  #lastFailure: HeartbeatOutcome | undefined;
  #downSince: number | undefined;
  #last: HeartbeatRecord | undefined;

  constructor(deps: HeartbeatLoopDeps) {
    this.#deps = deps;
    // #beat never throws; the error path is only a guard.
    this.#loop = new TimerLoop(
      () => this.#beat(),
      () => deps.intervalMs,
    );
  }

  get last(): HeartbeatRecord | undefined {
    return this.#last;
  }

  start(): void {
    this.#loop.start(0);
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }

  /** One heartbeat; resolves with the delay before the next. */
  async #beat(): Promise<number> {
    const now = this.#deps.now ?? Date.now;
    let record: HeartbeatRecord;
    try {
      record = await this.#attempt(now);
    } catch (err) {
      // Defensive: the loop must survive anything, including a bug in a collector.
      record = this.#failed(now(), 'collect-failed', { message: (err as Error).message });
    }
    this.#last = record;
    this.#deps.onBeat?.(record);
    return record.nextInMs;
  }

  async #attempt(now: () => number): Promise<HeartbeatRecord> {
    const { logger } = this.#deps;
    const payload = await this.#deps.collect();
    const body: HeartbeatRequest = { ...payload, bootId: this.bootId, seq: ++this.#seq, sentAt: new Date(now()).toISOString() };
    const res = await this.#deps.send(this.#deps.workerId(), body);
    const at = now();
    if (res.ok) return this.#succeeded(at, res.status, res.rttMs);
    const detail = { status: res.status, rttMs: res.rttMs, message: res.message };
    if (res.kind === 'http') {
      const status = res.status ?? 0;
      if (classifyResponse(res, { extension: false }) === 'worker-gone') {
        // A 404 right after a 404 means registering again did not help (a panel that accepts the
        // register and still answers 404): from then on each round waits out the backoff, so the
        // pair of calls cannot loop at network speed.
        const again = this.#lastFailure === 'not-found';
        if (!again) logger.warn({ status }, 'control plane no longer knows this worker; registering again');
        const ok = await this.#deps.reregister().catch(() => false);
        if (ok && !again) {
          // Registered again: beat right away. It still counts as a failure, so a second 404 backs off.
          this.#failures++;
          this.#downSince ??= at;
          this.#lastFailure = 'not-found';
          return { at, outcome: 'not-found', ...detail, nextInMs: 0 };
        }
        return this.#failed(at, 'not-found', {
          ...detail,
          message: ok ? 'heartbeat 404 again right after registering again' : detail.message,
        });
      }
      if (status === 401 || status === 403) return this.#failed(at, 'unauthorized', detail);
      if (status === 429) return this.#failed(at, 'rate-limited', detail, res.retryAfterMs);
      if (status >= 500) return this.#failed(at, 'unavailable', detail, res.retryAfterMs);
      return this.#failed(at, 'rejected', detail);
    }
    return this.#failed(at, res.kind, detail);
  }

  #succeeded(at: number, status: number, rttMs: number): HeartbeatRecord {
    const { logger } = this.#deps;
    if (this.#failures > 0) {
      const downMs = this.#downSince === undefined ? 0 : at - this.#downSince;
      logger.info({ failedAttempts: this.#failures, downForMs: downMs }, 'heartbeat accepted again after failures');
    } else if (this.#seq === 1) {
      logger.info({ rttMs }, 'first heartbeat accepted');
    } else {
      logger.debug({ rttMs, seq: this.#seq }, 'heartbeat accepted');
    }
    this.#failures = 0;
    this.#lastFailure = undefined;
    this.#downSince = undefined;
    return { at, outcome: 'accepted', status, rttMs, nextInMs: jitteredInterval(this.#deps.intervalMs, this.#deps.random) };
  }

  #failed(
    at: number,
    outcome: HeartbeatOutcome,
    detail: { status?: number; rttMs?: number; message?: string },
    retryAfterMs?: number,
  ): HeartbeatRecord {
    const { random, backoff = DEFAULT_BACKOFF } = this.#deps;
    const attempt = this.#failures++;
    this.#downSince ??= at;
    const kind =
      outcome === 'timeout' || outcome === 'network' || outcome === 'invalid-response' || outcome === 'collect-failed' ? outcome : 'http';
    const nextInMs = delayAfterFailure({ kind, status: detail.status, retryAfterMs }, attempt, backoff, random);
    // Warn when a failure streak starts or changes kind; the rest goes to debug so an hour-long outage is a few lines, not thousands.
    const log =
      outcome !== this.#lastFailure ? this.#deps.logger.warn.bind(this.#deps.logger) : this.#deps.logger.debug.bind(this.#deps.logger);
    const hint = outcome === 'unauthorized' ? ' (token refused: check the token issued by the panel; retrying slowly)' : '';
    log({ outcome, ...detail, attempt: attempt + 1, retryInMs: nextInMs }, `heartbeat failed: ${detail.message ?? outcome}${hint}`);
    this.#lastFailure = outcome;
    const honoured = retryAfterMs !== undefined && (detail.status === 429 || detail.status === 503);
    return { at, outcome, ...detail, nextInMs, ...(honoured ? { serverWaitMs: retryAfterMs } : {}) };
  }
}
