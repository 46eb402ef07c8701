/** Boundary types of the reference control plane. */

import type { StatusReport } from '../protocol/status-report.js';

export type WorkerStatus = 'pending' | 'active' | 'unhealthy' | 'draining' | 'offline';

export interface WorkerLoad {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  containerCount: number;
}

/**
 * One row of SkyPanelV2's `container_workers` table, camelCased, plus two reference-only fields
 * (`heartbeats`, `lastHeartbeatExtras`) that tests use to observe the agent.
 */
export interface WorkerRow {
  id: string;
  name: string;
  hostname: string;
  ipAddress: string;
  swarmNodeId: string | null;
  /** sha256 hex of the bearer token, as SkyPanelV2 stores it. */
  authTokenHash: string;
  status: WorkerStatus;
  /** JSONB as sent; stock does not type-check it on re-registration. */
  capacity: Record<string, unknown>;
  currentLoad: WorkerLoad;
  /** JSONB as sent (any JSON value; `{}` when the body had none). */
  metadata: unknown;
  lastHeartbeatAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  heartbeats: number;
  /** Heartbeat body fields beyond the four metrics (bootId, seq, sentAt, agentVersion, ...). */
  lastHeartbeatExtras: Record<string, unknown> | null;
}

export interface RequestRecord {
  method: string;
  /** Path without the query string. */
  path: string;
  /** 0 while the request is in flight, and for requests that got no answer (reset, client gone). */
  status: number;
  /** Arrival time, Date.now(). */
  at: number;
  /** When the answer was sent, Date.now() (a held call 3 arrives long before it is answered). */
  answeredAt?: number;
  /** The parsed JSON body, only when the request carried valid JSON with a JSON content type. */
  body?: unknown;
  /** Never the Authorization value itself: only whether one was sent. */
  headers: { authorization: boolean; contentType: string | null; ifNoneMatch?: string };
  /** Set when an injected fault answered (or dropped) this request. */
  fault?: Fault['kind'];
}

/**
 * Injected failures for exercising a client's retry logic against a real socket; they apply to
 * every request under /api/. `count` limits a fault to the next N requests. `delay` answers
 * normally after waiting (the request still takes effect if the client gave up); `garbage` is a
 * 200 whose body is HTML although the header says JSON; `reset` drops the connection with a RST.
 */
export type Fault = (
  | {
      kind: 'status';
      status: number;
      retryAfter?: string;
      /** More response headers, e.g. `RateLimit-Reset` as SkyPanelV2's limiter sends it. */
      headers?: Record<string, string>;
      body?: string;
      count?: number;
    }
  | { kind: 'delay'; ms: number; count?: number }
  | { kind: 'garbage'; count?: number }
  | { kind: 'reset'; count?: number }
) & {
  /** Only requests whose path ends with this (e.g. '/heartbeat'); others pass untouched and do not spend `count`. */
  pathEndsWith?: string;
};

export interface RateLimitOptions {
  max: number;
  windowMs: number;
}

export interface ReferenceControlPlaneOptions {
  host?: string;
  port?: number;
  /** Defaults to 32 random bytes, per instance. */
  jwtSecret?: string;
  /** Off by default; `skypanel-agent dev` passes SkyPanelV2's anonymous limit {max: 200, windowMs: 900000}. */
  rateLimit?: RateLimitOptions | false;
  logger?: (line: string) => void;
  /** Oldest request records are dropped beyond this many. Default 10000. */
  maxRecords?: number;
  /**
   * Serve the protocol extensions (desired set, status reports, usage). Default true; false answers
   * them with stock SkyPanelV2's 404 "API not found", for testing the agent's heartbeat-only mode.
   */
  extensions?: boolean;
  /** Bearer token of the /admin/ routes; 32 random bytes in hex by default. At least 16 characters. */
  adminToken?: string;
  /** Per worker: status reports (and usage records) kept, oldest dropped first. Default 50000. */
  maxReports?: number;
  /**
   * Announce (`data.deploymentsWait` on heartbeat answers) and serve the blocking desired-set query
   * with this longest wait, in seconds, as the panel half does. Off by default.
   */
  blockingWaitSec?: number;
}

/** One accepted, distinct status report. */
export interface StatusReportRecord {
  deploymentId: string;
  report: StatusReport;
  receivedAt: Date;
}
