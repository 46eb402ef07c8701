import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import { etagMatches } from '../protocol/etag.js';
import { describeIssue, statusReportSchema } from '../protocol/status-report.js';
import { usageBatchSchema } from '../protocol/usage.js';
import { sendJson } from '../skypanel/express.js';
import type { JwtPayload } from '../skypanel/jwt.js';
import { workerKey, type ExtensionStore, type WorkerExtensionState } from './extension-store.js';
import { rejection } from '../skypanel/validation.js';
import type { WorkerRow } from './types.js';
import { authenticateWorker, type Reply } from './worker-routes.js';

/**
 * The worker-facing protocol extensions stock SkyPanelV2 lacks: the desired set, status reports and
 * usage. They share the stock routes' authentication and error shapes, and their token/worker rule
 * (403 when the token belongs to another worker, 404 when the worker row does not exist).
 */

export type ExtensionRoute =
  | { kind: 'deployments'; id: string }
  | { kind: 'status'; id: string; deploymentId: string }
  | { kind: 'usage'; id: string }
  | { kind: 'bad-param' } // a path parameter that cannot be percent-decoded
  | { kind: 'none' };

// Express 4 semantics, as for the stock routes: case-insensitive, one optional trailing slash.
const DEPLOYMENTS = /^\/api\/workers\/([^/]+?)\/deployments\/?$/i;
const STATUS = /^\/api\/workers\/([^/]+?)\/deployments\/([^/]+?)\/status\/?$/i;
const USAGE = /^\/api\/workers\/([^/]+?)\/usage\/?$/i;

function decode(parts: (string | undefined)[]): string[] | null {
  try {
    return parts.map((p) => decodeURIComponent(p ?? ''));
  } catch {
    return null;
  }
}

export function matchExtensionRoute(method: string | undefined, path: string): ExtensionRoute {
  // Express answers HEAD with the GET route.
  if (method === 'GET' || method === 'HEAD') {
    const m = DEPLOYMENTS.exec(path);
    if (m === null) return { kind: 'none' };
    const [id] = decode([m[1]]) ?? [];
    return id === undefined ? { kind: 'bad-param' } : { kind: 'deployments', id };
  }
  if (method !== 'POST') return { kind: 'none' };
  const status = STATUS.exec(path);
  if (status !== null) {
    const [id, deploymentId] = decode([status[1], status[2]]) ?? [];
    return id === undefined || deploymentId === undefined ? { kind: 'bad-param' } : { kind: 'status', id, deploymentId };
  }
  const usage = USAGE.exec(path);
  if (usage === null) return { kind: 'none' };
  const [id] = decode([usage[1]]) ?? [];
  return id === undefined ? { kind: 'bad-param' } : { kind: 'usage', id };
}

export interface ExtensionContext {
  body: unknown;
  jwtSecret: string;
  workers: Map<string, WorkerRow>;
  store: ExtensionStore;
  now: Date;
}

const INTERNAL_ERROR = { success: false, error: 'Internal server error' };

/** Answers a matched extension route (never `none`). */
export function serveExtension(route: ExtensionRoute, req: IncomingMessage, res: ServerResponse, ctx: ExtensionContext): void {
  if (route.kind === 'none' || route.kind === 'bad-param') return sendJson(res, 500, INTERNAL_ERROR);
  const auth = authenticateWorker(req.headers.authorization, ctx.jwtSecret);
  if (!auth.ok) return sendJson(res, auth.reply.status, auth.reply.body);
  const denied = checkWorker(route.id, auth.claims, ctx.workers);
  if (denied !== null) return sendJson(res, denied.status, denied.body);
  const state = ctx.store.stateOf(route.id);
  if (route.kind === 'deployments') return sendDeployments(req, res, state);
  const reply = route.kind === 'status' ? handleStatus(route.id, route.deploymentId, state, ctx) : handleUsage(route.id, ctx);
  sendJson(res, reply.status, reply.body);
}

/** The heartbeat's rule: the token must name this worker, and the worker must exist. */
function checkWorker(id: string, claims: JwtPayload, workers: Map<string, WorkerRow>): Reply | null {
  const tokenWorkerId = claims.workerId;
  if (typeof tokenWorkerId !== 'string' || workerKey(tokenWorkerId) !== workerKey(id)) {
    return rejection(403, 'FORBIDDEN', 'Token does not belong to this worker');
  }
  if (!workers.has(workerKey(id))) return rejection(404, 'WORKER_NOT_FOUND', 'Worker not found');
  return null;
}

function validationError(error: z.ZodError): Reply {
  const { field, message } = describeIssue(error);
  return { status: 400, body: { success: false, error: { code: 'VALIDATION_ERROR', message, field } } };
}

/** POST /api/workers/:id/deployments/:deploymentId/status. */
function handleStatus(id: string, deploymentId: string, state: WorkerExtensionState, ctx: ExtensionContext): Reply {
  // Any deployment ever assigned to this worker, so the agent can report the end of one just unassigned.
  if (!state.everAssigned.has(deploymentId)) {
    return rejection(404, 'DEPLOYMENT_NOT_FOUND', 'Deployment is not assigned to this worker');
  }
  const parsed = statusReportSchema.safeParse(ctx.body);
  if (!parsed.success) return validationError(parsed.error);
  ctx.store.recordReport(id, deploymentId, parsed.data, ctx.now);
  return { status: 200, body: { success: true } };
}

/** POST /api/workers/:id/usage: all records or none. */
function handleUsage(id: string, ctx: ExtensionContext): Reply {
  const parsed = usageBatchSchema.safeParse(ctx.body);
  if (!parsed.success) return validationError(parsed.error);
  const ack = ctx.store.recordUsage(id, parsed.data.records);
  return { status: 200, body: { success: true, data: ack } };
}

/** GET /api/workers/:id/deployments: the stored body verbatim with its strong ETag, or 304. */
function sendDeployments(req: IncomingMessage, res: ServerResponse, state: WorkerExtensionState): void {
  if (res.headersSent || res.destroyed) return;
  res.setHeader('ETag', state.etag);
  res.setHeader('Cache-Control', 'private, no-cache');
  if (etagMatches(req.headers['if-none-match'], state.etag)) {
    res.statusCode = 304;
    res.end();
    return;
  }
  const body = Buffer.from(state.body, 'utf8');
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', body.length);
  res.end(body);
}
