import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DesiredFeed, type ListenClient } from '../../src/panel/desired-feed.js';

afterEach(() => vi.useRealTimers());

/**
 * A LISTEN connection that fails to open while `refuse` says so: a database that keeps refusing
 * for as long as a test wants is a fault a real one cannot be made to show on demand.
 */
function connector(refuse: () => boolean) {
  const clients: (EventEmitter & ListenClient)[] = [];
  const connect = () => {
    const c = Object.assign(new EventEmitter(), {
      connect: async () => {
        if (refuse()) throw new Error('connection refused');
      },
      query: async () => undefined,
      end: async () => undefined,
    }) as EventEmitter & ListenClient;
    clients.push(c);
    return c;
  };
  return { connect, clients };
}

describe('DesiredFeed reconnects', () => {
  it('keeps trying with backoff while the database refuses, listens once it answers, and stops on close', async () => {
    vi.useFakeTimers();
    let down = true;
    const db = connector(() => down);
    const feed = new DesiredFeed(db.connect);
    await feed.start();
    expect(feed.listening).toBe(false);
    await vi.advanceTimersByTimeAsync(5_000);
    const attempts = db.clients.length;
    expect(attempts).toBeGreaterThanOrEqual(3); // 0.5–1 s, then up to 1.5, 2.5 s… apart
    down = false;
    await vi.advanceTimersByTimeAsync(35_000);
    expect(feed.listening).toBe(true);
    const listeningWith = db.clients.length;
    // A loss after listening: the next attempt comes by itself.
    db.clients.at(-1)!.emit('end');
    expect(feed.listening).toBe(false);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(feed.listening).toBe(true);
    expect(db.clients.length).toBe(listeningWith + 1);
    await feed.close();
    db.clients.at(-1)!.emit('end');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(db.clients.length).toBe(listeningWith + 1);
    expect(vi.getTimerCount()).toBe(0);
  });
});
