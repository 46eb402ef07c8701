import {
  parseDesiredSet,
  storableDesiredSet,
  type Deployment,
  type ParseOptions,
  type RejectedDeployment,
} from '../../protocol/deployment.js';
import { classifyResponse } from '../../controlplane/classify.js';
import { TimerLoop } from '../../util/timer-loop.js';
import { DEFAULT_BACKOFF, delayAfterFailure, jitteredInterval, type BackoffPolicy, type Random } from '../../controlplane/backoff.js';
import type { ControlPlaneClient } from '../../controlplane/control-plane-client.js';
import type { Logger } from '../logger.js';
import type { StateStore } from '../state/state-store.js';
import { storedDesiredSchema, type StoredDesired } from '../state/state-schemas.js';
import { RejectionLog } from './rejection-log.js';

export interface DesiredSet {
  deployments: Deployment[];
  rejected: RejectedDeployment[];
  etag: string | null;
  /** Where this set came from: the control plane now, or the state directory after a restart. */
  source: 'control-plane' | 'state-dir';
  receivedAt: number;
}

/** 'unknown' until the first answer; 'heartbeat-only' when the panel lacks the deployments API. */
export type DeploymentsApiMode = 'unknown' | 'available' | 'heartbeat-only';

const STATE_FILE = 'desired.json';
/** A stock panel (404) is asked again this often, in case it was upgraded. */
export const EXTENSION_PROBE_MS = 10 * 60_000;
/**
 * While heartbeat answers vouch for the set held, a real poll is still sent this often, so a hint
 * that is wrong (a proxy caching heartbeat answers, a panel bug) delays a change by at most this.
 */
export const HINTED_POLL_MAX_MS = 5 * 60_000;
/** The longest wait the agent asks for, whatever a panel announces (its held call is bounded by it). */
export const MAX_BLOCKING_WAIT_SEC = 600;
/** Held calls start at least this far apart, so a panel answering 200 at once every time cannot make a loop spin. */
const BLOCKING_MIN_GAP_MS = 1_000;
/** A held call that failed (a proxy cutting long requests, say) sends the agent back to polling for this long. */
export const BLOCKING_SUSPEND_MS = 10 * 60_000;

export interface DesiredStatePollerDeps {
  client: ControlPlaneClient;
  workerId(): string;
  intervalMs: number;
  backoff?: BackoffPolicy;
  store: StateStore;
  logger: Logger;
  onDesired(set: DesiredSet): void;
  random?: Random;
  /** HINTED_POLL_MAX_MS unless given (tests). */
  hintedPollMaxMs?: number;
  /** This host's rules for deployments (host ports they may not publish), applied on every parse. */
  parse?: ParseOptions;
}

/**
 * Polls the desired set with If-None-Match, so an unchanged set costs one 304. A set that cannot
 * be parsed changes nothing; a set that can is persisted before it is acted on, so a restart during
 * an outage keeps enforcing what the control plane last asked for. A failed write does not hold
 * the set back: removals and stops must happen on a full disk too.
 *
 * A panel with the extensions also names the set's ETag in every heartbeat answer (noteEtagHint).
 * A different one is polled at once; a poll whose set a heartbeat answer has vouched for since the
 * last one is skipped (at most HINTED_POLL_MAX_MS in a row). At 30 s beats and polls that spares
 * nearly every poll (each counts against the panel's per-IP rate limit), and a change is fetched as
 * soon as a heartbeat answer names it.
 */
export class DesiredStatePoller {
  readonly #deps: DesiredStatePollerDeps;
  readonly #loop: TimerLoop;
  #etag: string | null = null;
  #failures = 0;
  #mode: DeploymentsApiMode = 'unknown';
  #lastPollAt: number | undefined;
  /** The latest heartbeat hint and when it came (Date.now()). */
  #hint: { etag: string; at: number } | undefined;
  /** When a poll was last due (sent, or skipped on a hint). */
  #checkedAt = 0;
  /** The last differing hint that started a poll: one that stays different (a proxy rewriting ETags) starts only one. */
  #actedOnHint: string | undefined;
  readonly #rejections = new RejectionLog();
  /** The wait the panel announced for the blocking query (seconds); undefined: poll. */
  #waitSec: number | undefined;
  /** Blocking queries are not used before this (Date.now()) after one failed. */
  #suspendedUntil = 0;
  /** Held calls in a row that came back 304 long before their wait: the panel is not holding them. */
  #early = 0;
  /** Ends a held call on stop(). */
  #holding: AbortController | undefined;
  /** The pending wait leads to a held call (not a poll interval that an announcement should cut short). */
  #heldNext = false;

  constructor(deps: DesiredStatePollerDeps) {
    this.#deps = deps;
    this.#loop = new TimerLoop(
      () => this.#poll(),
      (err) => {
        deps.logger.error({ err: (err as Error).message }, 'desired-state poll failed unexpectedly');
        return fullDelay(deps, this.#failures++);
      },
    );
  }

  get mode(): DeploymentsApiMode {
    return this.#mode;
  }

  get lastPollAt(): number | undefined {
    return this.#lastPollAt;
  }

  /** The last desired set saved to the state directory, if any. */
  async restore(): Promise<DesiredSet | undefined> {
    // A file of the wrong shape (or holding an ETag no header can carry) is moved aside by the store.
    const stored = await this.#deps.store.read(STATE_FILE, storedDesiredSchema);
    if (!stored) return undefined;
    const parsed = parseDesiredSet(stored.body, this.#deps.parse);
    if (!parsed.ok) return undefined;
    this.#etag = stored.etag;
    return {
      deployments: parsed.deployments,
      rejected: parsed.rejected,
      etag: stored.etag,
      source: 'state-dir',
      receivedAt: stored.savedAt,
    };
  }

  start(): void {
    this.#loop.start(0);
  }

  /** A heartbeat answer named the desired set's current ETag. */
  noteEtagHint(etag: string): void {
    this.#hint = { etag, at: Date.now() };
    if (this.#mode !== 'available' || this.#failures > 0 || sameEtag(etag, this.#etag) || etag === this.#actedOnHint) return;
    this.#actedOnHint = etag;
    this.#loop.runWithin(0);
  }

  /** Whether a heartbeat answer since the last due poll vouched for the set held. */
  #vouched(now: number): boolean {
    const hint = this.#hint;
    return (
      this.#mode === 'available' &&
      this.#failures === 0 &&
      hint !== undefined &&
      hint.at > this.#checkedAt &&
      sameEtag(hint.etag, this.#etag) &&
      now - (this.#lastPollAt ?? 0) < (this.#deps.hintedPollMaxMs ?? HINTED_POLL_MAX_MS)
    );
  }

  /**
   * A heartbeat answer announced the blocking query (`data.deploymentsWait`, seconds) or did not
   * (undefined: a stock or older panel, or one whose change feed is down). From then on the next
   * call 3 is held, or a plain poll.
   */
  noteBlockingWait(waitSec: number | undefined): void {
    this.#waitSec = waitSec === undefined ? undefined : Math.min(waitSec, MAX_BLOCKING_WAIT_SEC);
    // Waiting out a poll interval (the first answer came before the first poll, say): hold now instead.
    if (this.#holding === undefined && !this.#heldNext && this.#blocking(Date.now())) this.#loop.runWithin(0);
  }

  /** Whether the next call 3 is a held one. */
  #blocking(now: number): boolean {
    return (
      this.#waitSec !== undefined &&
      this.#mode === 'available' &&
      this.#failures === 0 &&
      this.#etag !== null &&
      now >= this.#suspendedUntil
    );
  }

  stop(): Promise<void> {
    const stopped = this.#loop.stop();
    this.#holding?.abort();
    return stopped;
  }

  /** One poll; resolves with the delay before the next. */
  async #poll(): Promise<number> {
    const { client, logger } = this.#deps;
    const now = Date.now();
    const waitSec = this.#blocking(now) ? this.#waitSec : undefined;
    this.#heldNext = false;
    const vouched = waitSec === undefined && this.#vouched(now);
    this.#checkedAt = now;
    if (vouched) return this.#interval();
    this.#lastPollAt = now;
    const path = `/api/workers/${encodeURIComponent(this.#deps.workerId())}/deployments`;
    let res;
    if (waitSec === undefined) {
      res = await client.getJson(path, this.#etag ?? undefined);
    } else {
      const holding = (this.#holding = new AbortController());
      // The panel may hold up to wait + wait/16 (its spread); the client adds its normal bound on top.
      res = await client.getJson(`${path}?wait=${waitSec}`, this.#etag ?? undefined, {
        holdMs: Math.ceil((waitSec * 1000 * 17) / 16),
        signal: holding.signal,
      });
      this.#holding = undefined;
      if (holding.signal.aborted) return this.#interval(); // stop() ended it: nothing to report
      if (!res.ok) {
        this.#suspendedUntil = Date.now() + BLOCKING_SUSPEND_MS;
        logger.warn(
          { kind: res.kind, status: res.status },
          `held desired-state call failed: ${res.message}; polling instead for 10 minutes`,
        );
      }
    }
    if (res.ok) {
      if (this.#mode !== 'available') logger.info({ previous: this.#mode }, 'control plane serves deployments: reconciling');
      this.#mode = 'available';
      const next = waitSec === undefined ? undefined : this.#afterHeld(res.status, waitSec, Date.now() - now);
      this.#heldNext = next !== undefined;
      if (res.status === 304) {
        this.#failures = 0;
        return next ?? this.#afterPoll();
      }
      const parsed = parseDesiredSet(res.body, this.#deps.parse);
      if (!parsed.ok) {
        // Nothing from an unusable answer is applied, and its ETag is not kept, so the next poll fetches it again.
        logger.error({ reason: parsed.error }, 'desired set rejected as a whole; keeping the last one');
        return fullDelay(this.#deps, this.#failures++);
      }
      const etagHeader = res.headers.etag;
      const etag = typeof etagHeader === 'string' ? etagHeader : null;
      // Saved before it is acted on, but acted on whether or not the disk took it (full, read-only):
      // the store keeps retrying and reports the failure, and a restart would fetch the set again.
      await this.#deps.store.write(STATE_FILE, { etag, body: storableDesiredSet(res.body), savedAt: Date.now() } satisfies StoredDesired);
      this.#etag = etag;
      // Only a usable, stored set ends a failure streak: a 200 with an unusable body backs off like any failure.
      this.#failures = 0;
      this.#rejections.note(parsed.rejected, deploymentList(res.body), logger);
      this.#deps.onDesired({
        deployments: parsed.deployments,
        rejected: parsed.rejected,
        etag,
        source: 'control-plane',
        receivedAt: Date.now(),
      });
      return next ?? this.#afterPoll();
    }
    if (classifyResponse(res) === 'extension-missing') {
      if (this.#mode !== 'heartbeat-only') {
        logger.info('control plane has no deployments API (stock SkyPanelV2): heartbeat-only mode; asking again every 10 minutes');
      }
      this.#mode = 'heartbeat-only';
      return EXTENSION_PROBE_MS;
    }
    const next = delayAfterFailure(res, this.#failures++, this.#deps.backoff ?? DEFAULT_BACKOFF, this.#deps.random);
    const log = this.#failures === 1 ? logger.warn.bind(logger) : logger.debug.bind(logger);
    log({ kind: res.kind, status: res.status, retryInMs: next }, `desired-state poll failed: ${res.message}; enforcing the last known set`);
    return next;
  }

  /**
   * The delay after a held call answered: the next one at once (at least BLOCKING_MIN_GAP_MS after
   * this one started). A 304 long before the wait (a panel restarting, or one that does not hold)
   * backs off towards the poll interval instead, so such a panel sees no more calls than polling.
   */
  #afterHeld(status: number, waitSec: number, elapsedMs: number): number {
    if (status === 304 && elapsedMs < (waitSec * 1000) / 2) {
      this.#early++;
      return Math.min(this.#interval(), fullDelay(this.#deps, this.#early - 1) + BLOCKING_MIN_GAP_MS);
    }
    this.#early = 0;
    return Math.max(0, BLOCKING_MIN_GAP_MS - elapsedMs);
  }

  /** After a plain poll: a held call at once when the panel announced one (the first poll had no tag to hold on). */
  #afterPoll(): number {
    if (!this.#blocking(Date.now())) return this.#interval();
    this.#heldNext = true;
    return BLOCKING_MIN_GAP_MS;
  }

  #interval(): number {
    return jitteredInterval(this.#deps.intervalMs, this.#deps.random);
  }
}

/** The raw `data.deployments` array of a body parseDesiredSet accepted. */
function deploymentList(body: unknown): readonly unknown[] {
  const data = (body as { data?: { deployments?: unknown } }).data;
  return Array.isArray(data?.deployments) ? data.deployments : [];
}

function sameEtag(a: string, b: string | null): boolean {
  return b !== null && a.replace(/^W\//, '') === b.replace(/^W\//, '');
}

function fullDelay(deps: DesiredStatePollerDeps, attempt: number): number {
  return delayAfterFailure({ kind: 'invalid-response' }, attempt, deps.backoff ?? DEFAULT_BACKOFF, deps.random);
}
