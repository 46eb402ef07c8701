import type { Deployment } from '../protocol/deployment.js';
import { desiredReplicas } from './service-spec.js';

/** Statuses the agent reports, exactly the `container_deployments.status` values it may set. */
export type ReportedStatus = 'deploying' | 'running' | 'stopped' | 'failed' | 'rolled_back';

/** The minimum the derivation needs from Swarm, so it stays pure and testable without Docker. */
export interface ServiceObservation {
  id: string;
  replicas: number;
  specHash?: string;
  updateState?: string;
  updateMessage?: string;
}

export interface TaskObservation {
  serviceId: string;
  desiredState: string;
  state: string;
  message?: string;
  err?: string;
  containerId?: string;
  exitCode?: number;
  timestamp: string;
  hostPorts: { target: number; published: number }[];
  /** Swarm secrets the task's spec mounts (absent where the port cannot tell: observe mode). */
  secretNames?: string[];
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
export function deriveStatus(d: Deployment, service: ServiceObservation | undefined, tasks: readonly TaskObservation[], executorError?: string): DerivedStatus {
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
    return { ...base, status: executorError ? 'failed' : d.desiredState === 'stopped' ? 'stopped' : 'deploying', message: executorError ?? null };
  }
  if (service.updateState === 'rollback_completed' || service.updateState === 'rollback_paused') {
    return { ...base, status: 'rolled_back', message: service.updateMessage ?? 'update rolled back' };
  }
  if (desired === 0) {
    return { ...base, status: running.length === 0 ? 'stopped' : 'deploying', message: null };
  }
  if (running.length >= desired && service.replicas === desired) return { ...base, status: 'running', message: null };
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

/** `http://{ipAddress}:{externalPort}` by default; null until a port is known. */
export function renderPublicUrl(template: string, values: { ipAddress: string; externalPort: number | null; slug: string; serviceId: string }): string | null {
  if (values.externalPort === null) return null;
  const host = values.ipAddress.includes(':') ? `[${values.ipAddress}]` : values.ipAddress;
  return template.replace(/\{(ipAddress|externalPort|slug|serviceId)\}/g, (_m, key: string) =>
    key === 'ipAddress' ? host : key === 'externalPort' ? String(values.externalPort) : key === 'slug' ? encodeURIComponent(values.slug) : encodeURIComponent(values.serviceId),
  );
}
