import { beforeAll, describe, expect, test } from 'vitest';
import type { PanelServer } from '../../src/panel/server.js';
import { signJwt } from '../../src/skypanel/jwt.js';
import type { TestPostgres } from '../helpers/postgres.js';
import { createHash } from 'node:crypto';
import { call, heartbeatBody, JWT_SECRET, newWorkerToken, panelOnPostgres, pick, REGISTER_BODY } from '../helpers/panel-fixtures.js';

/**
 * Calls 1 and 2 and the worker auth of the panel on a real PostgreSQL holding SkyPanelV2's schema:
 * tokens as SkyPanelV2 mints them plus the stored hash, registration that keeps what the panel
 * wrote, heartbeats that keep the agent's flags and an admin's drain.
 */

const env = panelOnPostgres();
const registered = (): Promise<{ workerId: string; token: string }> => env.registered();
let pg: TestPostgres;
let panel: PanelServer;
beforeAll(() => {
  ({ pg, panel } = env);
});

async function workerRow(id: string): Promise<Record<string, unknown>> {
  const { rows } = await pg.pool.query('SELECT * FROM container_workers WHERE id = $1', [id]);
  return rows[0] as Record<string, unknown>;
}

describe('auth', () => {
  test('a SkyPanelV2 token registers and heartbeats; the row holds sha256(token)', async () => {
    const w = await registered();
    const row = await workerRow(w.workerId);
    expect(row.status).toBe('active');
    expect(row.name).toBe('worker-worker-test');
    const hb = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
    expect(hb.status).toBe(200);
    expect(hb.body).toMatchObject({ success: true, message: 'Heartbeat received', data: { status: 'active' } });
    expect(pick(hb.body, 'data', 'deploymentsEtag')).toMatch(/^"[0-9a-f]{32}"$/);
  });

  test('replacing auth_token_hash revokes the token: 401 on every route, register included', async () => {
    const w = await registered();
    await pg.pool.query(`UPDATE container_workers SET auth_token_hash = repeat('0', 64) WHERE id = $1`, [w.workerId]);
    for (const [method, path, body] of [
      ['POST', `/api/workers/${w.workerId}/heartbeat`, heartbeatBody()],
      ['GET', `/api/workers/${w.workerId}/deployments`, undefined],
      ['POST', `/api/workers/${w.workerId}/usage`, { records: [] }],
      ['POST', '/api/workers/register', REGISTER_BODY],
    ] as const) {
      const res = await call(panel.url, method, path, w.token, body);
      expect(res.status, path).toBe(401);
      expect(res.body).toEqual({ error: 'Unauthorized', message: 'Worker token has been revoked' });
    }
    // Register did not restore the old hash.
    expect((await workerRow(w.workerId)).auth_token_hash).toBe('0'.repeat(64));
  });

  test('unknown worker: 404 WORKER_NOT_FOUND; another worker token: 403; bad tokens: 401', async () => {
    const a = await registered();
    const stranger = newWorkerToken();
    const unknown = await call(panel.url, 'POST', `/api/workers/${stranger.workerId}/heartbeat`, stranger.token, heartbeatBody());
    expect(unknown.status).toBe(404);
    expect(pick(unknown.body, 'error', 'code')).toBe('WORKER_NOT_FOUND');
    const other = await call(panel.url, 'GET', `/api/workers/${a.workerId}/deployments`, stranger.token);
    expect(other.status).toBe(403);
    const wrongSecret = signJwt({ workerId: a.workerId, type: 'worker' }, 'another-secret');
    expect((await call(panel.url, 'POST', `/api/workers/${a.workerId}/heartbeat`, wrongSecret, heartbeatBody())).status).toBe(401);
    const notWorker = signJwt({ workerId: a.workerId, type: 'user' }, JWT_SECRET);
    expect((await call(panel.url, 'POST', `/api/workers/${a.workerId}/heartbeat`, notWorker, heartbeatBody())).status).toBe(401);
    expect((await call(panel.url, 'POST', `/api/workers/${a.workerId}/heartbeat`, null, heartbeatBody())).status).toBe(401);
  });

  test('routes the panel does not own answer SkyPanelV2 404 "API not found"', async () => {
    const res = await call(panel.url, 'GET', '/api/workers', null);
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ success: false, error: 'API not found' });
  });
});

describe('rows stock SkyPanelV2 wrote', () => {
  test('a worker stock SkyPanelV2 registered (its INSERT, its hash) is served without registering again', async () => {
    const w = newWorkerToken();
    // WorkerService.registerWorker's INSERT, values as it passes them.
    await pg.pool.query(
      `INSERT INTO container_workers (id, name, hostname, ip_address, auth_token_hash, status, capacity, current_load, metadata, last_heartbeat_at, created_at, updated_at)
       VALUES ($1, 'worker-stock', 'stock', '10.0.0.9', $2, 'active', $3, $4, $5, NOW(), NOW(), NOW())`,
      [
        w.workerId,
        createHash('sha256').update(w.token).digest('hex'),
        JSON.stringify({ cpuCores: 4, memoryMb: 8192, diskGb: 100 }),
        JSON.stringify({ cpuPercent: 0, memoryPercent: 0, diskPercent: 0, containerCount: 0 }),
        JSON.stringify({ osVersion: 'Debian 12', nixVersion: '2.18' }),
      ],
    );
    const hb = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
    expect(hb.status).toBe(200);
    expect((await call(panel.url, 'GET', `/api/workers/${w.workerId}/deployments`, w.token)).status).toBe(200);
    expect((await call(panel.url, 'POST', '/api/workers/register', w.token, REGISTER_BODY)).status).toBe(201);
    expect((await workerRow(w.workerId)).metadata).toMatchObject({ osVersion: 'Debian 12', nixVersion: '2.18', agentVersion: '0.1.0' });
  });
});

describe('register keeps what the panel wrote', () => {
  test('an admin drain survives re-registration, other metadata keys are merged, name kept', async () => {
    const w = await registered();
    await pg.pool.query(
      `UPDATE container_workers SET status = 'draining', name = 'renamed-by-admin', metadata = metadata || '{"nixCache": {"warm": true}}' WHERE id = $1`,
      [w.workerId],
    );
    const again = await call(panel.url, 'POST', '/api/workers/register', w.token, {
      ...REGISTER_BODY,
      metadata: { ...REGISTER_BODY.metadata, agentVersion: '0.2.0' },
    });
    expect(again.status).toBe(201);
    const row = await workerRow(w.workerId);
    expect(row.status).toBe('draining');
    expect(row.name).toBe('renamed-by-admin');
    expect(row.metadata).toMatchObject({ nixCache: { warm: true }, agentVersion: '0.2.0' });
  });

  test('a worker an admin deleted is not re-created by its token', async () => {
    const w = await registered();
    await pg.pool.query('DELETE FROM container_workers WHERE id = $1', [w.workerId]);
    const hb = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
    expect(hb.status).toBe(404);
    const again = await call(panel.url, 'POST', '/api/workers/register', w.token, REGISTER_BODY);
    expect(again.status).toBe(403);
    expect(pick(again.body, 'error', 'code')).toBe('WORKER_DELETED');
    expect(await workerRow(w.workerId)).toBeUndefined();
  });

  test('registration validates like SkyPanelV2 and writes swarm_node_id', async () => {
    const w = newWorkerToken();
    const bad = await call(panel.url, 'POST', '/api/workers/register', w.token, { ...REGISTER_BODY, ipAddress: 'fd00::5' });
    expect(bad.status).toBe(400);
    expect(pick(bad.body, 'error', 'code')).toBe('VALIDATION_ERROR');
    const ok = await call(panel.url, 'POST', '/api/workers/register', w.token, {
      ...REGISTER_BODY,
      metadata: { ...REGISTER_BODY.metadata, swarmNodeId: `node-${w.workerId}` },
    });
    expect(ok.status).toBe(201);
    expect((await workerRow(w.workerId)).swarm_node_id).toBe(`node-${w.workerId}`);
  });
});

describe('heartbeat', () => {
  test('load, node id and the agent flags land in the row; last_heartbeat_at moves', async () => {
    const w = await registered();
    const before = (await workerRow(w.workerId)).last_heartbeat_at as Date;
    await new Promise((r) => setTimeout(r, 20));
    const res = await call(
      panel.url,
      'POST',
      `/api/workers/${w.workerId}/heartbeat`,
      w.token,
      heartbeatBody({ swarmNodeId: `sn-${w.workerId}`, seq: 7, containerCount: 3 }),
    );
    expect(res.status).toBe(200);
    const row = await workerRow(w.workerId);
    expect(row.swarm_node_id).toBe(`sn-${w.workerId}`);
    expect(row.current_load).toMatchObject({
      cpuPercent: 10,
      containerCount: 3,
      bootId: 'boot-1',
      seq: 7,
      dockerHealthy: true,
      draining: false,
    });
    expect((row.last_heartbeat_at as Date).getTime()).toBeGreaterThan(before.getTime());
  });

  test('an admin drain is kept and reported back to the agent', async () => {
    const w = await registered();
    await pg.pool.query(`UPDATE container_workers SET status = 'draining' WHERE id = $1`, [w.workerId]);
    const res = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
    expect(pick(res.body, 'data', 'status')).toBe('draining');
    expect((await workerRow(w.workerId)).status).toBe('draining');
  });

  test("the agent's own drain marks the worker draining, and lifting it makes it active again", async () => {
    const w = await registered();
    await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody({ draining: true }));
    expect((await workerRow(w.workerId)).status).toBe('draining');
    const res = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody({ draining: false, seq: 2 }));
    expect(pick(res.body, 'data', 'status')).toBe('active');
  });

  test('unhealthy above the thresholds or without Docker; recovery needs a margin, so jitter at the threshold does not flap', async () => {
    const w = await registered();
    const beat = async (extra: Record<string, unknown>): Promise<unknown> =>
      pick((await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody(extra))).body, 'data', 'status');
    expect(await beat({ cpuPercent: 91 })).toBe('unhealthy');
    expect(await beat({ cpuPercent: 89 })).toBe('unhealthy'); // within the 5-point margin
    expect(await beat({ cpuPercent: 90.5 })).toBe('unhealthy');
    expect(await beat({ cpuPercent: 84 })).toBe('active');
    expect(await beat({ cpuPercent: 89 })).toBe('active'); // below the threshold: stays active
    expect(await beat({ dockerHealthy: false })).toBe('unhealthy');
    expect(await beat({ dockerHealthy: true })).toBe('active');
  });

  test('stock validation: missing metrics and out-of-range percents are 400', async () => {
    const w = await registered();
    const missing = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, { cpuPercent: 1 });
    expect(missing.status).toBe(400);
    const range = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody({ memoryPercent: 101 }));
    expect(range.status).toBe(400);
  });
});
