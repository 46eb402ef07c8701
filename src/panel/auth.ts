import { createHash, timingSafeEqual } from 'node:crypto';
import { verify, type JwtPayload } from '../skypanel/jwt.js';
import { UUID_RE, type Queryable } from './db.js';
import { failure, unauthorized, type PanelReply } from './reply.js';

/**
 * Worker auth as SkyPanelV2 issues tokens (HS256 JWT with `workerId` and `type: "worker"`, signed
 * with JWT_SECRET), plus the check stock skips: SHA-256 of the token must equal the row's
 * auth_token_hash, so an admin who replaces the hash revokes the token at once.
 */

export type TokenCheck = { ok: true; token: string; workerId: string; claims: JwtPayload } | { ok: false; reply: PanelReply };

/** The JWT part: what api/middleware/workerAuth.ts checks, and a workerId the table can hold. */
export function checkToken(header: string | undefined, jwtSecret: string): TokenCheck {
  if (!header || !header.startsWith('Bearer ')) return { ok: false, reply: unauthorized('Worker authentication token required') };
  const token = header.substring(7);
  if (!token) return { ok: false, reply: unauthorized('Invalid worker authentication token') };
  const verified = verify(token, jwtSecret);
  if (!verified.ok) return { ok: false, reply: unauthorized('Invalid or expired worker token') };
  if (verified.payload.type !== 'worker') return { ok: false, reply: unauthorized('Invalid token type') };
  const workerId = verified.payload.workerId;
  if (typeof workerId !== 'string' || !UUID_RE.test(workerId))
    return { ok: false, reply: unauthorized('Invalid worker authentication token') };
  return { ok: true, token, workerId: workerId.toLowerCase(), claims: verified.payload };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Constant-time comparison of the token's hash with the stored one (both hex of SHA-256). */
export function tokenMatchesHash(token: string, storedHash: unknown): boolean {
  if (typeof storedHash !== 'string') return false;
  const given = Buffer.from(hashToken(token), 'utf8');
  const stored = Buffer.from(storedHash.toLowerCase(), 'utf8');
  return given.length === stored.length && timingSafeEqual(given, stored);
}

export const REVOKED = unauthorized('Worker token has been revoked');

export interface WorkerRow {
  id: string;
  status: string | null;
  auth_token_hash: string;
  current_load: unknown;
}

export type WorkerCheck = { ok: true; worker: WorkerRow; token: string } | { ok: false; reply: PanelReply };

/** The token part of the routes under /api/workers/:id: a valid worker JWT (401) that names :id (403). */
export function checkWorkerToken(header: string | undefined, jwtSecret: string, pathId: string): TokenCheck {
  const token = checkToken(header, jwtSecret);
  if (token.ok && pathId.toLowerCase() !== token.workerId)
    return { ok: false, reply: failure(403, 'FORBIDDEN', 'Token does not belong to this worker') };
  return token;
}

export const WORKER_NOT_FOUND = failure(404, 'WORKER_NOT_FOUND', 'Worker not found');

/** A worker's row by (lower-case) id, undefined when there is none. */
export type WorkerLookup = (workerId: string) => Promise<WorkerRow | undefined>;

/** The rows of many workers in one query; every id asked for is a key (undefined: no such row). */
export async function loadWorkerRows(db: Queryable, workerIds: readonly string[]): Promise<Map<string, WorkerRow | undefined>> {
  const { rows } = await db.query<WorkerRow>(
    // A JSON array, as loadDesiredSets passes ids: drivers serialise array parameters differently.
    `SELECT id::text AS id, status, auth_token_hash, current_load FROM container_workers
      WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid)`,
    [JSON.stringify(workerIds)],
  );
  const byId = new Map(rows.map((r) => [r.id.toLowerCase(), r]));
  return new Map(workerIds.map((id) => [id, byId.get(id.toLowerCase())]));
}

/**
 * For the routes under /api/workers/:id: the token must name :id (403), the row must exist (404
 * WORKER_NOT_FOUND: the agent registers again), and the token must be the one the row holds (401).
 * `lookup` is the handler's batched one (a fleet's calls in one turn share one query). The
 * heartbeat makes the same checks inside its batched write (heartbeat-batcher.ts).
 */
export async function authorizeWorker(
  lookup: WorkerLookup,
  header: string | undefined,
  jwtSecret: string,
  pathId: string,
): Promise<WorkerCheck> {
  const token = checkWorkerToken(header, jwtSecret, pathId);
  if (!token.ok) return token;
  const worker = await lookup(token.workerId);
  if (worker === undefined) return { ok: false, reply: WORKER_NOT_FOUND };
  if (!tokenMatchesHash(token.token, worker.auth_token_hash)) return { ok: false, reply: REVOKED };
  return { ok: true, worker, token: token.token };
}
