import { classifyRegisterError, prop, registerFieldsError, validateWorkerInfo } from '../skypanel/validation.js';
import { checkToken, hashToken, REVOKED, tokenMatchesHash, type WorkerRow } from './auth.js';
import { toDate, type Database } from './db.js';
import { failure, type PanelReply } from './reply.js';

/**
 * Call 1 on container_workers (call 2 is heartbeat.ts). Where stock SkyPanelV2 clobbers
 * (re-registration writes status 'active', replaces metadata and the token hash; a heartbeat writes
 * status from load alone), this and the heartbeat keep what others wrote: an admin drain, metadata keys other panel code set
 * (NixCacheService), a revocation, and a deleted worker stays deleted.
 */

interface FullWorkerRow extends WorkerRow {
  name: string;
  hostname: string;
  ip_address: string;
  swarm_node_id: string | null;
  capacity: unknown;
  last_heartbeat_at: unknown;
  metadata: unknown;
  created_at: unknown;
  updated_at: unknown;
}

/** The row as SkyPanelV2's mapRowToWorker shows it, minus the token hash. */
function workerJson(row: FullWorkerRow): Record<string, unknown> {
  return {
    id: row.id,
    name: row.name,
    hostname: row.hostname,
    ipAddress: row.ip_address,
    swarmNodeId: row.swarm_node_id ?? undefined,
    status: row.status,
    capacity: row.capacity,
    currentLoad: row.current_load,
    lastHeartbeatAt: toDate(row.last_heartbeat_at)?.toISOString(),
    metadata: row.metadata,
    createdAt: toDate(row.created_at)?.toISOString(),
    updatedAt: toDate(row.updated_at)?.toISOString(),
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function shortString(v: unknown, max: number): string | null {
  return typeof v === 'string' && v.length > 0 && v.length <= max ? v : null;
}

/**
 * swarm_node_id is UNIQUE: it is written only when no other worker row holds that node id (a stale
 * row of a reinstalled host, say); otherwise the column keeps its value instead of failing the call.
 */
export function swarmNodeIdSql(param: string): string {
  return `CASE WHEN ${param}::varchar IS NULL OR EXISTS (
      SELECT 1 FROM container_workers o WHERE o.swarm_node_id = ${param}::varchar AND o.id <> container_workers.id)
    THEN swarm_node_id ELSE ${param}::varchar END`;
}

/** POST /api/workers/register. */
export async function handleRegister(db: Database, header: string | undefined, body: unknown, jwtSecret: string): Promise<PanelReply> {
  const auth = checkToken(header, jwtSecret);
  if (!auth.ok) return auth.reply;
  const fieldsError = registerFieldsError(body);
  if (fieldsError !== null) return failure(400, 'VALIDATION_ERROR', fieldsError);
  const metadata = prop(body, 'metadata') ?? {};
  if (!isObject(metadata)) return failure(400, 'VALIDATION_ERROR', 'metadata must be an object');
  const info = { hostname: prop(body, 'hostname'), ipAddress: prop(body, 'ipAddress'), capacity: prop(body, 'capacity'), metadata };
  try {
    // Stock validates only first registrations; the row's columns deserve the same care every time.
    validateWorkerInfo(info);
  } catch (err) {
    return classifyRegisterError(err);
  }
  const hostname = info.hostname as string;
  const swarmNodeId = shortString(metadata.swarmNodeId, 255);
  return db.transaction(async (tx): Promise<PanelReply> => {
    const deleted = await tx.query('SELECT 1 FROM skypanel_agent_deleted_workers WHERE worker_id = $1', [auth.workerId]);
    if (deleted.rows.length > 0)
      return failure(403, 'WORKER_DELETED', 'This worker was deleted by an administrator; generate a new worker token');
    const existing = await tx.query<WorkerRow>(
      'SELECT id, status, auth_token_hash, current_load FROM container_workers WHERE id = $1 FOR UPDATE',
      [auth.workerId],
    );
    const row = existing.rows[0];
    if (row !== undefined) {
      if (!tokenMatchesHash(auth.token, row.auth_token_hash)) return REVOKED;
      const updated = await tx.query<FullWorkerRow>(
        `UPDATE container_workers
            SET hostname = $2, ip_address = $3, capacity = $4,
                metadata = CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata || $5::jsonb ELSE $5::jsonb END,
                status = CASE WHEN status = 'draining' THEN status ELSE 'active' END,
                last_heartbeat_at = NOW(),
                swarm_node_id = ${swarmNodeIdSql('$6')}
          WHERE id = $1
          RETURNING *`,
        [auth.workerId, hostname, info.ipAddress, JSON.stringify(info.capacity), JSON.stringify(metadata), swarmNodeId],
      );
      return { status: 201, body: { success: true, data: workerJson(updated.rows[0]!) } };
    }
    const name = shortString(metadata.name, 255) ?? `worker-${hostname}`.slice(0, 255);
    const inserted = await tx.query<FullWorkerRow>(
      `INSERT INTO container_workers (id, name, hostname, ip_address, auth_token_hash, status, capacity, current_load, metadata, last_heartbeat_at, swarm_node_id)
       VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, NOW(),
               CASE WHEN EXISTS (SELECT 1 FROM container_workers o WHERE o.swarm_node_id = $9::varchar) THEN NULL ELSE $9::varchar END)
       RETURNING *`,
      [
        auth.workerId,
        name,
        hostname,
        info.ipAddress,
        hashToken(auth.token),
        JSON.stringify(info.capacity),
        JSON.stringify({ cpuPercent: 0, memoryPercent: 0, diskPercent: 0, containerCount: 0 }),
        JSON.stringify(metadata),
        swarmNodeId,
      ],
    );
    return { status: 201, body: { success: true, data: workerJson(inserted.rows[0]!) } };
  });
}
