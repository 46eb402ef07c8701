import { deriveStatus, type DerivedStatus, type SchedulingBound, type TaskObservation } from '../../domain/deployment-status.js';
import type { Deployment } from '../../protocol/deployment.js';
import { fullJitter, type Random } from '../../controlplane/backoff.js';
import { driftedPaths } from '../../domain/drift.js';
import { LABEL } from '../../domain/labels.js';
import type { ObservedService } from '../../domain/observed-service.js';
import type { Action } from '../../domain/planner.js';
import type { BuiltService } from '../../domain/service-spec.js';
import type { DeploymentView } from '../status/status-model.js';

/** What the last pass derived for a deployment: the status API's view of it, and the base of its "stopped" report on removal. */
export interface DeploymentState {
  deployment: Deployment;
  derived: DerivedStatus;
  publicUrl: string | null;
  lastError: string | null;
}

/** Failed actions of one deployment: no action for it before `until`. */
export interface ActionBackoff {
  until: number;
  attempts: number;
  error: string;
  /** When a create was first refused because another service holds the name. */
  nameTakenSince?: number;
  /** Still inside the name wait: reported deploying (the holder is usually on its way out), not failed. */
  waiting?: boolean;
}

/**
 * Everything the reconciler remembers about one deployment between passes, in one place so that
 * forgetting a deployment is one delete. Every field is optional: a record is made by whichever
 * pass first has something to remember (a desired deployment, or a failed removal of a service
 * whose deployment is no longer desired) and each field is filled when that fact arises.
 */
export interface DeploymentRecord {
  /** What the last pass reported; absent for a deployment known only as the owner of a service to remove. */
  reported?: DeploymentState;
  backoff?: ActionBackoff;
  /** The desired spec hash Swarm rolled back from: not retried until the panel changes the deployment. */
  rolledBackFrom?: string;
  /** When the current desired spec hash was first seen, for desired→applied latency; since < 0 once applied. */
  pending?: { hash: string; since: number };
  /**
   * The service last found in step with the desired hash, at this Swarm version. Swarm bumps a
   * service's version on every change to it, by anyone, so while version and hash stay the same
   * it cannot have drifted, and the live spec is not projected and compared again.
   */
  inStep?: { swarmServiceId: string; version: number; hash: string };
}

/**
 * How long a create may wait for its service name to be freed before it counts as failed. Names
 * derive from the serviceId alone, so while the control plane moves a deployment between workers
 * the old worker's copy holds the name until that worker removes it (one poll and a pass).
 */
export const NAME_TAKEN_WAIT_MS = 120_000;
const NAME_TAKEN_RETRY_MS = 1_000;

/**
 * The backoff after a failed action: a taken name is retried every second while the wait lasts,
 * anything else (and a name still taken after the wait, which stays failed from then on) backs
 * off exponentially with full jitter, between 1 s and 5 min.
 */
export function backoffAfter(
  prev: ActionBackoff | undefined,
  failure: { error: string; nameTaken: boolean },
  now: number,
  random?: Random,
): ActionBackoff {
  const nameTakenSince = failure.nameTaken ? (prev?.nameTakenSince ?? now) : undefined;
  if (nameTakenSince !== undefined && now - nameTakenSince < NAME_TAKEN_WAIT_MS) {
    return { until: now + NAME_TAKEN_RETRY_MS, attempts: prev?.attempts ?? 0, error: failure.error, nameTakenSince, waiting: true };
  }
  const attempts = (prev?.attempts ?? 0) + 1;
  const delay = Math.max(1_000, fullJitter(attempts, { baseMs: 2_000, capMs: 300_000 }, random));
  return { until: now + delay, attempts, error: failure.error, ...(nameTakenSince !== undefined ? { nameTakenSince } : {}) };
}

/**
 * The fields of a service carrying the desired hash label that were changed by hand since; empty
 * when in step. Only looked for when the service changed since it was last found in step (see
 * `inStep`): projecting and comparing every spec on every resync was a third of a pass's CPU.
 */
export function driftOf(rec: DeploymentRecord, s: ObservedService, built: BuiltService): readonly string[] {
  if (s.spec === undefined || s.labels[LABEL.specHash] !== built.specHash) return [];
  const known = rec.inStep;
  if (known && known.swarmServiceId === s.id && known.version === s.version && known.hash === built.specHash) return [];
  const drifted = driftedPaths(built.spec, s.spec);
  if (drifted.length > 0) delete rec.inStep;
  else if (s.version !== undefined) rec.inStep = { swarmServiceId: s.id, version: s.version, hash: built.specHash };
  return drifted;
}

/** Seconds from the desired spec first seen to running, once per spec hash; undefined when already told or not this hash. */
export function appliedLatency(rec: DeploymentRecord, hash: string, now: number): number | undefined {
  const p = rec.pending;
  if (!p || p.hash !== hash || p.since < 0) return undefined;
  rec.pending = { hash, since: -1 };
  return (now - p.since) / 1000;
}

/** One desired deployment's status from what Swarm shows and how its actions fared, with the error the status API shows. */
export function deriveFor(
  d: Deployment,
  svc: ObservedService | undefined,
  tasks: readonly TaskObservation[],
  backoff: ActionBackoff | undefined,
  heldError: string | undefined,
  scheduling: SchedulingBound,
): { derived: DerivedStatus; lastError: string | null } {
  // Waiting for a taken name is deploying, not failed: the holder is usually on its way out.
  const waiting = backoff?.waiting === true;
  const derived = deriveStatus(d, svc, tasks, heldError ?? (waiting ? undefined : backoff?.error), scheduling);
  const lastError = heldError ?? backoff?.error ?? null;
  if (!waiting || svc) return { derived, lastError };
  const message = `waiting for the service name (held by a service this worker does not own, e.g. the previous worker's copy of a moved deployment): ${backoff.error}`;
  return { derived: { ...derived, message }, lastError };
}

/** A create refused because another service (not one of ours: the pass listed none for it) holds the name. */
export function isNameTaken(a: Action, reason: unknown): boolean {
  const e = reason as { kind?: unknown; message?: unknown } | undefined;
  return a.kind === 'create' && e?.kind === 'conflict' && typeof e.message === 'string' && e.message.startsWith('creating service ');
}

export function errorText(r: PromiseSettledResult<unknown> | undefined): string {
  if (!r || r.status === 'fulfilled') return '';
  const e = r.reason as { message?: string };
  return String(e?.message ?? r.reason).slice(0, 500);
}

/** The report for a deployment no longer assigned here, from what was last derived for it. */
export function stoppedNow(last: DerivedStatus): DerivedStatus {
  return {
    ...last,
    status: 'stopped',
    runningReplicas: 0,
    desiredReplicas: 0,
    containerId: null,
    message: 'no longer assigned to this worker',
  };
}

/** A deployment as the status API shows it: names of env vars and secrets, never their values. */
export function deploymentView({ deployment: d, derived, publicUrl, lastError }: DeploymentState): DeploymentView {
  return {
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
  };
}
