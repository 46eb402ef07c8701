import { describe, expect, it } from 'vitest';
import { columnOf } from '../../src/panel/desired-set.js';
import { beatVerdict, DEFAULT_HEALTH } from '../../src/panel/health.js';
import { isNewer } from '../../src/panel/status-reports.js';
import { totalAmount } from '../../src/panel/usage.js';
import { panelWorkerStatus } from '../../src/protocol/worker.js';

/** The panel's pure rules: report order, worker status after a beat, pricing, column names. */

describe('report order', () => {
  const last = { bootId: 'a', seq: 5, reportedAt: new Date('2026-12-04T10:00:00Z') };
  it('same run: a higher seq is newer, equal or lower is not', () => {
    expect(isNewer({ bootId: 'a', seq: 6, reportedAt: '2026-12-04T09:00:00Z' }, last)).toBe(true);
    expect(isNewer({ bootId: 'a', seq: 5, reportedAt: '2026-12-04T11:00:00Z' }, last)).toBe(false);
    expect(isNewer({ bootId: 'a', seq: 4, reportedAt: '2026-12-04T11:00:00Z' }, last)).toBe(false);
  });
  it('another run: a later reportedAt is newer, whatever its seq', () => {
    expect(isNewer({ bootId: 'b', seq: 1, reportedAt: '2026-12-04T10:00:01Z' }, last)).toBe(true);
    expect(isNewer({ bootId: 'b', seq: 99, reportedAt: '2026-12-04T10:00:00Z' }, last)).toBe(false);
  });
  it('the first report is always newer', () => {
    expect(isNewer({ bootId: 'a', seq: 1, reportedAt: '2026-12-04T10:00:00Z' }, null)).toBe(true);
  });
});

describe('what a heartbeat says by itself', () => {
  const beat = { cpuPercent: 10, memoryPercent: 10, diskPercent: 10, dockerHealthy: true, draining: false };
  it('thresholds use > like SkyPanelV2; the recovery margin lies below them', () => {
    expect(beatVerdict({ ...beat, memoryPercent: 95 }, DEFAULT_HEALTH)).toEqual({
      agentDraining: false,
      dockerUnhealthy: false,
      over: false,
      overWithMargin: true,
    });
    expect(beatVerdict({ ...beat, memoryPercent: 95.1 }, DEFAULT_HEALTH)).toMatchObject({ over: true, overWithMargin: true });
    expect(beatVerdict({ ...beat, diskPercent: 86 }, DEFAULT_HEALTH)).toMatchObject({ over: false, overWithMargin: true });
    expect(beatVerdict({ ...beat, diskPercent: 85 }, DEFAULT_HEALTH)).toMatchObject({ over: false, overWithMargin: false });
  });
  it('only an explicit false is an unhealthy Docker, only an explicit true a drain', () => {
    expect(beatVerdict({ ...beat, dockerHealthy: undefined, draining: undefined }, DEFAULT_HEALTH)).toMatchObject({
      dockerUnhealthy: false,
      agentDraining: false,
    });
    expect(beatVerdict({ ...beat, dockerHealthy: false, draining: true }, DEFAULT_HEALTH)).toMatchObject({
      dockerUnhealthy: true,
      agentDraining: true,
    });
  });
});

it('total_amount sums every deployment of the period at the configured prices', () => {
  const r = {
    workerId: 'w',
    periodEnd: '2026-12-04T11:00:00.000Z',
    cpuHours: 1,
    memoryGbHours: 2,
    storageGbHours: 3,
    networkGb: 4,
    samples: 60,
    complete: true,
  };
  const t = totalAmount(
    { a: r, b: { ...r, periodEnd: '2026-12-04T11:30:00.000Z' } },
    { cpuCoreHour: 1, memoryGbHour: 10, storageGbHour: 100, networkGb: 1000 },
  );
  expect(t.total).toBe(2 * (1 + 20 + 300 + 4000));
  expect(t.periodEnd).toBe('2026-12-04T11:30:00.000Z');
});

it('protocol fields name their columns', () => {
  expect(columnOf('resourceLimits.memoryMb')).toBe('container_services.resource_limits.memory_mb');
  expect(columnOf('environmentVars.PORT')).toBe('container_services.environment_vars');
  expect(columnOf('secrets[2].mountPath')).toBe('container_service_secrets.mount_path');
  expect(columnOf('imageTag')).toBe('container_deployments.image_tag');
});

it("the panel's worker status in a heartbeat answer", () => {
  expect(panelWorkerStatus({ success: true, data: { status: 'draining' } })).toBe('draining');
  expect(panelWorkerStatus({ success: true, message: 'Heartbeat received' })).toBeUndefined();
  expect(panelWorkerStatus({ data: { status: 'melting' } })).toBeUndefined();
});
