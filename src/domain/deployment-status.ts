import type { Deployment } from '../protocol/deployment.js';
import { desiredReplicas } from './service-spec.js';
import type { ObservedService } from './observed-service.js';

/** Statuses the agent reports, exactly the `container_deployments.status` values it may set. */
export type ReportedStatus = 'deploying' | 'running' | 'stopped' | 'failed' | 'rolled_back';

export interface TaskObservation {
  serviceId: string;
  desiredState: string;
  state: string;
  message?: string;
  err?: string;
  containerId?: string;
  exitCode?: number;
  timestamp: string;
  /** When Swarm made the task (ISO); absent where it is not known (observe mode reads containers). */
  createdAt?: string;
  hostPorts: { target: number; published: number }[];
  /** Swarm secrets the task's spec mounts (absent where the port cannot tell: observe mode). */
  secretNames?: string[];
}

/** How long a task may wait for Swarm to place it, and the clock to measure with. */
export interface SchedulingBound {
  now: number;
  failAfterMs: number;
}

/** States of a task Swarm has not placed yet: `new` (resources such as a network address not allocated) and `pending` (no node fits). */
const UNSCHEDULED = new Set(['new', 'pending']);

/**
 * The oldest task that should run but has waited longer than the bound for Swarm to place it,
 * with Swarm's own reason. A task left in `new` carries no error at all (Docker 20.10's allocator
 * says nothing when an overlay network has no free address), so the reason is named for it.
 */
function unscheduled(tasks: readonly TaskObservation[], bound: SchedulingBound): string | undefined {
  let oldest: { task: TaskObservation; age: number } | undefined;
  for (const t of tasks) {
    if (t.desiredState !== 'running' || !UNSCHEDULED.has(t.state) || !t.createdAt) continue;
    const age = bound.now - Date.parse(t.createdAt);
    if (!(age > bound.failAfterMs) || (oldest && oldest.age >= age)) continue;
    oldest = { task: t, age };
  }
  if (!oldest) return undefined;
  const { task } = oldest;
  const why =
    task.err ||
    (task.state === 'new'
      ? 'Swarm has not allocated its resources (no error given: usually no free address on its network)'
      : task.message || 'no node accepts it');
  // The bound, not the age, so the message (and so the report) stays the same from pass to pass.
  return `a task has waited more than ${Math.round(bound.failAfterMs / 1000)} s for Swarm to schedule it (${task.state}): ${why}`;
}

/** When the next unscheduled task crosses the bound (epoch ms), so a pass can look then; undefined when none is waiting. */
export function nextSchedulingDeadline(tasks: readonly TaskObservation[], bound: SchedulingBound): number | undefined {
  let next: number | undefined;
  for (const t of tasks) {
    if (t.desiredState !== 'running' || !UNSCHEDULED.has(t.state) || !t.createdAt) continue;
    const at = Date.parse(t.createdAt) + bound.failAfterMs;
    if (at > bound.now && (next === undefined || at < next)) next = at;
  }
  return next;
}

export interface DerivedStatus {
  status: ReportedStatus;
  swarmServiceId: string | null;
  containerId: string | null;
  externalPort: number | null;
  runningReplicas: number;
  desiredReplicas: number;
  /** Why, when the status is failed or rolled back (task error, update message, executor error). */
  message: string | null;
}

const TERMINAL_FAILURES = new Set(['failed', 'rejected']);

/**
 * Swarm's view of one deployment → the status to report. A deployment is `failed` only when no
 * replica runs and its tasks keep failing (two failures, or one rejection such as a missing
 * image), so a single restart does not flap the status.
 */
export function deriveStatus(
  d: Deployment,
  /** Only what the derivation reads, so it stays testable without a whole service. */
  service: Pick<ObservedService, 'id' | 'replicas' | 'updateState' | 'updateMessage'> | undefined,
  tasks: readonly TaskObservation[],
  executorError?: string,
  scheduling?: SchedulingBound,
): DerivedStatus {
  const desired = desiredReplicas(d);
  const own = service ? tasks.filter((t) => t.serviceId === service.id) : [];
  const running = own.filter((t) => t.state === 'running' && t.desiredState === 'running');
  const newest = [...running].sort((a, b) => b.timestamp.localeCompare(a.timestamp))[0];
  const port = d.internalPort === undefined ? undefined : newest?.hostPorts.find((p) => p.target === d.internalPort)?.published;
  const base = {
    swarmServiceId: service?.id ?? null,
    containerId: newest?.containerId ?? null,
    externalPort: port ?? d.externalPort ?? null,
    runningReplicas: running.length,
    desiredReplicas: desired,
  };
  if (!service) {
    return {
      ...base,
      status: executorError ? 'failed' : d.desiredState === 'stopped' ? 'stopped' : 'deploying',
      message: executorError ?? null,
    };
  }
  if (service.updateState === 'rollback_completed' || service.updateState === 'rollback_paused') {
    return { ...base, status: 'rolled_back', message: service.updateMessage ?? 'update rolled back' };
  }
  if (desired === 0) {
    return { ...base, status: running.length === 0 ? 'stopped' : 'deploying', message: null };
  }
  if (running.length >= desired && service.replicas === desired) return { ...base, status: 'running', message: null };
  // Swarm keeps trying to place such a task by itself, so this turns running again once it can.
  const stuck = scheduling ? unscheduled(own, scheduling) : undefined;
  if (stuck) return { ...base, status: 'failed', message: stuck };
  if (running.length === 0) {
    const failures = own.filter((t) => TERMINAL_FAILURES.has(t.state)).sort((a, b) => b.timestamp.localeCompare(a.timestamp));
    const rejected = failures.some((t) => t.state === 'rejected');
    if (failures.length >= 2 || rejected) {
      const last = failures[0]!;
      const exit = last.exitCode !== undefined && last.exitCode !== 0 ? ` (exit code ${last.exitCode})` : '';
      return { ...base, status: 'failed', message: `${last.err || last.message || last.state}${exit}` };
    }
  }
  if (executorError) return { ...base, status: 'failed', message: executorError };
  return { ...base, status: 'deploying', message: null };
}

/**
 * The public URL reported for a deployment: the operator's `publicUrlTemplate` with {ipAddress}
 * (the worker's, bracketed when IPv6), {externalPort} (the published host port), {slug} and
 * {serviceId} (both URL-encoded) filled in; other braces are left as written. Null until a port is
 * known, so no report points somewhere wrong. The one renderer: the README's config table lists the same set.
 */
export function renderPublicUrl(
  template: string,
  values: { ipAddress: string; externalPort: number | null; slug: string; serviceId: string },
): string | null {
  if (values.externalPort === null) return null;
  const host = values.ipAddress.includes(':') ? `[${values.ipAddress}]` : values.ipAddress;
  return template.replace(/\{(ipAddress|externalPort|slug|serviceId)\}/g, (_m, key: string) =>
    key === 'ipAddress'
      ? host
      : key === 'externalPort'
        ? String(values.externalPort)
        : key === 'slug'
          ? encodeURIComponent(values.slug)
          : encodeURIComponent(values.serviceId),
  );
}
