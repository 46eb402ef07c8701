import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { parseDesiredSet } from '../../src/protocol/deployment.js';
import { RejectionLog } from '../../src/agent/deployments/rejection-log.js';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(JSON.parse(chunk.toString()));
        cb();
      },
    }),
  );
  return { logger, warnings: () => lines.filter((l) => l.level === 40) };
}

const bad = (i: number, memoryMb = -1) => ({
  id: `d-${i}`,
  serviceId: `s-${i}`,
  organizationId: 'o',
  slug: 'x',
  imageTag: 'registry.example.com/app:1',
  desiredState: 'running',
  environmentVars: {},
  resourceLimits: { cpuCores: 0.1, memoryMb },
});

function poll(log: RejectionLog, list: unknown[], logger: ReturnType<typeof capture>['logger']) {
  const parsed = parseDesiredSet({ success: true, data: { deployments: list } });
  if (!parsed.ok) throw new Error(parsed.error);
  log.note(parsed.rejected, list, logger);
}

describe('rejected deployments are logged once per content', () => {
  it('1000 rejected deployments re-sent by every poll warn 1000 times in all, not per poll', async () => {
    const { logger, warnings } = capture();
    const log = new RejectionLog();
    const list = Array.from({ length: 1000 }, (_, i) => bad(i));
    for (let p = 0; p < 5; p++) poll(log, structuredClone(list), logger);
    await new Promise((r) => setImmediate(r));
    expect(warnings()).toHaveLength(1000);
    expect(warnings()[0]).toMatchObject({ deploymentId: 'd-0', field: 'resourceLimits.memoryMb' });
  });

  it('warns again when a rejected deployment changes, or leaves the set and comes back', async () => {
    const { logger, warnings } = capture();
    const log = new RejectionLog();
    poll(log, [bad(1), bad(2)], logger);
    poll(log, [bad(1, -2), bad(2)], logger); // d-1 changed (same field and rule): said again
    poll(log, [bad(2)], logger);
    poll(log, [bad(1, -2), bad(2)], logger); // d-1 back
    await new Promise((r) => setImmediate(r));
    expect(warnings().map((w) => w.deploymentId)).toEqual(['d-1', 'd-2', 'd-1', 'd-1']);
  });
});
