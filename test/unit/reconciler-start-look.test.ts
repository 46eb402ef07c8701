// A container start is what a deploy waits for, so a start after a quiet spell is looked at
// START_LOOK_MS after its event (not EVENT_COALESCE_MS); a look that came before Swarm's task
// record said running is repeated START_LOOK_MS later, then every EVENT_COALESCE_MS up to
// START_AWAIT_MS after the event. Bursts of starts still cost at most a pass per EVENT_COALESCE_MS.
// Fake timers; an in-memory SwarmPort whose one task the test moves from `starting` to `running`
// (the lag is the real one's: Swarm commits task states in batches).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EVENT_COALESCE_MS, Reconciler } from '../../src/agent/deployments/reconciler.js';
import { START_AWAIT_MS, START_LOOK_MS } from '../../src/agent/deployments/start-watch.js';
import type { TaskObservation } from '../../src/domain/deployment-status.js';
import { LABEL } from '../../src/domain/labels.js';
import type { EngineEvent } from '../../src/ports.js';
import { deployment, logger, memorySwarm, NODE, WORKER } from '../helpers/memory-swarm.js';

const CONTAINER = 'c0ffee';
const ours = { [LABEL.managed]: 'true', [LABEL.workerId]: WORKER };
const start = (id = CONTAINER): EngineEvent => ({ type: 'container', action: 'start', id, attributes: { name: 'x', ...ours } });

async function steady() {
  const { port } = memorySwarm();
  let taskState = 'running';
  const inner = port.listTasks.bind(port);
  // The one task carries the container id of the start events, in the state the test sets.
  port.listTasks = async () => (await inner()).map((t): TaskObservation => ({ ...t, containerId: CONTAINER, state: taskState }));
  let passes = 0;
  const reported: string[] = [];
  const r = new Reconciler({
    port,
    workerId: WORKER,
    nodeId: () => NODE,
    ipAddress: '127.0.0.1',
    publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
    resyncMs: 600_000,
    logger,
    onStatus: (changes) => reported.push(changes[0]!.derived.status),
    onPass: () => void passes++,
  });
  r.setDesired({ deployments: [deployment()], rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() });
  r.start();
  r.setEventsLive(true);
  await vi.advanceTimersByTimeAsync(60_000); // created, seen running, quiet since
  return { r, passes: () => passes, reported, setTaskState: (s: string) => (taskState = s), base: passes };
}

describe('a container start is looked at soon', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('runs a pass START_LOOK_MS after a start that follows a quiet spell, well before EVENT_COALESCE_MS, and no more once it is running', async () => {
    expect(START_LOOK_MS).toBeLessThan(EVENT_COALESCE_MS / 2);
    const { r, passes, base } = await steady();
    r.noteEngineEvent(start());
    await vi.advanceTimersByTimeAsync(START_LOOK_MS - 10);
    expect(passes()).toBe(base);
    await vi.advanceTimersByTimeAsync(20);
    expect(passes()).toBe(base + 1);
    await vi.advanceTimersByTimeAsync(10 * EVENT_COALESCE_MS);
    expect(passes()).toBe(base + 1);
    await r.stop();
  });

  it('looks again START_LOOK_MS later when the task was still starting, and reports running on that look', async () => {
    const { r, passes, base, reported, setTaskState } = await steady();
    setTaskState('starting');
    r.noteEngineEvent(start());
    await vi.advanceTimersByTimeAsync(START_LOOK_MS + 5);
    expect(passes()).toBe(base + 1);
    expect(reported.at(-1)).toBe('deploying');
    setTaskState('running'); // Swarm's record catches up
    await vi.advanceTimersByTimeAsync(START_LOOK_MS - 10);
    expect(passes()).toBe(base + 1);
    await vi.advanceTimersByTimeAsync(20);
    expect(passes()).toBe(base + 2);
    expect(reported.at(-1)).toBe('running');
    await vi.advanceTimersByTimeAsync(500); // found: no more quick looks (the next settle pass is a second or more away)
    expect(passes()).toBe(base + 2);
    await r.stop();
  });

  it('keeps looking every EVENT_COALESCE_MS while Swarm is slow to say running, and reports it on the look that sees it', async () => {
    const { r, passes, base, reported, setTaskState } = await steady();
    setTaskState('starting');
    r.noteEngineEvent(start());
    await vi.advanceTimersByTimeAsync(2 * START_LOOK_MS + 20);
    expect(passes()).toBe(base + 2);
    await vi.advanceTimersByTimeAsync(EVENT_COALESCE_MS);
    expect(passes()).toBe(base + 3);
    expect(reported.at(-1)).toBe('deploying');
    setTaskState('running'); // a loaded manager committed it ~0.5 s after the event
    await vi.advanceTimersByTimeAsync(EVENT_COALESCE_MS);
    expect(passes()).toBe(base + 4);
    expect(reported.at(-1)).toBe('running');
    await vi.advanceTimersByTimeAsync(2 * START_AWAIT_MS);
    expect(passes()).toBe(base + 4); // seen: no more quick looks
    await r.stop();
  });

  it('gives up the quick looks START_AWAIT_MS after the event when the task never shows running, leaving it to the settle passes', async () => {
    const { r, passes, base, setTaskState } = await steady();
    setTaskState('starting');
    r.noteEngineEvent(start());
    await vi.advanceTimersByTimeAsync(START_AWAIT_MS + EVENT_COALESCE_MS + 20);
    const quick = passes() - base;
    expect(quick).toBeGreaterThanOrEqual(2 + (START_AWAIT_MS - 2 * START_LOOK_MS) / EVENT_COALESCE_MS - 1);
    expect(quick).toBeLessThanOrEqual(2 + (START_AWAIT_MS - 2 * START_LOOK_MS) / EVENT_COALESCE_MS + 1);
    // From here on only the ordinary settle passes (a second or more apart) look at the deploying task.
    await vi.advanceTimersByTimeAsync(900);
    expect(passes() - base).toBe(quick);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(passes() - base).toBeGreaterThan(quick);
    await r.stop();
  });

  it('costs at most a pass per EVENT_COALESCE_MS in a burst of starts (a fleet converging), and stops looking START_AWAIT_MS after it', async () => {
    const { r, passes, base } = await steady();
    const burstMs = 5_000;
    // Starts whose tasks this Swarm never lists: each is looked for until START_AWAIT_MS after its event.
    for (let t = 0; t < burstMs; t += 25) {
      r.noteEngineEvent(start(`c-${t}`));
      await vi.advanceTimersByTimeAsync(25);
    }
    const n = passes() - base;
    expect(n).toBeGreaterThanOrEqual(burstMs / EVENT_COALESCE_MS - 1);
    expect(n).toBeLessThanOrEqual(burstMs / EVENT_COALESCE_MS + 2);
    await vi.advanceTimersByTimeAsync(START_AWAIT_MS + EVENT_COALESCE_MS);
    const after = passes();
    expect(after - base - n).toBeLessThanOrEqual(START_AWAIT_MS / EVENT_COALESCE_MS + 1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(passes()).toBe(after);
    await r.stop();
  });
});
