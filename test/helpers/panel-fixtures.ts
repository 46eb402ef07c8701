import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import { startPanelServer, type PanelServer, type PanelServerOptions } from '../../src/panel/server.js';
import { startPostgres, type TestPostgres } from './postgres.js';
import { signWorkerToken } from '../../src/skypanel/jwt.js';

/** Rows a SkyPanelV2 installation would hold, inserted the way its own code would. */

export const JWT_SECRET = 'panel-test-jwt-secret-0123456789abcdef';
export const SSH_CRED_SECRET = 'panel-test-ssh-cred-secret-0123456789';

export async function insertOrg(pool: pg.Pool): Promise<{ orgId: string; userId: string }> {
  const tag = randomUUID().slice(0, 8);
  const user = await pool.query<{ id: string }>(`INSERT INTO users (email, name) VALUES ($1, 'Owner') RETURNING id`, [
    `owner-${tag}@example.com`,
  ]);
  const userId = user.rows[0]!.id;
  const org = await pool.query<{ id: string }>(`INSERT INTO organizations (name, slug, owner_id) VALUES ('Org', $1, $2) RETURNING id`, [
    `org-${tag}`,
    userId,
  ]);
  return { orgId: org.rows[0]!.id, userId };
}

export interface ServiceInput {
  orgId: string;
  slug?: string;
  status?: string;
  environmentVars?: unknown;
  resourceLimits?: unknown;
}

export async function insertService(pool: pg.Pool, s: ServiceInput): Promise<string> {
  const slug = s.slug ?? `app-${randomUUID().slice(0, 8)}`;
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO container_services (organization_id, name, slug, status, environment_vars, resource_limits)
     VALUES ($1, $2, $2, $3, $4, $5) RETURNING id`,
    [
      s.orgId,
      slug,
      s.status ?? 'pending',
      JSON.stringify(s.environmentVars ?? {}),
      JSON.stringify(s.resourceLimits ?? { cpu_cores: 0.5, memory_mb: 64, disk_gb: 1 }),
    ],
  );
  return rows[0]!.id;
}

export interface DeploymentInput {
  serviceId: string;
  workerId: string | null;
  imageTag?: string;
  internalPort?: number | null;
  externalPort?: number | null;
  /** Make it the service's current deployment (default true). */
  current?: boolean;
}

export async function insertDeployment(pool: pg.Pool, d: DeploymentInput): Promise<string> {
  const { rows } = await pool.query<{ id: string }>(
    `INSERT INTO container_deployments (service_id, worker_id, image_tag, internal_port, external_port, status)
     VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING id`,
    [d.serviceId, d.workerId, d.imageTag ?? 'registry.example.com/app:1', d.internalPort ?? null, d.externalPort ?? null],
  );
  const id = rows[0]!.id;
  if (d.current !== false) await pool.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [d.serviceId, id]);
  return id;
}

/** A token exactly as SkyPanelV2's generateWorkerScript mints it, for a fresh worker id. */
export function newWorkerToken(workerId: string = randomUUID()): { workerId: string; token: string } {
  return { workerId, token: signWorkerToken(JWT_SECRET, { workerId }) };
}

export const REGISTER_BODY = {
  hostname: 'worker-test',
  ipAddress: '127.0.0.1',
  capacity: { cpuCores: 2, memoryMb: 2048, diskGb: 20 },
  metadata: { agentVersion: '0.1.0', swarmNodeId: null, swarmRole: 'manager', reconcileMode: 'manager', protocolVersion: 1, labels: {} },
};

export function heartbeatBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cpuPercent: 10,
    memoryPercent: 20,
    diskPercent: 30,
    containerCount: 0,
    bootId: 'boot-1',
    seq: 1,
    sentAt: new Date().toISOString(),
    agentVersion: '0.1.0',
    swarmNodeId: null,
    dockerHealthy: true,
    draining: false,
    ...extra,
  };
}

export interface Call {
  status: number;
  body: unknown;
  headers: Headers;
}

export async function call(
  baseUrl: string,
  method: string,
  path: string,
  token: string | null,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Call> {
  const res = await fetch(baseUrl + path, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    /* keep the text */
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** `pick(body, 'data', 'status')`: a value deep in a JSON answer, undefined when any step is missing. */
export function pick(value: unknown, ...path: (string | number)[]): unknown {
  let cur = value;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[key];
  }
  return cur;
}

export interface PanelOnPostgres {
  /** Set in beforeAll: read them inside tests and hooks, not at module load. */
  pg: TestPostgres;
  panel: PanelServer;
  /** A fresh worker token, registered through call 1 (201, the row's id is the token's). */
  registered(): Promise<{ workerId: string; token: string }>;
}

/**
 * One throwaway PostgreSQL with SkyPanelV2's tables and one panel on it for the calling test file,
 * started in beforeAll and stopped in afterAll. The health monitor is off unless `opts` turns it on.
 */
export function panelOnPostgres(opts: Partial<Omit<PanelServerOptions, 'db'>> = {}): PanelOnPostgres {
  const env = {} as PanelOnPostgres;
  beforeAll(async () => {
    env.pg = await startPostgres();
    env.panel = await startPanelServer({
      db: env.pg.db,
      jwtSecret: JWT_SECRET,
      sshCredSecret: SSH_CRED_SECRET,
      healthMonitor: false,
      ...opts,
    });
  });
  afterAll(async () => {
    await env.panel?.close();
    await env.pg?.stop();
  });
  env.registered = async () => {
    const w = newWorkerToken();
    const res = await call(env.panel.url, 'POST', '/api/workers/register', w.token, REGISTER_BODY);
    expect(res.status).toBe(201);
    expect(pick(res.body, 'data', 'id')).toBe(w.workerId);
    return w;
  };
  return env;
}
