// Docker events start a reconcile pass (#7: passes on events plus a slow resync, instead of a pass
// every minute). Which events count, how a burst coalesces, and the resync bound while the stream
// is down. Fake timers drive the reconciler's loop; an in-memory SwarmPort stands in for Swarm
// (the real event stream against a real dockerd is covered in test/e2e/engine-events.test.ts).
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EVENT_COALESCE_MS, EVENTLESS_RESYNC_MS, RECONCILE_EVENT_FILTERS, Reconciler } from '../../src/agent/deployments/reconciler.js';
import { LABEL } from '../../src/domain/labels.js';
import type { EngineEvent } from '../../src/ports.js';
import { deployment, logger, memorySwarm, NODE, noop, WORKER } from '../helpers/memory-swarm.js';

const RESYNC_MS = 600_000;

function setUp() {
  const { port } = memorySwarm();
  let passes = 0;
  const r = new Reconciler({
    port,
    workerId: WORKER,
    nodeId: () => NODE,
    ipAddress: '127.0.0.1',
    publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
    resyncMs: RESYNC_MS,
    logger,
    onStatus: noop,
    onPass: () => void passes++,
  });
  return { r, port, passes: () => passes };
}

const containerEvent = (action: string, labels: Record<string, string>): EngineEvent => ({
  type: 'container',
  action,
  id: randomUUID(),
  attributes: { name: 'x', ...labels },
});
const ours = { [LABEL.managed]: 'true', [LABEL.workerId]: WORKER };

describe('reconcile passes on Docker events', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A started reconciler with one running deployment, its first passes done, events live. */
  async function steady() {
    const s = setUp();
    s.r.setDesired({ deployments: [deployment()], rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() });
    s.r.start();
    s.r.setEventsLive(true);
    await vi.advanceTimersByTimeAsync(5_000); // create, then the settle pass that sees it running
    const serviceId = (await s.port.listServices())[0]!.id;
    return { ...s, serviceId, base: s.passes() };
  }

  it('asks Docker for container and service events, the actions that can change a status', () => {
    expect(RECONCILE_EVENT_FILTERS).toEqual({ type: ['container', 'service'], event: ['start', 'die', 'oom', 'update', 'remove'] });
  });

  it('runs one pass EVENT_COALESCE_MS after a container of this worker dies, not before, and none without events', async () => {
    const { r, passes, base } = await steady();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(passes()).toBe(base); // quiet: the resync is 10 minutes
    r.noteEngineEvent(containerEvent('die', ours));
    await vi.advanceTimersByTimeAsync(EVENT_COALESCE_MS - 10);
    expect(passes()).toBe(base);
    await vi.advanceTimersByTimeAsync(20);
    expect(passes()).toBe(base + 1);
    await r.stop();
  });

  it('coalesces a burst of events into one pass', async () => {
    const { r, passes, base } = await steady();
    // Dies and OOMs; a start after a quiet spell is looked at sooner (reconciler-start-look.test.ts).
    for (let i = 0; i < 20; i++) {
      r.noteEngineEvent(containerEvent(i % 2 ? 'oom' : 'die', ours));
      await vi.advanceTimersByTimeAsync(EVENT_COALESCE_MS / 40);
    }
    await vi.advanceTimersByTimeAsync(2 * EVENT_COALESCE_MS);
    expect(passes()).toBe(base + 1);
    await r.stop();
  });

  it("ignores other workers' and unmanaged containers, and actions that change no status", async () => {
    const { r, passes, base } = await steady();
    r.noteEngineEvent(containerEvent('die', { [LABEL.managed]: 'true', [LABEL.workerId]: 'another-worker' }));
    r.noteEngineEvent(containerEvent('die', { [LABEL.workerId]: WORKER }));
    r.noteEngineEvent(containerEvent('die', {}));
    r.noteEngineEvent(containerEvent('exec_start', ours));
    r.noteEngineEvent(containerEvent('create', ours));
    r.noteEngineEvent({ type: 'network', action: 'connect', id: 'n', attributes: ours });
    await vi.advanceTimersByTimeAsync(10 * EVENT_COALESCE_MS);
    expect(passes()).toBe(base);
    await r.stop();
  });

  it("runs a pass for an event about a service it owns, not for anyone else's service", async () => {
    const { r, passes, base, serviceId } = await steady();
    r.noteEngineEvent({ type: 'service', action: 'update', id: 'someone-elses-service', attributes: { name: 'x' } });
    await vi.advanceTimersByTimeAsync(3 * EVENT_COALESCE_MS);
    expect(passes()).toBe(base);
    r.noteEngineEvent({ type: 'service', action: 'update', id: serviceId, attributes: { name: 'x' } });
    await vi.advanceTimersByTimeAsync(2 * EVENT_COALESCE_MS);
    expect(passes()).toBe(base + 1);
    await r.stop();
  });

  it('resyncs every configured interval while events are live, at least every minute while they are not, and looks at once when they come back', async () => {
    const { r, passes, base } = await steady();
    await vi.advanceTimersByTimeAsync(RESYNC_MS - 60_000);
    const live = passes();
    expect(live - base).toBeLessThanOrEqual(1); // at most the one resync pass due in the window
    r.setEventsLive(false);
    const down = passes();
    await vi.advanceTimersByTimeAsync(5 * EVENTLESS_RESYNC_MS + 1_000);
    expect(passes() - down).toBeGreaterThanOrEqual(5);
    expect(passes() - down).toBeLessThanOrEqual(6);
    const before = passes();
    r.setEventsLive(true);
    await vi.advanceTimersByTimeAsync(10);
    expect(passes()).toBe(before + 1); // events may have been missed while it was down
    await vi.advanceTimersByTimeAsync(RESYNC_MS / 2);
    expect(passes()).toBe(before + 1);
    await r.stop();
  });

  it('does nothing with events before it has a desired set or after it stopped', async () => {
    const s = setUp();
    s.r.start();
    s.r.noteEngineEvent(containerEvent('die', ours));
    s.r.setEventsLive(true);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(s.passes()).toBe(0);
    const { r, passes, base } = await steady();
    await r.stop();
    r.noteEngineEvent(containerEvent('die', ours));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(passes()).toBe(base);
  });
});
