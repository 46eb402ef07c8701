import type { StateDirHealth } from '../state/state-store.js';

/**
 * What the status API serves: plain, secret-free views built by the agent. The HTTP layer
 * (status-server.ts) renders these and nothing else, so redaction happens once, where views are built.
 */
export interface HeartbeatView {
  at: string;
  outcome: string;
  status?: number;
  rttMs?: number;
  message?: string;
}

/** The control plane asked the agent to wait (429/503 with Retry-After): no heartbeat is sent before `until`. */
export interface ControlPlaneWaitView {
  until: string;
  reason: string;
}

export interface ReconcilePassView {
  at: string;
  durationMs: number;
  actions: { kind: string; deploymentId?: string; ok: boolean; error?: string }[];
}

export interface StatusView {
  workerId: string;
  agentVersion: string;
  uptimeSec: number;
  bootId: string;
  swarm: { nodeId: string | null; role: 'manager' | 'worker' | 'none'; reconcileMode: string };
  dockerHealthy: boolean;
  /** The Engine API socket this agent talks to and where that choice came from, e.g. `unix:///var/run/docker.sock (default)`. */
  docker: { endpoint: string };
  capacity: { cpuCores: number; memoryMb: number; diskGb: number } | null;
  load: { cpuPercent: number; memoryPercent: number; diskPercent: number; containerCount: number } | null;
  lastHeartbeat: HeartbeatView | null;
  /** Set while the heartbeat waits out a wait the control plane asked for (capped at 15 minutes). */
  controlPlaneWait: ControlPlaneWaitView | null;
  lastReconcile: ReconcilePassView | null;
  deployments: Record<string, number>;
  /** Files of the state directory that could not be written (the agent works from memory) or were moved aside at load. */
  stateDir: StateDirHealth;
  /** Whether the panel serves the deployments API: 'heartbeat-only' against a stock SkyPanelV2. */
  deploymentsApi: 'unknown' | 'available' | 'heartbeat-only';
  /** Why deployments are not applied here (heartbeat-only mode), or null when they are. */
  heartbeatOnly: string | null;
}

/** Why this agent only heartbeats, or null; `mode` is undefined while Docker has not answered. */
export function heartbeatOnlyReason(api: StatusView['deploymentsApi'], mode: string | undefined): string | null {
  if (api === 'heartbeat-only')
    return 'the control plane has no deployments API (stock SkyPanelV2): deployments are neither fetched nor applied';
  if (mode === 'none') return 'this engine is in no swarm: deployments are fetched but cannot run here';
  return null;
}

export interface DeploymentView {
  id: string;
  serviceId: string;
  slug: string;
  imageTag: string;
  desiredState: 'running' | 'stopped';
  observedStatus: string;
  swarmServiceId: string | null;
  replicas: { running: number; desired: number };
  publicUrl: string | null;
  lastError: string | null;
  /** Names only: values may be secrets and are never served. */
  environmentVarNames: string[];
  secretNames: string[];
  /** Set when the panel sent this deployment malformed: reported failed, never applied. */
  rejected?: { field: string; message: string };
}

/** Implemented by the running agent; the status server only reads through this. */
export interface StatusSource {
  status(): StatusView;
  /** Seconds since the agent loop last made progress (heartbeat attempt or reconcile pass). */
  loopStalledForSec(): number;
  /** Intervals (seconds) after which a stalled loop counts as wedged. */
  wedgedAfterSec(): number;
  /**
   * Why the agent works but not fully (null: it does), e.g. a state directory it cannot write:
   * /healthz answers 200 `degraded` with this reason, since a restart would not help.
   */
  degradedReason?(): string | null;
  /** The wait the control plane asked for, while it lasts; /healthz says so instead of "ok". */
  controlPlaneWait?(): ControlPlaneWaitView | null;
  deployments(): DeploymentView[];
  deploymentLogs?(id: string, lines: number): Promise<string[]>;
  /** GET /v1/usage: the usage meter's open periods and unsent records (UsageLoop.view()); absent when metering is off. */
  usage?(): unknown;
  /**
   * Every secret value the agent currently holds (registry passwords, secret data). The status
   * server strips them from any body as a last defence; the worker token is added by the server.
   */
  secretValues?(): string[];
}
