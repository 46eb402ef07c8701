import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_BACKOFF, delayAfterFailure, fullJitter } from '../../src/controlplane/backoff.js';
import type { CallResult } from '../../src/controlplane/control-plane-client.js';
import { HeartbeatLoop } from '../../src/agent/heartbeat-loop.js';

/**
 * 1000 agents lose the control plane together for 5 minutes. Simulated in one process on a virtual
 * clock (vitest fake timers), but every agent is the REAL HeartbeatLoop with the real backoff
 * (delayAfterFailure → fullJitter, 1 s doubling to the 60 s cap, jitter applied at the cap): only
 * the network is replaced, by a `send` that refuses the connection while the outage lasts.
 */

const FLEET = 1000;
const INTERVAL_MS = 30_000; // the default heartbeatIntervalSec
const OUTAGE_START_MS = 120_000; // two minutes of steady state first
const OUTAGE_MS = 5 * 60_000;
const RETURN_MS = OUTAGE_START_MS + OUTAGE_MS;
const OBSERVE_MS = 60_000; // the first minute after the panel returns

const silent = pino({ level: 'silent' });
const accepted: CallResult = { ok: true, status: 200, body: { success: true, message: 'Heartbeat received' }, headers: {}, rttMs: 1 };
const refused: CallResult = { ok: false, kind: 'network', message: 'ECONNREFUSED 127.0.0.1:3001', rttMs: 0 };

/** Deterministic PRNG (mulberry32) so the run, and its numbers, are reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function perSecond(times: readonly number[], from: number, seconds: number): number[] {
  const bins = new Array<number>(seconds).fill(0);
  for (const t of times) {
    const s = Math.floor((t - from) / 1000);
    if (s >= 0 && s < seconds) bins[s]!++;
  }
  return bins;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('a fleet of 1000 agents after a 5-minute control-plane outage', () => {
  it('the shared backoff rule is full jitter up to the cap, also for network failures', () => {
    // The property the fleet result rests on: after enough failures every retry is uniform over [0, cap].
    const rnd = mulberry32(7);
    const delays = Array.from({ length: 20_000 }, () => delayAfterFailure({ kind: 'network' }, 12, DEFAULT_BACKOFF, rnd));
    expect(Math.min(...delays)).toBeLessThan(1_000);
    expect(Math.max(...delays)).toBeGreaterThan(59_000);
    expect(Math.max(...delays)).toBeLessThan(DEFAULT_BACKOFF.capMs);
    expect(fullJitter(3, DEFAULT_BACKOFF, () => 0.999_999)).toBeLessThan(8_000);
  });

  it('comes back spread over the backoff window, not as a spike', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: 0 });
    const t0 = Date.now();
    const rnd = mulberry32(20261125);
    const arrivals: number[] = []; // every request the control plane sees (virtual ms since t0)
    const firstSuccessAfterReturn = new Map<number, number>();
    const loops: HeartbeatLoop[] = [];

    for (let i = 0; i < FLEET; i++) {
      const agent = i;
      const loop = new HeartbeatLoop({
        send: async () => {
          const at = Date.now() - t0;
          arrivals.push(at);
          const down = at >= OUTAGE_START_MS && at < RETURN_MS;
          if (!down && at >= RETURN_MS && !firstSuccessAfterReturn.has(agent)) firstSuccessAfterReturn.set(agent, at);
          return down ? refused : accepted;
        },
        collect: async () => ({
          cpuPercent: 1,
          memoryPercent: 2,
          diskPercent: 3,
          containerCount: 0,
          agentVersion: 'sim',
          swarmNodeId: null,
          dockerHealthy: true,
        }),
        workerId: () => `w-${agent}`,
        reregister: async () => true,
        logger: silent,
        intervalMs: INTERVAL_MS,
        backoff: DEFAULT_BACKOFF,
        random: rnd,
      });
      loops.push(loop);
      // Agents were started over a whole interval (hosts boot at different times), not in one instant.
      setTimeout(() => loop.start(), Math.floor(rnd() * INTERVAL_MS));
    }

    await vi.advanceTimersByTimeAsync(RETURN_MS + OBSERVE_MS + 1);
    await Promise.all(loops.map((l) => l.stop()));

    const steady = perSecond(arrivals, OUTAGE_START_MS - 60_000, 60);
    const during = perSecond(arrivals, OUTAGE_START_MS, OUTAGE_MS / 1000);
    const after = perSecond(arrivals, RETURN_MS, OBSERVE_MS / 1000);
    const firsts = [...firstSuccessAfterReturn.values()];
    const firstBins = perSecond(firsts, RETURN_MS, OBSERVE_MS / 1000);
    const peak = Math.max(...after);
    const peakFirst = Math.max(...firstBins);
    const spreadMs = Math.max(...firsts) - Math.min(...firsts);
    const quantile = (q: number) => [...firsts].sort((a, b) => a - b)[Math.floor(q * (firsts.length - 1))]! - RETURN_MS;

    console.log(
      [
        `fleet-reconnect: ${FLEET} agents, heartbeat ${INTERVAL_MS / 1000} s, outage ${OUTAGE_MS / 60_000} min, backoff ${DEFAULT_BACKOFF.baseMs / 1000} s doubling to ${DEFAULT_BACKOFF.capMs / 1000} s (full jitter)`,
        `  steady state before the outage: peak ${Math.max(...steady)} req/s, mean ${(steady.reduce((a, b) => a + b, 0) / 60).toFixed(1)} req/s`,
        `  during the outage: ${during.reduce((a, b) => a + b, 0)} refused attempts, peak ${Math.max(...during)} req/s (last minute peak ${Math.max(...during.slice(-60))} req/s)`,
        `  first minute after the return: ${after.reduce((a, b) => a + b, 0)} requests, PEAK ${peak} req/s (${((100 * peak) / FLEET).toFixed(1)} % of the fleet) at second ${after.indexOf(peak)}`,
        `  first successful heartbeat per agent: ${firsts.length}/${FLEET} within ${(Math.max(...firsts) - RETURN_MS) / 1000} s; peak ${peakFirst} agents/s; p10 ${(quantile(0.1) / 1000).toFixed(1)} s, p50 ${(quantile(0.5) / 1000).toFixed(1)} s, p90 ${(quantile(0.9) / 1000).toFixed(1)} s; spread ${(spreadMs / 1000).toFixed(1)} s`,
      ].join('\n'),
    );

    // Every agent is back within one cap window, without a restart.
    expect(firsts).toHaveLength(FLEET);
    expect(Math.max(...firsts) - RETURN_MS).toBeLessThanOrEqual(DEFAULT_BACKOFF.capMs);
    // Spread over the window rather than a spike: no second carries more than 5 % of the returning fleet...
    expect(peakFirst).toBeLessThanOrEqual(FLEET * 0.05);
    // ...and, counting the regular heartbeats of agents already back, the panel's busiest second is within
    // 1.5x the busiest second of ordinary steady state (a synchronised return would be ~FLEET in one second).
    expect(peak).toBeLessThanOrEqual(1.5 * Math.max(...steady));
    expect(peak).toBeLessThanOrEqual(FLEET * 0.08);
    // ...and the returns cover at least 45 s of the 60 s window, half of them after the first 15 s.
    expect(spreadMs).toBeGreaterThanOrEqual(45_000);
    expect(quantile(0.5)).toBeGreaterThanOrEqual(10_000);
    // During the outage the fleet does not hammer either: at the cap it is ~FLEET/30 s, like steady state.
    expect(Math.max(...during.slice(-60))).toBeLessThanOrEqual(FLEET * 0.05);
  }, 90_000);
});
