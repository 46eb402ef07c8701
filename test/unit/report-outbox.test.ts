import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { fitReport, MAX_REPORT_BODY_BYTES, ReportOutbox } from '../../src/agent/deployments/report-outbox.js';
import { StateStore } from '../../src/agent/state/state-store.js';
import { storedOutboxSchema } from '../../src/agent/state/state-schemas.js';
import type { CallResult, ControlPlaneClient } from '../../src/controlplane/control-plane-client.js';

const silent = pino({ level: 'silent' });
const unreachable = { postJson: async () => ({ ok: false, kind: 'network', message: 'down', rttMs: 0 }) } as unknown as ControlPlaneClient;

async function outbox(dir: string, bootId = 'boot-1') {
  const store = new StateStore(dir);
  await store.init();
  const o = new ReportOutbox({ client: unreachable, workerId: () => 'w', bootId, store, logger: silent });
  await o.restore();
  return o;
}

describe('report outbox', () => {
  it('keeps only the newest report per deployment and skips repeats', async () => {
    const o = await outbox(await mkdtemp(join(tmpdir(), 'skp-outbox-')));
    o.offer('d1', { status: 'deploying' });
    o.offer('d1', { status: 'deploying' });
    o.offer('d1', { status: 'running' });
    o.offer('d2', { status: 'failed', message: 'x' });
    expect(o.depth).toBe(2);
    expect(o.lastReported('d1')).toEqual({ status: 'running' });
    await o.stop();
  });

  it('a rebuilt outbox in the same boot continues the seq instead of reusing it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-outbox-'));
    const first = await outbox(dir);
    first.offer('d1', { status: 'deploying' });
    first.offer('d2', { status: 'deploying' });
    await first.stop();
    const second = await outbox(dir);
    second.offer('d3', { status: 'running' });
    await second.stop();
    const stored = (await new StateStore(dir).read('outbox.json', storedOutboxSchema))!;
    const seqs = stored.pending.map((e) => e.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(stored.pending.find((e) => e.deploymentId === 'd3')!.seq).toBe(3);
  });

  it('fits a report into what the panel accepts: huge escaped logs are cut, bad fields dropped, status kept', () => {
    const logs = Array.from({ length: 3000 }, () => '\u0001'.repeat(20)).join('\n');
    const { content, dropped } = fitReport({ status: 'failed', deploymentLogs: logs, publicUrl: 'not a url' });
    expect(content.status).toBe('failed');
    expect(dropped).toEqual(['publicUrl']);
    expect(Buffer.byteLength(JSON.stringify(content))).toBeLessThanOrEqual(MAX_REPORT_BODY_BYTES);
  });
  it('treats 404 WORKER_NOT_FOUND as a lost worker: retried with backoff, not parked for the extension probe', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-outbox-'));
    const store = new StateStore(dir);
    await store.init();
    const answers: CallResult[] = [
      { ok: false, kind: 'http', status: 404, code: 'WORKER_NOT_FOUND', message: 'Worker not found', rttMs: 1 },
      { ok: true, status: 200, body: {}, headers: {}, rttMs: 1 },
    ];
    let calls = 0;
    const client = { postJson: async () => answers[Math.min(calls++, answers.length - 1)]! } as unknown as ControlPlaneClient;
    // Backoff of 1-20 ms: a stock-panel 404 would instead wait the 10-minute extension probe.
    const o = new ReportOutbox({ client, workerId: () => 'w', bootId: 'b', store, logger: silent, backoff: { baseMs: 20, capMs: 20 } });
    await o.restore();
    o.start();
    o.offer('d1', { status: 'running' });
    const deadline = Date.now() + 3_000;
    while (o.depth > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await o.stop();
    expect(calls).toBe(2);
    expect(o.depth).toBe(0);
  });
});
