import { LABEL, ownedBy } from '../../domain/labels.js';
import { heldElsewhere, plan, type Action, type HeldCreate, type ActualService, type UpdateState } from '../../domain/planner.js';
import { buildServiceSpec, type ServiceSpec } from '../../domain/service-spec.js';
import { hasDrifted } from '../../domain/drift.js';
import { secretsInUse } from '../../domain/secret-gc.js';
import {
  deriveStatus,
  nextSchedulingDeadline,
  renderPublicUrl,
  type DerivedStatus,
  type TaskObservation,
} from '../../domain/deployment-status.js';
import type { Deployment } from '../../protocol/deployment.js';
import type { EngineEvent, ObservedServiceLite, SwarmPort } from '../../ports.js';
import { mapLimited } from '../../util/map-limited.js';
import { DEFAULT_UNSCHEDULED_TIMEOUT_SEC } from '../config-schema.js';
import { fullJitter, type Random } from '../../controlplane/backoff.js';
import type { DesiredSet } from './desired-state-poller.js';
import { createActionHandlers, runAction } from './executor.js';
import type { Logger } from '../logger.js';
import { SecretSweeper } from './secret-sweeper.js';
import { TimerLoop } from '../timer-loop.js';
import type { DeploymentView, ReconcilePassView } from '../status/status-model.js';

export interface DeploymentState {
  deployment: Deployment;
  derived: DerivedStatus;
  publicUrl: string | null;
  lastError: string | null;
}

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
 * start): one pass this long after the first, however many follow. Short, because it is part of
 * desired→applied (the running task is reported this long after it starts); long enough that a
 * burst costs a pass per 250 ms, at 2 Engine calls and a few ms of CPU each.
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
/**
 * How long a create may wait for its service name to be freed before it counts as failed. Names
 * derive from the serviceId alone, so while the control plane moves a deployment between workers
 * the old worker's copy holds the name until that worker removes it (one poll and a pass).
 */
export const NAME_TAKEN_WAIT_MS = 120_000;
const NAME_TAKEN_RETRY_MS = 1_000;

/**
 * Level-triggered reconciliation, one pass at a time: observe (two Engine API calls), plan
 * (pure), apply with bounded concurrency, derive statuses. Runs on every desired-set change, on
 * Docker events about what this worker owns (250 ms after the first of a burst), and every
 * resync interval (at least every minute while the event stream is down); while something is
 * still deploying it looks again sooner, backing off. Events only say when to look: every pass
 * re-reads everything, so a lost event costs at most one resync interval.
 */
export class Reconciler {
  readonly #deps: ReconcilerDeps;
  #desired: DesiredSet | undefined;
  readonly #loop: TimerLoop;
  #stopped = true;
  #settleMs = SETTLE_MIN_MS;
  readonly #backoff = new Map<string, { until: number; attempts: number; error: string; nameTakenSince?: number; waiting?: boolean }>();
  /** deploymentId → spec hash Swarm rolled back from: not retried until the panel changes the deployment. */
  readonly #rolledBack = new Map<string, string>();
  /** deploymentId → when its current spec was first seen, for desired→applied latency. */
  readonly #pendingSince = new Map<string, { hash: string; since: number }>();
  readonly #states = new Map<string, DeploymentState>();
  /** Swarm service id → the version and desired hash it last matched (see #drifted). */
  readonly #undrifted = new Map<string, { version: number; hash: string }>();
  #lastPass: ReconcilePassView | undefined;
  /** Ids of the services this worker owned at the last pass, and of unmanaged ones holding back a create: their service events matter. */
  #ownedServiceIds = new Set<string>();
  /** serviceIds of the desired set: container events carry them, whoever placed the task (SkyPanelV2's orchestrator too). */
  #desiredServiceIds = new Set<string>();
  /** When the next waiting task crosses the unscheduled bound: the pass that reports it is due then. */
  #schedulingDeadline: number | undefined;
  #eventsLive = false;
  readonly #secrets: SecretSweeper;

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
    if (ours) this.#loop.runWithin(EVENT_COALESCE_MS);
  }

  #resyncMs(): number {
    return this.#eventsLive ? this.#deps.resyncMs : Math.min(this.#deps.resyncMs, EVENTLESS_RESYNC_MS);
  }

  get lastPass(): ReconcilePassView | undefined {
    return this.#lastPass;
  }

  views(): DeploymentView[] {
    return [...this.#states.values()].map(({ deployment: d, derived, publicUrl, lastError }) => ({
      id: d.id,
      serviceId: d.serviceId,
      slug: d.slug,
      imageTag: d.imageTag,
      desiredState: d.desiredState,
      observedStatus: derived.status,
      swarmServiceId: derived.swarmServiceId,
      replicas: { running: derived.runningReplicas, desired: derived.desiredReplicas },
      publicUrl,
      lastError: lastError ?? derived.message,
      environmentVarNames: Object.keys(d.environmentVars).sort(),
      secretNames: (d.secrets ?? []).map((s) => s.name),
    }));
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
    const deploying = [...this.#states.values()].some((st) => st.derived.status === 'deploying');
    if (!deploying) return this.#resyncMs();
    const next = Math.min(
      this.#settleMs,
      this.#schedulingDeadline === undefined ? Infinity : Math.max(SETTLE_MIN_MS, this.#schedulingDeadline - Date.now()),
    );
    this.#settleMs = Math.min(EVENTLESS_RESYNC_MS, this.#resyncMs(), this.#settleMs * 2);
    return next;
  }

  async #pass(): Promise<void> {
    const { port, logger } = this.#deps;
    const desiredSet = this.#desired!;
    const started = performance.now();
    const now = Date.now();
    const [services, tasks] = await Promise.all([port.listServices(), port.listTasks()]);
    const nodeId = this.#deps.nodeId();
    if (!nodeId) throw new Error('this engine reports no swarm node id');
    const ctx = { workerId: this.#deps.workerId, nodeId };
    const desired = desiredSet.deployments;
    const byId = new Map(desired.map((d) => [d.id, d]));
    const built = new Map(desired.map((d) => [d.id, buildServiceSpec(d, ctx)]));
    const hashes = new Map([...built].map(([id, b]) => [id, b.specHash]));
    this.#noteRollbacks(services, hashes);
    this.#notePending(hashes, now);

    const backoff = new Map<string, { until: number }>();
    for (const [id, b] of this.#backoff) backoff.set(id, { until: b.until });
    for (const [id, hash] of this.#rolledBack) if (hashes.get(id) === hash) backoff.set(id, { until: Number.POSITIVE_INFINITY });
    const retainServiceIds = new Set(desiredSet.rejected.map((r) => r.serviceId).filter((s): s is string => s !== null));
    const desiredByService = new Map(desired.map((d) => [d.serviceId, d]));
    const actual: ActualService[] = services.map((s) => {
      const a: ActualService = {
        id: s.id,
        name: s.name,
        labels: s.labels,
        replicas: s.replicas,
        specHash: s.labels[LABEL.specHash],
        updateState: s.updateState as UpdateState | undefined,
      };
      // Same hash label but a spec changed by hand: hide the label so the planner puts the service back (drift).
      const d = desiredByService.get(s.labels[LABEL.serviceId] ?? '');
      const b = d ? built.get(d.id) : undefined;
      if (b && a.specHash === b.specHash && s.spec !== undefined && this.#drifted(s, b.spec, b.specHash)) {
        const { [LABEL.specHash]: _dropped, ...rest } = s.labels;
        return { ...a, labels: rest, specHash: undefined };
      }
      return a;
    });
    const live = new Set(services.map((s) => s.id));
    for (const id of this.#undrifted.keys()) if (!live.has(id)) this.#undrifted.delete(id);
    this.#ownedServiceIds = live;
    const planned = this.#deps.readOnly ? [] : plan(desired, actual, { ...ctx, now, backoff, retainServiceIds });
    // Creates a service no agent placed holds back; one more Engine call, only in a pass that would create.
    const held = planned.some((a) => a.kind === 'create')
      ? heldElsewhere(planned, desired, await port.listUnmanagedServices())
      : new Map<string, HeldCreate>();
    for (const h of held.values()) live.add(h.holderId); // its removal (a service event) should start a pass
    const actions = planned.filter((a) => a.kind !== 'create' || (!held.has(a.deploymentId) && !this.#deps.isDraining?.()));
    const results = await this.#apply(actions, byId);
    const scheduling = { now, failAfterMs: this.#deps.unscheduledFailAfterMs ?? DEFAULT_UNSCHEDULED_TIMEOUT_SEC * 1000 };
    this.#schedulingDeadline = nextSchedulingDeadline(tasks, scheduling);

    const failedNow: StatusChange[] = [];
    const changes: StatusChange[] = [];
    const serviceFor = new Map(services.map((s) => [s.labels[LABEL.serviceId], s]));
    const tasksOf = groupBy(tasks as TaskObservation[], (t) => t.serviceId);
    const seen = new Set<string>();
    for (const d of desired) {
      seen.add(d.id);
      const svc = serviceFor.get(d.serviceId);
      const b = this.#backoff.get(d.id);
      // Waiting for a taken name is deploying, not failed: the holder is usually on its way out.
      const waiting = b?.waiting === true;
      const heldError = held.get(d.id)?.message;
      const derived0 = deriveStatus(d, svc, (svc && tasksOf.get(svc.id)) || [], heldError ?? (waiting ? undefined : b?.error), scheduling);
      const derived =
        waiting && !svc
          ? {
              ...derived0,
              message: `waiting for the service name (held by a service this worker does not own, e.g. the previous worker's copy of a moved deployment): ${b!.error}`,
            }
          : derived0;
      const publicUrl = renderPublicUrl(this.#deps.publicUrlTemplate, {
        ipAddress: this.#deps.ipAddress,
        externalPort: derived.externalPort,
        slug: d.slug,
        serviceId: d.serviceId,
      });
      const prev = this.#states.get(d.id);
      this.#states.set(d.id, { deployment: d, derived, publicUrl, lastError: heldError ?? b?.error ?? null });
      const change: StatusChange = { deploymentId: d.id, derived, publicUrl };
      if (derived.status === 'failed' && prev?.derived.status !== 'failed') failedNow.push(change);
      if (derived.status === 'running') this.#applied(d.id, hashes.get(d.id)!, now);
      changes.push(change);
    }
    // Deployments the panel took away: their service is gone (or going); report them stopped once.
    for (const [id, st] of this.#states) {
      if (seen.has(id)) continue;
      this.#states.delete(id);
      this.#backoff.delete(id);
      this.#rolledBack.delete(id);
      changes.push({
        deploymentId: id,
        derived: {
          ...st.derived,
          status: 'stopped',
          runningReplicas: 0,
          desiredReplicas: 0,
          containerId: null,
          message: 'no longer assigned to this worker',
        },
        publicUrl: null,
      });
    }
    await Promise.all(
      failedNow.map(async (c) => {
        if (!c.derived.swarmServiceId) return;
        c.logs = await port.serviceLogs(c.derived.swarmServiceId, FAILED_LOG_LINES).catch(() => undefined);
      }),
    );
    // A rejected later copy of a deployment that is valid here (same id listed twice) must not report it failed.
    this.#deps.onStatus(
      changes,
      desiredSet.rejected.filter((r) => r.id === null || !byId.has(r.id)),
    );
    if (!this.#deps.readOnly) {
      // What this pass saw before acting: a secret an update or removal just let go of is still held by the old task.
      const desiredSecrets = [...built.values()].flatMap((b) => b.secrets.map((x) => x.name));
      await this.#secrets.sweep(secretsInUse({ serviceSpecs: services.map((s) => s.spec), tasks, desired: desiredSecrets }), now);
    }
    this.#lastPass = {
      at: new Date(now).toISOString(),
      durationMs: Math.round(performance.now() - started),
      actions: actions.map((a, i) => ({
        kind: a.kind,
        deploymentId: a.deploymentId,
        ok: results[i]!.status === 'fulfilled',
        ...(results[i]!.status === 'rejected' ? { error: errorText(results[i]) } : {}),
      })),
    };
    this.#deps.onPass?.(this.#lastPass);
    if (actions.length > 0) logger.debug({ actions: actions.length, ms: this.#lastPass.durationMs }, 'reconcile pass applied actions');
  }

  /** Removals first (they may free the host port a create needs), then the rest concurrently. */
  async #apply(actions: Action[], byId: ReadonlyMap<string, Deployment>): Promise<PromiseSettledResult<void>[]> {
    const handlers = createActionHandlers(
      this.#deps.port,
      byId,
      { workerId: this.#deps.workerId, nodeId: this.#deps.nodeId()! },
      this.#deps.logger,
    );
    const limit = this.#deps.concurrency ?? 4;
    const order = actions.map((a, i) => ({ a, i })).sort((x, y) => Number(x.a.kind !== 'remove') - Number(y.a.kind !== 'remove'));
    const removes = order.filter((o) => o.a.kind === 'remove');
    const rest = order.filter((o) => o.a.kind !== 'remove');
    const results: PromiseSettledResult<void>[] = new Array(actions.length);
    for (const group of [removes, rest]) {
      const r = await mapLimited(group, limit, (o) => runAction(handlers, o.a));
      group.forEach((o, k) => (results[o.i] = r[k]!));
    }
    actions.forEach((a, i) => {
      const id = a.deploymentId;
      if (!id) return;
      const r = results[i]!;
      if (r.status === 'fulfilled') {
        this.#backoff.delete(id);
        return;
      }
      const prev = this.#backoff.get(id);
      const error = errorText(r);
      const now = Date.now();
      const nameTakenSince = isNameTaken(a, r.reason) ? (prev?.nameTakenSince ?? now) : undefined;
      if (nameTakenSince !== undefined && now - nameTakenSince < NAME_TAKEN_WAIT_MS) {
        this.#backoff.set(id, { until: now + NAME_TAKEN_RETRY_MS, attempts: prev?.attempts ?? 0, error, nameTakenSince, waiting: true });
        if (prev?.nameTakenSince === undefined)
          this.#deps.logger.info(
            { deploymentId: id, waitMs: NAME_TAKEN_WAIT_MS },
            `service name taken, waiting for it to be freed: ${error}`,
          );
        return;
      }
      const attempts = (prev?.attempts ?? 0) + 1;
      const delay = Math.max(1_000, fullJitter(attempts, { baseMs: 2_000, capMs: 300_000 }, this.#deps.random));
      // A name still taken after the wait is failed from now on (nameTakenSince kept, so it stays so).
      this.#backoff.set(id, { until: Date.now() + delay, attempts, error, ...(nameTakenSince !== undefined ? { nameTakenSince } : {}) });
      this.#deps.logger.warn({ deploymentId: id, action: a.kind, attempt: attempts, retryInMs: delay }, `action failed: ${error}`);
    });
    return results;
  }

  /**
   * Drift is looked for only when the service changed since it was last found in step: Swarm bumps
   * a service's version on every change to it, by anyone, so an unchanged version with an
   * unchanged desired hash cannot have drifted (projecting and hashing every spec on every resync
   * was a third of a pass's CPU).
   */
  #drifted(s: ObservedServiceLite, desired: ServiceSpec, desiredHash: string): boolean {
    const known = this.#undrifted.get(s.id);
    if (known && s.version !== undefined && known.version === s.version && known.hash === desiredHash) return false;
    const drifted = hasDrifted(desired, s.spec, desiredHash);
    if (drifted) this.#undrifted.delete(s.id);
    else if (s.version !== undefined) this.#undrifted.set(s.id, { version: s.version, hash: desiredHash });
    return drifted;
  }

  #noteRollbacks(services: ObservedServiceLite[], hashes: ReadonlyMap<string, string>): void {
    const byService = new Map((this.#desired?.deployments ?? []).map((d) => [d.serviceId, d]));
    for (const s of services) {
      if (s.updateState !== 'rollback_completed') continue;
      const dep = byService.get(s.labels[LABEL.serviceId] ?? '');
      const desiredHash = dep ? hashes.get(dep.id) : undefined;
      if (!dep || !desiredHash || desiredHash === s.labels[LABEL.specHash]) continue;
      if (this.#rolledBack.get(dep.id) !== desiredHash) {
        this.#rolledBack.set(dep.id, desiredHash);
        this.#deps.logger.warn(
          { deploymentId: dep.id, message: s.updateMessage },
          'update rolled back by Swarm; not retried until the deployment changes',
        );
      }
    }
  }

  #notePending(hashes: ReadonlyMap<string, string>, now: number): void {
    for (const [id, hash] of hashes) {
      const p = this.#pendingSince.get(id);
      if (!p || p.hash !== hash) this.#pendingSince.set(id, { hash, since: this.#desired?.receivedAt ?? now });
    }
    for (const id of this.#pendingSince.keys()) if (!hashes.has(id)) this.#pendingSince.delete(id);
  }

  #applied(id: string, hash: string, now: number): void {
    const p = this.#pendingSince.get(id);
    if (!p || p.hash !== hash || p.since < 0) return;
    this.#deps.onApplied?.((now - p.since) / 1000);
    this.#pendingSince.set(id, { hash, since: -1 });
  }
}

/** A create refused because another service (not one of ours: the pass listed none for it) holds the name. */
function isNameTaken(a: Action, reason: unknown): boolean {
  const e = reason as { kind?: unknown; message?: unknown } | undefined;
  return a.kind === 'create' && e?.kind === 'conflict' && typeof e.message === 'string' && e.message.startsWith('creating service ');
}

function groupBy<T, K>(items: readonly T[], keyOf: (item: T) => K): Map<K, T[]> {
  const groups = new Map<K, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const group = groups.get(key);
    if (group) group.push(item);
    else groups.set(key, [item]);
  }
  return groups;
}

function errorText(r: PromiseSettledResult<unknown> | undefined): string {
  if (!r || r.status === 'fulfilled') return '';
  const e = r.reason as { message?: string };
  return String(e?.message ?? r.reason).slice(0, 500);
}
