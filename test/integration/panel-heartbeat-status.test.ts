import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beatVerdict, beatVerdictParams, DEFAULT_HEALTH, statusAfterHeartbeatSql } from '../../src/panel/health.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';

/**
 * The worker status a heartbeat leaves, evaluated by PostgreSQL itself: the rule is one SQL
 * expression inside the heartbeat's UPDATE, so it is checked where it runs, over a row with the
 * `status` and `current_load` columns it reads.
 */

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

const beat = { cpuPercent: 10, memoryPercent: 10, diskPercent: 10, dockerHealthy: true, draining: false };

async function after(status: string, previousAgentDraining: boolean, b: typeof beat | Record<string, unknown>): Promise<string> {
  const verdict = beatVerdict({ ...beat, ...b } as typeof beat, DEFAULT_HEALTH);
  const { rows } = await pg.pool.query<{ next: string }>(
    `SELECT ${statusAfterHeartbeatSql(3)} AS next FROM (SELECT $1::varchar AS status, $2::jsonb AS current_load) AS container_workers`,
    [status, JSON.stringify({ cpuPercent: 1, draining: previousAgentDraining }), ...beatVerdictParams(verdict)],
  );
  return rows[0]!.next;
}

describe('worker status after a heartbeat', () => {
  it("keeps an admin's drain, lifts the agent's own", async () => {
    expect(await after('draining', false, beat)).toBe('draining');
    expect(await after('draining', true, beat)).toBe('active');
    expect(await after('active', false, { draining: true })).toBe('draining');
    expect(await after('unhealthy', false, { draining: true, dockerHealthy: false })).toBe('draining');
  });

  it('offline and pending recover with a beat; thresholds use > like SkyPanelV2; Docker down is unhealthy', async () => {
    expect(await after('offline', false, beat)).toBe('active');
    expect(await after('pending', false, beat)).toBe('active');
    expect(await after('active', false, { memoryPercent: 95 })).toBe('active');
    expect(await after('active', false, { memoryPercent: 95.1 })).toBe('unhealthy');
    expect(await after('active', false, { dockerHealthy: false })).toBe('unhealthy');
  });

  it('an unhealthy worker recovers only below the margin, so a load at the threshold does not flap', async () => {
    expect(await after('unhealthy', false, { diskPercent: 86 })).toBe('unhealthy');
    expect(await after('active', false, { diskPercent: 86 })).toBe('active');
    expect(await after('unhealthy', false, { diskPercent: 85 })).toBe('active');
  });

  it("a current_load that is not an object, or a draining flag that is not true, is not the agent's drain", async () => {
    const verdict = beatVerdictParams(beatVerdict(beat, DEFAULT_HEALTH));
    for (const load of ['[]', '"x"', '{"draining":"yes"}', '{}', 'null']) {
      const { rows } = await pg.pool.query<{ next: string }>(
        `SELECT ${statusAfterHeartbeatSql(2)} AS next FROM (SELECT 'draining'::varchar AS status, $1::jsonb AS current_load) AS container_workers`,
        [load, ...verdict],
      );
      expect(rows[0]!.next, load).toBe('draining');
    }
  });
});
