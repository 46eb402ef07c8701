import { LABEL, ownedBy } from '../../domain/labels.js';
import { heldElsewhere, plan, type Action, type HeldCreate } from '../../domain/planner.js';
import { buildServiceSpec, type BuiltService } from '../../domain/service-spec.js';
import type { ObservedService } from '../../domain/observed-service.js';
import { secretsInUse } from '../../domain/secret-gc.js';
import {
  nextSchedulingDeadline,
  renderPublicUrl,
  type DerivedStatus,
  type SchedulingBound,
  type TaskObservation,
} from '../../domain/deployment-status.js';
import type { Deployment } from '../../protocol/deployment.js';
import type { EngineEvent, SwarmPort } from '../../ports.js';
import { groupBy } from '../../util/group-by.js';
import { mapLimited } from '../../util/map-limited.js';
import { DEFAULT_UNSCHEDULED_TIMEOUT_SEC } from '../config-schema.js';
import type { Random } from '../../controlplane/backoff.js';
import type { DesiredSet } from './desired-state-poller.js';
import {
  appliedLatency,
  backoffAfter,
  deploymentView,
  deriveFor,
  driftOf,
  errorText,
  isNameTaken,
  NAME_TAKEN_WAIT_MS,
  stoppedNow,
  type DeploymentRecord,
} from './deployment-record.js';
import { createActionHandlers, runAction } from './executor.js';
import type { Logger } from '../logger.js';
import { SecretSweeper } from './secret-sweeper.js';
import { StartWatch } from './start-watch.js';
import { TimerLoop } from '../../util/timer-loop.js';
import type { DeploymentView, ReconcilePassView } from '../status/status-model.js';

/** What the reconciler tells the reporter after every pass, per deployment it knows of. */
export interface StatusChange {
  deploymentId: string;
  derived: DerivedStatus;
  publicUrl: string | null;
  /** Only on the pass where the deployment turned failed: the service's last log lines. */
  logs?: string[];
}

export interface ReconcilerDeps {
  port: SwarmPort;
  workerId: string;
  nodeId(): string | null;
  ipAddress: string;
  publicUrlTemplate: string;
  resyncMs: number;
  concurrency?: number;
  logger: Logger;
  onStatus(changes: StatusChange[], rejected: DesiredSet['rejected']): void;
  onPass?(pass: ReconcilePassView): void;
  onApplied?(latencySec: number): void;
  /** Observe mode: derive and report statuses, never plan or apply an action. */
  readOnly?: boolean;
  /** Draining: keep, update and remove what runs, start nothing new. */
  isDraining?(): boolean;
  /** A task Swarm has not placed (new/pending) for longer than this fails its deployment; default unscheduledTimeoutSec's. */
  unscheduledFailAfterMs?: number;
  random?: Random;
}

const SETTLE_MIN_MS = 1_000;
/**
 * Resync bound while Docker's event stream is down: without events a dead container is only
 * noticed by a pass, so passes come at least this often (the configured resync when shorter).
 */
export const EVENTLESS_RESYNC_MS = 60_000;
/**
 * Events arrive in bursts (100 starts while a fleet converges; a die, then the replacement's
 * start): one pass this long after the first, however many follow, so a burst costs a pass per
 * 250 ms, at 2 Engine calls and a few ms of CPU each. A start is part of desired→applied, so one
 * after a quiet spell is looked at sooner (start-watch.ts).
 */
export const EVENT_COALESCE_MS = 250;
/** Container events that can change a deployment's status. */
const CONTAINER_ACTIONS: ReadonlySet<string> = new Set(['start', 'die', 'oom']);
/**
 * What the reconciler asks Docker's event stream for. Docker ANDs filter keys, and service events
 * carry no labels, so ownership is checked here (noteEngineEvent), not by a label filter.
 */
export const RECONCILE_EVENT_FILTERS: Record<string, string[]> = {
  type: ['container', 'service'],
  event: [...CONTAINER_ACTIONS, 'update', 'remove'],
};
const FAILED_LOG_LINES = 100;

/** What a pass knows before it acts: the desired set with each spec built, and Swarm as listed (drift marked). */
interface Observed {
  now: number;
  set: DesiredSet;
  ctx: { workerId: string; nodeId: string };
  byId: ReadonlyMap<string, Deployment>;
  built: ReadonlyMap<string, BuiltService>;
  services: ObservedService[];
  tasks: TaskObservation[];
}

/** What a pass decided: the actions to apply, and the creates a service placed by someone else holds back. */
interface Planned {
  actions: Action[];
  held: ReadonlyMap<string, HeldCreate>;
}

/**
 * Level-triggered reconciliation, one pass at a time: observe (two Engine API calls, drift
 * check), plan (pure), apply with bounded concurrency, report statuses. Runs on every desired-set
 * change, on Docker events about what this worker owns (250 ms after the first of a burst), and
 * every resync interval (at least every minute while the event stream is down); while something
 * is still deploying it looks again sooner, backing off. Events only say when to look: every pass
 * re-reads everything, so a lost event costs at most one resync interval.
 */
export class Reconciler {
  readonly #deps: ReconcilerDeps;
  #desired: DesiredSet | undefined;
  readonly #loop: TimerLoop;
  #stopped = true;
  #settleMs = SETTLE_MIN_MS;
  /** deploymentId → all the reconciler remembers of it between passes. */
  readonly #records = new Map<string, DeploymentRecord>();
  #lastPass: ReconcilePassView | undefined;
  /** Ids of the services this worker owned at the last pass, and of unmanaged ones holding back a create: their service events matter. */
  #ownedServiceIds = new Set<string>();
  /** serviceIds of the desired set: container events carry them, whoever placed the task (SkyPanelV2's orchestrator too). */
  #desiredServiceIds = new Set<string>();
  /** When the next waiting task crosses the unscheduled bound: the pass that reports it is due then. */
  #schedulingDeadline: number | undefined;
  #eventsLive = false;
  readonly #secrets: SecretSweeper;
  readonly #starts = new StartWatch(EVENT_COALESCE_MS);

  constructor(deps: ReconcilerDeps) {
    this.#deps = deps;
    this.#secrets = new SecretSweeper(deps.port, deps.workerId, deps.logger);
    this.#loop = new TimerLoop(
      () => this.#step(),
      () => this.#resyncMs(),
    );
  }

  /** Whether Docker's event stream is open. Going live looks at once (events may have been missed while it was down). */
  setEventsLive(live: boolean): void {
    if (live === this.#eventsLive) return;
    this.#eventsLive = live;
    if (this.#stopped || !this.#desired) return;
    this.#loop.runWithin(live ? 0 : this.#resyncMs());
  }

  /** A Docker event: a pass soon when it is about a container or service of this worker. */
  noteEngineEvent(e: EngineEvent): void {
    if (this.#stopped || !this.#desired) return;
    const ours =
      e.type === 'container'
        ? CONTAINER_ACTIONS.has(e.action) &&
          (ownedBy(e.attributes, this.#deps.workerId) || this.#desiredServiceIds.has(e.attributes[LABEL.serviceId] ?? ''))
        : e.type === 'service' && this.#ownedServiceIds.has(e.id);
    if (ours)
      this.#loop.runWithin(
        e.type === 'container' && e.action === 'start' ? this.#starts.noteStart(e.id, performance.now()) : EVENT_COALESCE_MS,
      );
  }

  #resyncMs(): number {
    return this.#eventsLive ? this.#deps.resyncMs : Math.min(this.#deps.resyncMs, EVENTLESS_RESYNC_MS);
  }

  get lastPass(): ReconcilePassView | undefined {
    return this.#lastPass;
  }

  /** How many deployments the reconciler remembers anything about (tests: removal forgets a deployment whole). */
  get recordCount(): number {
    return this.#records.size;
  }

  views(): DeploymentView[] {
    return [...this.#records.values()].flatMap(({ reported }) => (reported ? [deploymentView(reported)] : []));
  }

  setDesired(set: DesiredSet): void {
    this.#desired = set;
    this.#desiredServiceIds = new Set(set.deployments.map((d) => d.serviceId));
    this.#settleMs = SETTLE_MIN_MS;
    this.trigger();
  }

  start(): void {
    this.#stopped = false;
    if (this.#desired) this.#loop.start(0);
  }

  stop(): Promise<void> {
    this.#stopped = true;
    return this.#loop.stop();
  }

  /** Ask for a pass now; one already running is followed by another. */
  trigger(): void {
    if (this.#stopped || !this.#desired) return;
    this.#loop.start(0);
    this.#loop.runSoon();
  }

  /** One pass; resolves with the delay before the next: sooner while something is still deploying. */
  async #step(): Promise<number> {
    try {
      await this.#pass();
    } catch (err) {
      this.#deps.logger.warn({ err: (err as Error).message }, 'reconcile pass failed; retrying');
      this.#settleMs = Math.min(EVENTLESS_RESYNC_MS, this.#resyncMs(), this.#settleMs * 2);
      return this.#settleMs;
    }
    // A start whose task Swarm's record does not yet say is running: look again soon.
    const soon = this.#starts.nextLookMs();
    const deploying = [...this.#records.values()].some((r) => r.reported?.derived.status === 'deploying');
    if (!deploying) return Math.min(soon, this.#resyncMs());
    const next = Math.min(
      this.#settleMs,
      this.#schedulingDeadline === undefined ? Infinity : Math.max(SETTLE_MIN_MS, this.#schedulingDeadline - Date.now()),
    );
    if (soon < next) return soon; // the settle cadence resumes after it
    this.#settleMs = Math.min(EVENTLESS_RESYNC_MS, this.#resyncMs(), this.#settleMs * 2);
    return next;
  }

  async #pass(): Promise<void> {
    const started = performance.now();
    this.#starts.passStarted(started);
    const observed = await this.#observe(Date.now());
    const planned = await this.#plan(observed);
    const results = await this.#apply(planned.actions, observed);
    await this.#report(observed, planned);
    if (!this.#deps.readOnly) {
      // What this pass saw before acting: a secret an update or removal just let go of is still held by the old task.
      const { services, tasks, built, now } = observed;
      const desired = [...built.values()].flatMap((b) => b.secrets.map((x) => x.name));
      await this.#secrets.sweep(secretsInUse({ serviceSpecs: services.map((s) => s.spec), tasks, desired }), now);
    }
    const actions = planned.actions.map((a, i) => {
      const r = results[i]!;
      return {
        kind: a.kind,
        deploymentId: a.deploymentId,
        ok: r.status === 'fulfilled',
        ...(r.status === 'rejected' ? { error: errorText(r) } : {}),
      };
    });
    this.#lastPass = { at: new Date(observed.now).toISOString(), durationMs: Math.round(performance.now() - started), actions };
    this.#deps.onPass?.(this.#lastPass);
    if (actions.length > 0)
      this.#deps.logger.debug({ actions: actions.length, ms: this.#lastPass.durationMs }, 'reconcile pass applied actions');
  }

  /** Reads Swarm (services and tasks), builds every desired spec and marks the services that drifted. */
  async #observe(now: number): Promise<Observed> {
    const { port } = this.#deps;
    const set = this.#desired!;
    const [listed, tasks] = await Promise.all([port.listServices(), port.listTasks()]);
    this.#starts.observed(tasks, performance.now());
    const nodeId = this.#deps.nodeId();
    if (!nodeId) throw new Error('this engine reports no swarm node id');
    const ctx = { workerId: this.#deps.workerId, nodeId };
    const byId = new Map(set.deployments.map((d) => [d.id, d]));
    const built = new Map(set.deployments.map((d) => [d.id, buildServiceSpec(d, ctx)]));
    for (const [id, b] of built) {
      // For desired→applied latency: the time this spec was first asked for.
      const rec = this.#record(id);
      if (rec.pending?.hash !== b.specHash) rec.pending = { hash: b.specHash, since: set.receivedAt ?? now };
    }
    const byService = new Map(set.deployments.map((d) => [d.serviceId, d]));
    const services = listed.map((s) => {
      const d = byService.get(s.labels[LABEL.serviceId] ?? '');
      if (!d) return s;
      const b = built.get(d.id)!;
      this.#noteRollback(d.id, s, b.specHash);
      const drifted = driftOf(this.#record(d.id), s, b);
      return drifted.length > 0 ? { ...s, drifted } : s;
    });
    this.#ownedServiceIds = new Set(listed.map((s) => s.id));
    return { now, set, ctx, byId, built, services, tasks };
  }

  /** The actions that close the gap (none in observe mode), less the creates held back or refused while draining. */
  async #plan(o: Observed): Promise<Planned> {
    if (this.#deps.readOnly) return { actions: [], held: new Map() };
    const backoff = new Map<string, { until: number }>();
    for (const [id, rec] of this.#records) {
      if (rec.backoff) backoff.set(id, { until: rec.backoff.until });
      if (rec.rolledBackFrom !== undefined && rec.rolledBackFrom === o.built.get(id)?.specHash) backoff.set(id, { until: Infinity });
    }
    const retainServiceIds = new Set(o.set.rejected.map((r) => r.serviceId).filter((s): s is string => s !== null));
    const planned = plan(o.set.deployments, o.services, { ...o.ctx, now: o.now, backoff, retainServiceIds });
    // Creates a service no agent placed holds back; one more Engine call, only in a pass that would create.
    const held = planned.some((a) => a.kind === 'create')
      ? heldElsewhere(planned, o.set.deployments, await this.#deps.port.listUnmanagedServices())
      : new Map<string, HeldCreate>();
    for (const h of held.values()) this.#ownedServiceIds.add(h.holderId); // its removal (a service event) should start a pass
    const actions = planned.filter((a) => a.kind !== 'create' || (!held.has(a.deploymentId) && !this.#deps.isDraining?.()));
    return { actions, held };
  }

  /** Removals first (they may free the host port a create needs), then the rest concurrently; failures back off. */
  async #apply(actions: Action[], o: Observed): Promise<PromiseSettledResult<void>[]> {
    const handlers = createActionHandlers(this.#deps.port, o.byId, o.ctx, this.#deps.logger);
    const limit = this.#deps.concurrency ?? 4;
    const order = actions.map((a, i) => ({ a, i }));
    const results: PromiseSettledResult<void>[] = new Array(actions.length);
    for (const group of [order.filter((x) => x.a.kind === 'remove'), order.filter((x) => x.a.kind !== 'remove')]) {
      const r = await mapLimited(group, limit, (x) => runAction(handlers, x.a));
      group.forEach((x, k) => (results[x.i] = r[k]!));
    }
    actions.forEach((a, i) => {
      const id = a.deploymentId;
      if (id) this.#noteOutcome(id, a, results[i]!);
    });
    return results;
  }

  #noteOutcome(id: string, a: Action, r: PromiseSettledResult<void>): void {
    if (r.status === 'fulfilled') {
      const rec = this.#records.get(id);
      if (rec) delete rec.backoff;
      return;
    }
    const rec = this.#record(id);
    const prev = rec.backoff;
    const now = Date.now();
    const error = errorText(r);
    const next = backoffAfter(prev, { error, nameTaken: isNameTaken(a, r.reason) }, now, this.#deps.random);
    rec.backoff = next;
    const log = this.#deps.logger;
    const retryInMs = next.until - now;
    if (!next.waiting) log.warn({ deploymentId: id, action: a.kind, attempt: next.attempts, retryInMs }, `action failed: ${error}`);
    else if (prev?.nameTakenSince === undefined)
      log.info({ deploymentId: id, waitMs: NAME_TAKEN_WAIT_MS }, `service name taken, waiting for it to be freed: ${error}`);
  }

  /** Derives every desired deployment's status, reports those the panel took away as stopped once (then forgets them). */
  async #report(o: Observed, p: Planned): Promise<void> {
    const scheduling: SchedulingBound = {
      now: o.now,
      failAfterMs: this.#deps.unscheduledFailAfterMs ?? DEFAULT_UNSCHEDULED_TIMEOUT_SEC * 1000,
    };
    this.#schedulingDeadline = nextSchedulingDeadline(o.tasks, scheduling);
    const failedNow: StatusChange[] = [];
    const changes: StatusChange[] = [];
    const serviceFor = new Map(o.services.map((s) => [s.labels[LABEL.serviceId], s]));
    const tasksOf = groupBy(o.tasks, (t) => t.serviceId);
    for (const d of o.set.deployments) {
      const rec = this.#record(d.id);
      const svc = serviceFor.get(d.serviceId);
      const heldError = p.held.get(d.id)?.message;
      const { derived, lastError } = deriveFor(d, svc, (svc && tasksOf.get(svc.id)) || [], rec.backoff, heldError, scheduling);
      const publicUrl = renderPublicUrl(this.#deps.publicUrlTemplate, {
        ipAddress: this.#deps.ipAddress,
        externalPort: derived.externalPort,
        slug: d.slug,
        serviceId: d.serviceId,
      });
      const prev = rec.reported;
      rec.reported = { deployment: d, derived, publicUrl, lastError };
      const change: StatusChange = { deploymentId: d.id, derived, publicUrl };
      if (derived.status === 'failed' && prev?.derived.status !== 'failed') failedNow.push(change);
      const latency = derived.status === 'running' ? appliedLatency(rec, o.built.get(d.id)!.specHash, o.now) : undefined;
      if (latency !== undefined) this.#deps.onApplied?.(latency);
      changes.push(change);
    }
    for (const [id, rec] of this.#records) {
      if (o.byId.has(id)) continue;
      // A deployment the panel took away: its service is gone (or going); report it stopped once, then forget it.
      // A record never reported only holds the backoff of a failed removal; it goes once that removal succeeds.
      if (rec.reported) changes.push({ deploymentId: id, derived: stoppedNow(rec.reported.derived), publicUrl: null });
      if (rec.reported || !rec.backoff) this.#records.delete(id);
    }
    await Promise.all(
      failedNow.map(async (c) => {
        if (!c.derived.swarmServiceId) return;
        c.logs = await this.#deps.port.serviceLogs(c.derived.swarmServiceId, FAILED_LOG_LINES).catch(() => undefined);
      }),
    );
    // A rejected later copy of a deployment that is valid here (same id listed twice) must not report it failed.
    this.#deps.onStatus(
      changes,
      o.set.rejected.filter((r) => r.id === null || !o.byId.has(r.id)),
    );
  }

  #record(id: string): DeploymentRecord {
    let rec = this.#records.get(id);
    if (!rec) this.#records.set(id, (rec = {}));
    return rec;
  }

  #noteRollback(id: string, s: ObservedService, desiredHash: string): void {
    if (s.updateState !== 'rollback_completed' || desiredHash === s.labels[LABEL.specHash]) return;
    const rec = this.#record(id);
    if (rec.rolledBackFrom === desiredHash) return;
    rec.rolledBackFrom = desiredHash;
    this.#deps.logger.warn(
      { deploymentId: id, message: s.updateMessage },
      'update rolled back by Swarm; not retried until the deployment changes',
    );
  }
}
