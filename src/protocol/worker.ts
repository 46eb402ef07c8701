import { z } from 'zod';
import { redact, type SecretLike } from '../secret.js';

/**
 * Protocol v1, worker calls served by stock SkyPanelV2 (docs/PROTOCOL.md is the prose version).
 * Request bodies are typed here; responses are validated here before the agent trusts them.
 */
export const PROTOCOL_VERSION = 1;

export type SwarmRole = 'manager' | 'worker' | 'none';
export type ReconcileMode = 'manager' | 'remote-manager' | 'observe' | 'none';

export interface RegisterRequest {
  hostname: string;
  ipAddress: string;
  capacity: { cpuCores: number; memoryMb: number; diskGb: number };
  metadata: {
    agentVersion: string;
    osVersion: string;
    dockerVersion: string;
    swarmNodeId: string | null;
    swarmRole: SwarmRole;
    reconcileMode: ReconcileMode;
    protocolVersion: number;
    name?: string;
    labels: Record<string, string>;
  };
}

export interface HeartbeatRequest {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  containerCount: number;
  bootId: string;
  seq: number;
  sentAt: string;
  agentVersion: string;
  swarmNodeId: string | null;
  dockerHealthy: boolean;
  /** `skypanel-agent drain` was run on this host: nothing new is started here. */
  draining?: boolean;
}

/** SkyPanelV2 answers 201 with the worker row; only `id` matters to the agent. */
export const registerResponseSchema = z.object({
  success: z.literal(true),
  data: z
    .object({
      id: z
        .string()
        .min(1)
        .max(128)
        .regex(/^[A-Za-z0-9_.-]+$/),
    })
    .passthrough(),
});

/** An entity tag as HTTP writes it: optional `W/`, then a quoted string of visible characters. */
const ETAG = /^(?:W\/)?"[\x21\x23-\x7e]{0,200}"$/;

/**
 * The desired-set hint a panel with the extensions adds to a heartbeat's 200 answer:
 * `{"data": {"deploymentsEtag": "\"…\""}}`. Undefined when absent (stock SkyPanelV2) or malformed:
 * a hint only spares polls, so a bad one is ignored and the agent polls as without it.
 */
export function deploymentsEtagHint(body: unknown): string | undefined {
  const data = body && typeof body === 'object' ? (body as Record<string, unknown>).data : undefined;
  const etag = data && typeof data === 'object' ? (data as Record<string, unknown>).deploymentsEtag : undefined;
  return typeof etag === 'string' && ETAG.test(etag) ? etag : undefined;
}

/**
 * The blocking desired-set query's announcement in a heartbeat's 200 answer: `{"data":
 * {"deploymentsWait": 300}}`, the longest `?wait=` (seconds) the panel holds call 3 for.
 * Undefined when absent (stock SkyPanelV2, the panel's change feed down) or not a whole number
 * of seconds in 1..3600: the agent then polls.
 */
export function deploymentsWaitHint(body: unknown): number | undefined {
  const data = body && typeof body === 'object' ? (body as Record<string, unknown>).data : undefined;
  const wait = data && typeof data === 'object' ? (data as Record<string, unknown>).deploymentsWait : undefined;
  return typeof wait === 'number' && Number.isInteger(wait) && wait >= 1 && wait <= 3600 ? wait : undefined;
}

/**
 * The worker's status as the panel holds it, when a heartbeat answer carries it (`data.status`;
 * the panel half on SkyPanelV2's tables does, stock SkyPanelV2 does not): `draining` there is an
 * admin's drain. Undefined when absent or not one of SkyPanelV2's worker statuses.
 */
export function panelWorkerStatus(body: unknown): 'pending' | 'active' | 'unhealthy' | 'draining' | 'offline' | undefined {
  const data = body && typeof body === 'object' ? (body as Record<string, unknown>).data : undefined;
  const status = data && typeof data === 'object' ? (data as Record<string, unknown>).status : undefined;
  return status === 'pending' || status === 'active' || status === 'unhealthy' || status === 'draining' || status === 'offline'
    ? status
    : undefined;
}

/**
 * Error bodies come in three shapes on SkyPanelV2: `{success:false, error:{code,message}}`,
 * `{error, message}` (401 from the auth middleware) and `{success:false, error:"API not found"}`.
 */
export function describeErrorBody(body: unknown, secrets: readonly SecretLike[] = []): { code?: string; message?: string } {
  if (!body || typeof body !== 'object') return {};
  const b = body as Record<string, unknown>;
  const err = b.error;
  // Redacted before the cut: a panel echoing the token must not leave its head in a 300-character message.
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? redact(v, secrets, { maxLength: 300 }) : undefined);
  if (err && typeof err === 'object') {
    const e = err as Record<string, unknown>;
    return { code: str(e.code), message: str(e.message) };
  }
  return { code: str(err), message: str(b.message) ?? str(err) };
}
