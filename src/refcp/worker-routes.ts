import { hashToken, verify, type JwtPayload } from '../skypanel/jwt.js';
import { PgError, pgInet, pgJsonb, pgUuid, pgVarchar } from './pg-columns.js';
import {
  METRIC_KEYS,
  classifyHeartbeatError,
  classifyRegisterError,
  heartbeatFieldsError,
  prop,
  registerFieldsError,
  rejection,
  statusForLoad,
  validateMetrics,
  validateWorkerInfo,
  type WorkerInfo,
} from '../skypanel/validation.js';
import type { WorkerRow } from './types.js';

/**
 * The two worker-facing routes of SkyPanelV2 (api/routes/workers.ts + WorkerService) over an
 * in-memory `container_workers` table. Handlers are synchronous, so each one is atomic the way
 * the single SQL statement it stands for is.
 */

export interface Reply {
  status: number;
  body: unknown;
}

export type AuthResult = { ok: true; token: string; claims: JwtPayload } | { ok: false; reply: Reply };

function unauthorized(message: string): AuthResult {
  return { ok: false, reply: { status: 401, body: { error: 'Unauthorized', message } } };
}

/** api/middleware/workerAuth.ts authenticateWorker. */
export function authenticateWorker(header: string | undefined, secret: string): AuthResult {
  if (!header || !header.startsWith('Bearer ')) return unauthorized('Worker authentication token required');
  const token = header.substring(7);
  if (!token) return unauthorized('Invalid worker authentication token');
  const verified = verify(token, secret);
  if (!verified.ok) return unauthorized('Invalid or expired worker token');
  if (verified.payload.type !== 'worker') return unauthorized('Invalid token type');
  return { ok: true, token, claims: verified.payload };
}

/** WorkerService.mapRowToWorker then res.json: null swarmNodeId and lastHeartbeatAt are omitted. */
export function workerJson(row: WorkerRow): Record<string, unknown> {
  return {
    id: row.id,
    name: row.name,
    hostname: row.hostname,
    ipAddress: row.ipAddress,
    swarmNodeId: row.swarmNodeId || undefined,
    authTokenHash: row.authTokenHash,
    status: row.status,
    capacity: row.capacity,
    currentLoad: row.currentLoad,
    lastHeartbeatAt: row.lastHeartbeatAt?.toISOString(),
    metadata: row.metadata,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

export interface RegisterContext {
  body: unknown;
  token: string;
  claims: JwtPayload;
  workers: Map<string, WorkerRow>;
  now: Date;
}

/** POST /api/workers/register. */
export function handleRegister(ctx: RegisterContext): Reply {
  try {
    const fieldsError = registerFieldsError(ctx.body);
    if (fieldsError !== null) return rejection(400, 'VALIDATION_ERROR', fieldsError);
    const info: WorkerInfo = {
      hostname: prop(ctx.body, 'hostname'),
      ipAddress: prop(ctx.body, 'ipAddress'),
      capacity: prop(ctx.body, 'capacity'),
      metadata: prop(ctx.body, 'metadata'),
    };
    const row = registerWorker(ctx, info);
    return { status: 201, body: { success: true, data: workerJson(row) } };
  } catch (err) {
    return classifyRegisterError(err);
  }
}

function registerWorker(ctx: RegisterContext, info: WorkerInfo): WorkerRow {
  const workerId = ctx.claims.workerId;
  // `WHERE id = NULL` matches nothing; any other non-uuid makes Postgres reject the SELECT.
  const id = workerId === undefined || workerId === null ? null : pgUuid(workerId);
  const existing = id === null ? undefined : ctx.workers.get(id);
  if (existing !== undefined) {
    // Stock skips validateWorkerInfo here, so only the column types stand in the way.
    updateRegistration(existing, info, ctx);
    return existing;
  }
  validateWorkerInfo(info);
  const name = `worker-${info.hostname as string}`;
  if (id === null) {
    throw new PgError('null value in column "id" of relation "container_workers" violates not-null constraint');
  }
  const metadata = pgJsonb(info.metadata || {});
  const row: WorkerRow = {
    id,
    name: pgVarchar(name, 255),
    hostname: pgVarchar(info.hostname, 255),
    ipAddress: pgInet(info.ipAddress),
    // Like stock: the INSERT leaves swarm_node_id (UNIQUE) empty; the node id travels in metadata.
    swarmNodeId: null,
    authTokenHash: hashToken(ctx.token),
    status: 'active',
    capacity: pgJsonb(info.capacity) as Record<string, unknown>,
    currentLoad: { cpuPercent: 0, memoryPercent: 0, diskPercent: 0, containerCount: 0 },
    metadata,
    lastHeartbeatAt: ctx.now,
    createdAt: ctx.now,
    updatedAt: ctx.now,
    heartbeats: 0,
    lastHeartbeatExtras: null,
  };
  ctx.workers.set(id, row);
  return row;
}

function updateRegistration(row: WorkerRow, info: WorkerInfo, ctx: RegisterContext): void {
  // Convert every column before touching the row: an UPDATE either applies whole or not at all.
  const next = {
    hostname: pgVarchar(info.hostname, 255),
    ipAddress: pgInet(info.ipAddress),
    capacity: pgJsonb(info.capacity) as Record<string, unknown>,
    metadata: pgJsonb(info.metadata || {}),
    authTokenHash: hashToken(ctx.token),
  };
  Object.assign(row, next, { status: 'active', lastHeartbeatAt: ctx.now, updatedAt: ctx.now });
}

export interface HeartbeatContext {
  id: string;
  body: unknown;
  claims: JwtPayload;
  workers: Map<string, WorkerRow>;
  now: Date;
}

/** POST /api/workers/:id/heartbeat. */
export function handleHeartbeat(ctx: HeartbeatContext): Reply {
  try {
    const missing = heartbeatFieldsError(ctx.body);
    if (missing !== null) return rejection(400, 'VALIDATION_ERROR', missing);
    const metrics = validateMetrics(ctx.body);
    // Stock validates before its UPDATE, so a malformed id only surfaces as Postgres' 500.
    const id = pgUuid(ctx.id);

    // DIVERGENCE from stock SkyPanelV2, on purpose. Stock runs `UPDATE ... WHERE id = $5` and
    // answers 200 whatever the row count, so an agent whose row was deleted heartbeats into the
    // void forever, and any worker token may heartbeat on behalf of any worker. Protocol v1
    // specifies 403 for a token/path mismatch and 404 for an unknown worker, so that the agent
    // knows to re-register; the reference enforces that contract.
    const tokenWorkerId = ctx.claims.workerId;
    if (typeof tokenWorkerId !== 'string' || tokenWorkerId.toLowerCase() !== id) {
      return rejection(403, 'FORBIDDEN', 'Token does not belong to this worker');
    }
    const row = ctx.workers.get(id);
    if (row === undefined) return rejection(404, 'WORKER_NOT_FOUND', 'Worker not found');

    // fromEntries defines own properties, so a "__proto__" field stays data instead of a prototype.
    const extras: Record<string, unknown> = Object.fromEntries(
      Object.entries(ctx.body as Record<string, unknown>)
        .filter(([key]) => !(METRIC_KEYS as readonly string[]).includes(key))
        .map(([key, value]) => [key, structuredClone(value)]),
    );
    row.currentLoad = metrics;
    row.lastHeartbeatExtras = extras;
    row.lastHeartbeatAt = ctx.now;
    row.status = statusForLoad(metrics);
    row.updatedAt = ctx.now;
    row.heartbeats++;
    return { status: 200, body: { success: true, message: 'Heartbeat received' } };
  } catch (err) {
    return classifyHeartbeatError(err);
  }
}
