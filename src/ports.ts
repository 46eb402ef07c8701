/**
 * The ports: every interface an adapter implements, and the shapes those interfaces speak in.
 * The agent (src/agent) depends on these, the Docker adapters (src/swarm) implement them, and
 * neither imports the other: src/cli wires one to the other.
 */
import type { buildNetworkSpec, ServiceSpec } from './domain/service-spec.js';
import type { OwnedSecret } from './domain/secret-gc.js';
import type { TaskObservation } from './domain/deployment-status.js';
import type { ObservedService } from './domain/observed-service.js';
import type { RegistryAuth } from './protocol/deployment.js';
import type { SwarmRole } from './protocol/worker.js';
import type { Secret } from './secret.js';

export type { Logger } from 'pino';

// ---- Swarm: what the reconciler reads and changes ----

/** What the reconciler needs from Swarm; src/swarm implements it over the Engine API. */
export interface SwarmPort {
  /** Services carrying this worker's ownership labels, each with its live spec and version: one Engine API call. */
  listServices(): Promise<ObservedService[]>;
  /**
   * Services carrying a deployment id but placed by something other than an agent (SkyPanelV2's
   * own orchestrator, or by hand): one Engine API call, made only when a pass would create.
   */
  listUnmanagedServices(): Promise<ObservedService[]>;
  /** Tasks of those services: one Engine API call. */
  listTasks(): Promise<TaskObservation[]>;
  createService(spec: ServiceSpec, auth?: RegistryAuth): Promise<string>;
  updateService(id: string, spec: ServiceSpec, auth?: RegistryAuth): Promise<void>;
  scaleService(id: string, replicas: number): Promise<void>;
  removeService(id: string): Promise<void>;
  ensureNetwork(spec: ReturnType<typeof buildNetworkSpec>): Promise<void>;
  /** Returns the Swarm secret id. */
  ensureSecret(name: string, value: Secret, labels: Record<string, string>): Promise<string>;
  /** Secrets carrying this worker's ownership labels: one Engine API call. */
  listSecrets(): Promise<OwnedSecret[]>;
  /** True when the secret is gone (or was already); false when Swarm still has a service using it. */
  removeSecret(id: string): Promise<boolean>;
  serviceLogs(id: string, tail: number): Promise<string[]>;
}

// ---- Engine facts: what registration and the heartbeat report ----

export interface EngineSummary {
  dockerVersion: string;
  dockerRootDir: string;
  swarmNodeId: string | null;
  swarmRole: SwarmRole;
}

export interface EngineSnapshot extends EngineSummary {
  containersRunning: number;
  /** The CPUs the engine sees (NCPU): no container's CPU limit may exceed them. */
  ncpu: number;
}

/** What the agent needs from Docker; implemented by src/swarm over the Engine API. */
export interface EngineProbe {
  snapshot(): Promise<EngineSnapshot>;
  close?(): Promise<void> | void;
}

// ---- Engine events: what starts a reconcile pass early ----

export interface EngineEvent {
  /** `container`, `service`, ... */
  type: string;
  /** `start`, `die`, `update`, ... (Docker's Action, e.g. `health_status: healthy`). */
  action: string;
  /** Actor.ID: the container or service id. */
  id: string;
  /** Actor.Attributes: a container's labels and name; a service's name. */
  attributes: Readonly<Record<string, string>>;
}

/** What a consumer of the stream is told. */
export interface EngineEventSink {
  onEvent(event: EngineEvent): void;
  /** true on every (re)connect; false with the reason when the stream is lost. */
  onLive(live: boolean, reason?: string): void;
}

// ---- Usage: what the meter reads ----

/** One container's cumulative counters at a sample. */
export interface MeterReading {
  containerId: string;
  deploymentId: string;
  serviceId: string;
  organizationId: string;
  /** When this run of the container started (State.StartedAt), epoch ms. */
  startedAtMs: number;
  /** Cumulative CPU time of the container's cgroup, ns. */
  cpuNs: number;
  /** Memory in use now, bytes: usage minus inactive file pages, as `docker stats` shows it. */
  memoryBytes: number;
  /** Cumulative rx+tx bytes summed over the container's interfaces. */
  networkBytes: number;
  /** Writable layer size, bytes, as last measured; undefined before the first measurement. */
  storageBytes?: number | undefined;
}

export interface MeterSample {
  /** Wall-clock time of the readings, epoch ms. */
  wallMs: number;
  /**
   * Wall-clock time the container list was taken, when earlier than wallMs: a container that
   * started after it cannot be in this sample, so on the very first sample it is new, not a baseline.
   */
  listedAtMs?: number;
  /** Monotonic time of the readings (same process); omit when unknown. */
  monoMs?: number;
  containers: readonly MeterReading[];
}

/** What the loop needs from a sampler (src/swarm/container-stats.ts implements it). */
export interface UsageSampler {
  sample(): Promise<MeterSample & { failed?: { count: number; error?: string }; via?: { cgroup: number; engine: number; note?: string } }>;
  /** Releases what the sampler keeps open between samples (counter files). */
  close?(): void;
}
