/**
 * What the Swarm adapter (swarm-reader.ts, swarm-writer.ts) hands to the reconciler: plain data
 * decoupled from Docker's JSON, and one error type for everything that goes wrong.
 */
import type { ObservedService } from '../domain/observed-service.js';
import { redact } from '../secret.js';

/** Swarm's task states, in lifecycle order (Engine API TaskState). */
export const TASK_STATES = [
  'new',
  'pending',
  'assigned',
  'accepted',
  'preparing',
  'ready',
  'starting',
  'running',
  'complete',
  'shutdown',
  'failed',
  'rejected',
  'remove',
  'orphaned',
] as const;

export type TaskState = (typeof TASK_STATES)[number];

/** States a task never leaves: its container (if any) has exited or never existed. */
export const TERMINAL_TASK_STATES: ReadonlySet<TaskState> = new Set(['complete', 'shutdown', 'failed', 'rejected', 'remove', 'orphaned']);

export interface ObservedPort {
  target: number;
  /** Absent for host-mode ports left to Docker: the chosen port is per task (ObservedTask.hostPorts). */
  published?: number;
  mode: 'host' | 'ingress';
}

/** A service as seen (the domain's ObservedService) with the details a listing shows and the reconciler does not need. */
export interface ObservedServiceDetail extends ObservedService {
  /** Swarm's object version: an update must name the version it was based on. */
  version: number;
  image: string;
  publishedPorts: ObservedPort[];
  createdAt: string;
  updatedAt: string;
}

export interface ObservedTask {
  id: string;
  serviceId: string;
  nodeId: string;
  slot?: number;
  desiredState: TaskState;
  state: TaskState;
  message: string;
  err?: string;
  containerId?: string;
  /** Only once the task's container has exited: a running task's ExitCode is a meaningless 0. */
  exitCode?: number;
  timestamp: string;
  /** When Swarm made the task: how long an unscheduled one has waited. */
  createdAt?: string;
  /** Host-mode ports as bound on the node, Docker's choice included when the spec left it open. */
  hostPorts: { target: number; published: number }[];
  /** Names of the Swarm secrets the task's spec mounts. */
  secretNames: string[];
}

export interface ObservedSecret {
  id: string;
  name: string;
  labels: Record<string, string>;
  createdAt: string;
  updatedAt: string;
}

export type SwarmErrorKind = 'not-manager' | 'not-found' | 'conflict' | 'unavailable' | 'rejected' | 'other';

/**
 * The only error the adapter throws. `message` and `dockerMessage` have every value the caller
 * revealed for the call (secret data, registry password) cut out: Docker quotes request fields
 * back in its errors (an invalid image reference, for one), and these messages reach logs and the
 * control plane. The original error is deliberately not kept as `cause`: its text is unscrubbed.
 */
export class SwarmError extends Error {
  readonly code = 'SKP_ERR_SWARM' as const;
  readonly kind: SwarmErrorKind;
  readonly statusCode: number | undefined;
  /** Docker's own text (scrubbed), or the transport error for 'unavailable'. */
  readonly dockerMessage: string;

  constructor(kind: SwarmErrorKind, message: string, opts: { statusCode?: number; dockerMessage?: string } = {}) {
    super(message);
    this.name = 'SwarmError';
    this.kind = kind;
    this.statusCode = opts.statusCode;
    this.dockerMessage = opts.dockerMessage ?? message;
  }
}

const MAX_MESSAGE = 500;

/** Docker echoes what it was sent (an image reference, a secret's data in base64): `redact` knows every spelling. */
export function scrub(text: string, revealed: readonly string[], maxLength?: number): string {
  return redact(text, revealed, maxLength === undefined ? {} : { maxLength });
}

interface EngineErrorShape {
  statusCode?: number;
  json?: unknown;
  reason?: string;
  message?: string;
  code?: string;
  name?: string;
}

function dockerText(e: EngineErrorShape): string {
  const j = e.json;
  if (j && typeof j === 'object' && !Buffer.isBuffer(j) && typeof (j as { message?: unknown }).message === 'string')
    return (j as { message: string }).message;
  if (Buffer.isBuffer(j) && j.length > 0) return j.toString('utf8');
  // Transport errors (no HTTP status): "connect ENOENT /var/run/docker.sock", "socket hang up", AbortError.
  return e.message ?? e.code ?? String(e);
}

export function classify(statusCode: number | undefined, text: string): SwarmErrorKind {
  if (statusCode === undefined) return 'unavailable';
  // 503 on a worker ("This node is not a swarm manager") and on a node outside any swarm; 406 is the latter on some endpoints.
  if ((statusCode === 503 || statusCode === 406) && /swarm/i.test(text)) return 'not-manager';
  if (statusCode === 503) return 'unavailable';
  if (statusCode === 404) return 'not-found';
  // Concurrent network creates lose with a 500 "rpc error: ... name conflicts with an existing object", not 409.
  if (statusCode === 409 || /AlreadyExists|already exists|name conflicts/i.test(text)) return 'conflict';
  if (statusCode === 400 || /code = InvalidArgument/.test(text)) return 'rejected';
  return 'other';
}

/** Rebuilds any failure of an Engine API call as a scrubbed SwarmError; `action` names what was attempted. */
export function toSwarmError(action: string, err: unknown, revealed: readonly string[] = []): SwarmError {
  if (err instanceof SwarmError) {
    const msg = scrub(err.message, revealed);
    return msg === err.message
      ? err
      : new SwarmError(err.kind, msg, { statusCode: err.statusCode, dockerMessage: scrub(err.dockerMessage, revealed) });
  }
  const e = (err ?? {}) as EngineErrorShape;
  const statusCode = typeof e.statusCode === 'number' ? e.statusCode : undefined;
  const text = scrub(dockerText(e), revealed, MAX_MESSAGE);
  return new SwarmError(classify(statusCode, text), `${action}: ${text}`, { statusCode, dockerMessage: text });
}
