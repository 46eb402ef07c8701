import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ExtensionStore } from './extension-store.js';
import { readJsonBody, sendJson } from '../skypanel/express.js';
import type { WorkerRow } from './types.js';

/**
 * Operator routes of the reference control plane, so a person or a second process can drive
 * `skypanel-agent dev`: set a worker's desired set, and list workers with what they reported.
 * Not part of SkyPanelV2's surface: outside /api/, so neither rate-limited nor faulted, and
 * guarded by their own bearer token.
 */

/** Desired sets can be much larger than a worker's requests. */
export const ADMIN_BODY_LIMIT_BYTES = 16 * 1024 * 1024;

export function isAdminPath(path: string): boolean {
  const lower = path.toLowerCase();
  return lower === '/admin' || lower.startsWith('/admin/');
}

type AdminRoute = { kind: 'put-deployments'; id: string } | { kind: 'list-workers' } | { kind: 'none' };

const PUT_DEPLOYMENTS = /^\/admin\/workers\/([^/]+?)\/deployments\/?$/i;
const LIST_WORKERS = /^\/admin\/workers\/?$/i;

function matchAdminRoute(method: string | undefined, path: string): AdminRoute {
  if (method === 'GET' && LIST_WORKERS.test(path)) return { kind: 'list-workers' };
  const m = method === 'PUT' ? PUT_DEPLOYMENTS.exec(path) : null;
  if (m === null) return { kind: 'none' };
  try {
    return { kind: 'put-deployments', id: decodeURIComponent(m[1] ?? '') };
  } catch {
    return { kind: 'none' };
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Compares digests, so neither the token's content nor its length leaks through timing. */
export function adminTokenMatches(header: string | undefined, adminToken: string): boolean {
  const given = header !== undefined && header.startsWith('Bearer ') ? header.substring(7).trim() : '';
  return timingSafeEqual(digest(given), digest(adminToken)) && given.length > 0;
}

function error(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { success: false, error: { code, message } }, headers);
}

export interface AdminContext {
  store: ExtensionStore;
  workers: Map<string, WorkerRow>;
}

/** Answers any request under /admin; checks the token before reading a byte of the body. */
export async function serveAdmin(req: IncomingMessage, res: ServerResponse, path: string, ctx: AdminContext): Promise<void> {
  if (!adminTokenMatches(req.headers.authorization, ctx.store.adminToken)) {
    return error(res, 401, 'UNAUTHORIZED', 'Admin token required', { 'WWW-Authenticate': 'Bearer realm="skypanel-refcp-admin"' });
  }
  const route = matchAdminRoute(req.method, path);
  if (route.kind === 'none') return error(res, 404, 'NOT_FOUND', 'No such admin route');
  if (route.kind === 'list-workers') return sendJson(res, 200, { success: true, data: { workers: listWorkers(ctx) } });

  const body = await readJsonBody(req, ADMIN_BODY_LIMIT_BYTES);
  switch (body.kind) {
    case 'aborted':
      return;
    case 'too-large':
      return error(res, 413, 'PAYLOAD_TOO_LARGE', `Body exceeds ${ADMIN_BODY_LIMIT_BYTES} bytes`);
    case 'none':
    case 'unsupported':
      return error(res, 415, 'UNSUPPORTED_MEDIA_TYPE', 'Send Content-Type: application/json (UTF-8, no content-encoding)');
    case 'malformed':
      return error(res, 400, 'INVALID_JSON', 'Body is not valid JSON');
    case 'json':
      break;
  }
  const value = body.value;
  const deployments = value !== null && typeof value === 'object' ? (value as Record<string, unknown>).deployments : undefined;
  if (!Array.isArray(deployments)) return error(res, 400, 'VALIDATION_ERROR', 'deployments: must be an array');
  ctx.store.setDeployments(route.id, deployments);
  sendJson(res, 200, {
    success: true,
    data: { workerId: route.id, count: deployments.length, etag: ctx.store.deploymentsEtagOf(route.id) },
  });
}

/** Every registered worker and every worker with extension state (e.g. a desired set set before it registered). */
function listWorkers(ctx: AdminContext): Record<string, unknown>[] {
  const ids = [...new Set([...ctx.workers.keys(), ...ctx.store.knownWorkerIds()])].sort();
  return ids.map((id) => {
    const row = ctx.workers.get(id);
    const state = ctx.store.stateOf(id);
    const deploymentStatus = Object.fromEntries(
      [...state.deploymentStatus].map(([deploymentId, { deploymentLogs, ...report }]) => [
        deploymentId,
        { ...report, logBytes: deploymentLogs === undefined ? 0 : Buffer.byteLength(deploymentLogs, 'utf8') },
      ]),
    );
    return {
      id,
      registered: row !== undefined,
      name: row?.name ?? null,
      hostname: row?.hostname ?? null,
      status: row?.status ?? null,
      lastHeartbeatAt: row?.lastHeartbeatAt?.toISOString() ?? null,
      heartbeats: row?.heartbeats ?? 0,
      deployments: { count: state.deployments?.length ?? null, etag: state.etag },
      deploymentStatus,
      reports: state.reports.length,
      duplicateReports: state.duplicateReports,
      usage: { records: state.usage.size, duplicates: state.duplicateUsage },
    };
  });
}
