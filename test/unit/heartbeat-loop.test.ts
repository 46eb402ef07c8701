import { afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { HeartbeatLoop, type HeartbeatLoopDeps, type HeartbeatRecord } from '../../src/agent/heartbeat-loop.js';
import type { CallResult } from '../../src/controlplane/control-plane-client.js';
import type { HeartbeatRequest } from '../../src/protocol/worker.js';

const silent = pino({ level: 'silent' });
const ok: CallResult = { ok: true, status: 200, body: { success: true }, headers: {}, rttMs: 1 };
const http = (status: number, retryAfterMs?: number): CallResult => ({
  ok: false,
  kind: 'http',
  status,
  retryAfterMs,
  message: `HTTP ${status}`,
  rttMs: 1,
});
const payload = {
  cpuPercent: 1,
  memoryPercent: 2,
  diskPercent: 3,
  containerCount: 0,
  agentVersion: 't',
  swarmNodeId: null,
  dockerHealthy: true,
};

function loop(answers: CallResult[], extra: Partial<HeartbeatLoopDeps> = {}) {
  const sent: HeartbeatRequest[] = [];
  const records: HeartbeatRecord[] = [];
  const l = new HeartbeatLoop({
    send: async (_id, body) => {
      sent.push(body);
      return answers.shift() ?? ok;
    },
    collect: async () => payload,
    workerId: () => 'w1',
    reregister: async () => true,
    logger: silent,
    intervalMs: 10_000,
    random: () => 0.5,
    onBeat: (r) => records.push(r),
    ...extra,
  });
  return { l, sent, records };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('heartbeat loop', () => {
  it('beats at once, then every interval, with increasing seq and one bootId', async () => {
    vi.useFakeTimers();
    const { l, sent } = loop([]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(10_500);
    expect(sent).toHaveLength(2);
    expect(sent.map((s) => s.seq)).toEqual([1, 2]);
    expect(new Set(sent.map((s) => s.bootId)).size).toBe(1);
    await l.stop();
  });

  it('backs off with jitter on 5xx and network errors and recovers by itself', async () => {
    vi.useFakeTimers();
    const net: CallResult = { ok: false, kind: 'network', message: 'ECONNREFUSED', rttMs: 0 };
    const { l, records } = loop([http(500), net, http(502), ok]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(records.map((r) => r.outcome)).toEqual(['unavailable', 'network', 'unavailable', 'accepted']);
    // random()=0.5: half of 1 s, 2 s, 4 s
    expect(records.slice(0, 3).map((r) => r.nextInMs)).toEqual([500, 1000, 2000]);
    await l.stop();
  });

  it('honours Retry-After on 429 and does not call before it', async () => {
    vi.useFakeTimers();
    const { l, sent, records } = loop([http(429, 900_000)]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(records[0]!.outcome).toBe('rate-limited');
    expect(records[0]!.nextInMs).toBeGreaterThanOrEqual(900_000);
    await vi.advanceTimersByTimeAsync(899_000);
    expect(sent).toHaveLength(1);
    // random()=0.5: 900 s + half of the 60 s spread
    await vi.advanceTimersByTimeAsync(32_000);
    expect(sent).toHaveLength(2);
    await l.stop();
  });

  it('honours Retry-After on 503', async () => {
    vi.useFakeTimers();
    const { l, records } = loop([http(503, 30_000)]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(records[0]!.nextInMs).toBeGreaterThanOrEqual(30_000);
    await l.stop();
  });

  it('does not hammer on 401/403: retries minutes later', async () => {
    vi.useFakeTimers();
    const { l, sent, records } = loop([http(401), http(403)]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(records[0]!.outcome).toBe('unauthorized');
    expect(records[0]!.nextInMs).toBeGreaterThanOrEqual(60_000);
    await vi.advanceTimersByTimeAsync(59_000);
    expect(sent).toHaveLength(1);
    await l.stop();
  });

  it('registers again on 404 and beats again at once', async () => {
    vi.useFakeTimers();
    const reregister = vi.fn(async () => true);
    const { l, sent } = loop([http(404)], { reregister });
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(reregister).toHaveBeenCalledTimes(1);
    expect(sent).toHaveLength(2);
    await l.stop();
  });

  it('a 404 again right after a successful re-register backs off instead of looping', async () => {
    vi.useFakeTimers();
    const reregister = vi.fn(async () => true);
    // A panel that accepts every register and still answers every heartbeat 404.
    const { l, sent, records } = loop(
      Array.from({ length: 50 }, () => http(404)),
      { reregister },
    );
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(1);
    // First 404: registered again and beat at once; second: backoff (random 0.5 → half of 2 s).
    expect(sent).toHaveLength(2);
    expect(records.map((r) => r.nextInMs)).toEqual([0, 1_000]);
    await vi.advanceTimersByTimeAsync(10_000);
    // 1 s, then 2 s, then 4 s: four more at most, not one per millisecond.
    expect(sent.length).toBeLessThanOrEqual(5);
    expect(reregister.mock.calls.length).toBe(sent.length);
    await l.stop();
  });

  it('after an accepted beat a new 404 is again registered and retried at once', async () => {
    vi.useFakeTimers();
    const { l, records } = loop([http(404), ok, http(404)]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(10_500);
    expect(records.slice(0, 3).map((r) => [r.outcome, r.nextInMs === 0])).toEqual([
      ['not-found', true],
      ['accepted', false],
      ['not-found', true],
    ]);
    await l.stop();
  });

  it('records the wait a 429 asked for, so the status API can say the worker is silenced', async () => {
    vi.useFakeTimers();
    const { l, records } = loop([http(429, 900_000), http(500, 30_000)]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(records[0]!.serverWaitMs).toBe(900_000);
    await vi.advanceTimersByTimeAsync(records[0]!.nextInMs);
    // A 500's Retry-After is not honoured (only 429 and 503), so it is not a requested wait either.
    expect(records[1]!.serverWaitMs).toBeUndefined();
    await l.stop();
  });

  it('survives a collector that throws', async () => {
    vi.useFakeTimers();
    let calls = 0;
    const { l, records } = loop([], {
      collect: async () => {
        if (calls++ === 0) throw new Error('boom');
        return payload;
      },
    });
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(records.map((r) => r.outcome)).toEqual(['collect-failed', 'accepted']);
    await l.stop();
  });

  it('stop() cancels the next beat', async () => {
    vi.useFakeTimers();
    const { l, sent } = loop([]);
    l.start();
    await vi.advanceTimersByTimeAsync(0);
    await l.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sent).toHaveLength(1);
  });
});
