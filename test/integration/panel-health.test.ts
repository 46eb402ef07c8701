import { beforeAll, expect, test } from 'vitest';
import { HealthMonitor } from '../../src/panel/health-monitor.js';
import { DEFAULT_HEALTH } from '../../src/panel/health.js';
import type { PanelServer } from '../../src/panel/server.js';
import type { TestPostgres } from '../helpers/postgres.js';
import { call, heartbeatBody, panelOnPostgres, pick } from '../helpers/panel-fixtures.js';

/**
 * The health monitor on a real database: offline after the configured number of missed
 * intervals, never for a worker whose beats merely jitter, never over an admin's drain, and active
 * again with the next heartbeat.
 */

const INTERVAL_SEC = 0.5;
const env = panelOnPostgres({ health: { heartbeatIntervalSec: INTERVAL_SEC, missedIntervals: 4 }, healthMonitor: true });
const registered = (): Promise<{ workerId: string; token: string }> => env.registered();
let pg: TestPostgres;
let panel: PanelServer;
beforeAll(() => {
  ({ pg, panel } = env);
});

const statusOf = async (id: string): Promise<string> =>
  (await pg.pool.query<{ status: string }>('SELECT status FROM container_workers WHERE id = $1', [id])).rows[0]!.status;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('silent → offline; jittering → active throughout; drained → left alone; a beat brings it back', async () => {
  const silent = await registered();
  const jitter = await registered();
  const drained = await registered();
  await pg.pool.query(`UPDATE container_workers SET status = 'draining' WHERE id = $1`, [drained.workerId]);

  const seen = new Set<string>();
  const deadline = Date.now() + 4000; // 8 intervals: twice the offline threshold
  let seq = 1;
  while (Date.now() < deadline) {
    const res = await call(panel.url, 'POST', `/api/workers/${jitter.workerId}/heartbeat`, jitter.token, heartbeatBody({ seq: seq++ }));
    seen.add(String(pick(res.body, 'data', 'status')));
    seen.add(await statusOf(jitter.workerId));
    // One interval ± 30 %, far more jitter than the agent's ± 5 %.
    await sleep(INTERVAL_SEC * 1000 * (0.7 + Math.random() * 0.6));
  }
  expect([...seen]).toEqual(['active']);
  expect(await statusOf(silent.workerId)).toBe('offline');
  expect(await statusOf(drained.workerId)).toBe('draining');

  const back = await call(panel.url, 'POST', `/api/workers/${silent.workerId}/heartbeat`, silent.token, heartbeatBody());
  expect(pick(back.body, 'data', 'status')).toBe('active');
  expect(await statusOf(silent.workerId)).toBe('active');
});

test('the offline threshold is missedIntervals × interval, by the database clock', async () => {
  const w = await registered();
  const monitor = new HealthMonitor(pg.db, { ...DEFAULT_HEALTH, heartbeatIntervalSec: 30, missedIntervals: 4 });
  await pg.pool.query(`UPDATE container_workers SET last_heartbeat_at = NOW() - interval '119 seconds' WHERE id = $1`, [w.workerId]);
  expect(await monitor.sweep()).not.toContain(w.workerId);
  await pg.pool.query(`UPDATE container_workers SET last_heartbeat_at = NOW() - interval '121 seconds' WHERE id = $1`, [w.workerId]);
  expect(await monitor.sweep()).toContain(w.workerId);
  expect(await statusOf(w.workerId)).toBe('offline');
});
