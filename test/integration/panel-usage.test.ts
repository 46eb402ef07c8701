import { beforeAll, expect, test } from 'vitest';
import type { PanelServer } from '../../src/panel/server.js';
import type { TestPostgres } from '../helpers/postgres.js';
import {
  call,
  insertDeployment,
  insertOrg,
  insertService,
  newWorkerToken,
  panelOnPostgres,
  pick,
  REGISTER_BODY,
} from '../helpers/panel-fixtures.js';

/**
 * Call 5 into container_billing_cycles: one row per (service, billing_period_start) however often
 * a batch is replayed, amounts priced from the configured hourly prices, status pending.
 */

const PRICES = { cpuCoreHour: 0.5, memoryGbHour: 0.25, storageGbHour: 0.1, networkGb: 1 };
const env = panelOnPostgres({ prices: PRICES });
let pg: TestPostgres;
let panel: PanelServer;
beforeAll(() => {
  ({ pg, panel } = env);
});

const PERIOD = { periodStart: '2026-12-04T10:00:00.000Z', periodEnd: '2026-12-04T11:00:00.000Z' };

function record(deploymentId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  // serviceId/organizationId are the agent's copies; the panel bills what the tables say.
  return {
    deploymentId,
    serviceId: 'ignored',
    organizationId: 'ignored',
    ...PERIOD,
    cpuHours: 2,
    memoryGbHours: 4,
    storageGbHours: 10,
    networkGb: 0.5,
    samples: 60,
    complete: true,
    ...extra,
  };
}

async function setup(): Promise<{
  w: { workerId: string; token: string };
  orgId: string;
  svc: string;
  dep: string;
  post: (records: unknown[]) => ReturnType<typeof call>;
}> {
  const w = newWorkerToken();
  expect((await call(panel.url, 'POST', '/api/workers/register', w.token, REGISTER_BODY)).status).toBe(201);
  const { orgId } = await insertOrg(pg.pool);
  const svc = await insertService(pg.pool, { orgId, status: 'running' });
  const dep = await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId });
  return { w, orgId, svc, dep, post: (records) => call(panel.url, 'POST', `/api/workers/${w.workerId}/usage`, w.token, { records }) };
}

async function cycles(svc: string): Promise<Record<string, unknown>[]> {
  return (await pg.pool.query('SELECT * FROM container_billing_cycles WHERE service_id = $1 ORDER BY billing_period_start', [svc]))
    .rows as Record<string, unknown>[];
}

test('a record becomes one pending row priced from the configured prices; replays add nothing', async () => {
  const { orgId, svc, dep, post } = await setup();
  const first = await post([record(dep)]);
  expect(first.status).toBe(200);
  expect(pick(first.body, 'data')).toEqual({ accepted: 1, duplicates: 0, unknown: 0, late: 0 });
  for (let i = 0; i < 3; i++) {
    const replay = await post([record(dep, { periodStart: '2026-12-04T10:00:00Z' })]);
    expect(pick(replay.body, 'data', 'duplicates')).toBe(1);
  }
  const rows = await cycles(svc);
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({
    organization_id: orgId,
    cpu_hours: '2.00',
    memory_gb_hours: '4.00',
    storage_gb_hours: '10.00',
    network_gb: '0.5000',
    status: 'pending',
  });
  // 2 × 0.5 + 4 × 0.25 + 10 × 0.1 + 0.5 × 1
  expect(rows[0]!.total_amount).toBe('3.50');
  expect((rows[0]!.billing_period_start as Date).toISOString()).toBe(PERIOD.periodStart);
  expect((rows[0]!.billing_period_end as Date).toISOString()).toBe(PERIOD.periodEnd);
});

test('concurrent replays of one batch still make one row', async () => {
  const { svc, dep, post } = await setup();
  const answers = await Promise.all(Array.from({ length: 6 }, () => post([record(dep)])));
  expect(answers.every((a) => a.status === 200)).toBe(true);
  expect(await cycles(svc)).toHaveLength(1);
});

test('two deployments of one service in one period share its row, summed; each counted once', async () => {
  const { w, svc, dep, post } = await setup();
  const next = await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId });
  await post([record(dep, { cpuHours: 1 })]);
  await post([record(next, { cpuHours: 3 }), record(dep, { cpuHours: 1 })]);
  await post([record(next, { cpuHours: 3 })]);
  const rows = await cycles(svc);
  expect(rows).toHaveLength(1);
  expect(rows[0]!.cpu_hours).toBe('4.00');
  expect(Object.keys(pick(rows[0], 'metadata', 'skypanelAgentUsage') as object).sort()).toEqual([dep, next].sort());
});

test('a billed row is never changed; a deployment this worker never ran is not billed', async () => {
  const { w, svc, dep, post } = await setup();
  await post([record(dep)]);
  await pg.pool.query(`UPDATE container_billing_cycles SET status = 'billed' WHERE service_id = $1`, [svc]);
  const next = await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId });
  const late = await post([record(next)]);
  expect(pick(late.body, 'data', 'late')).toBe(1);
  expect((await cycles(svc))[0]!.cpu_hours).toBe('2.00');

  const stranger = await setup();
  const foreign = await call(panel.url, 'POST', `/api/workers/${w.workerId}/usage`, w.token, { records: [record(stranger.dep)] });
  expect(pick(foreign.body, 'data', 'unknown')).toBe(1);
  expect(await cycles(stranger.svc)).toHaveLength(0);
});

test('an invalid batch is refused whole with the field named', async () => {
  const { svc, dep, post } = await setup();
  const res = await post([record(dep), record(dep, { cpuHours: -1 })]);
  expect(res.status).toBe(400);
  expect(pick(res.body, 'error', 'field')).toBe('records[1].cpuHours');
  expect(await cycles(svc)).toHaveLength(0);
});
