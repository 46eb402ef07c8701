import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createDockerClient, type EngineClient } from '../../src/swarm/docker-client.js';
import { EngineEventStream, parseEngineEvent, watchEngineEvents, type EngineEventStreamOptions } from '../../src/swarm/engine-events.js';
import type { EngineEvent } from '../../src/ports.js';

/*
 * The event stream against a fake Engine: a node:http server on a unix socket in a temp dir that
 * answers `GET /events` with a chunked application/json body the test writes piece by piece. Every
 * wait is a poll bounded at 5 s, or a short sleep where the point is that nothing happens.
 */

const MIB = 1024 * 1024;
const CLIENT_TIMEOUT_MS = 200;

/** One `GET /events` as the fake Engine saw it. */
interface Conn {
  method: string;
  url: URL;
  res: ServerResponse;
  /** The response is closed: ended by the Engine or dropped by the client. */
  closed: boolean;
  /** Sends the status line and headers (done at once unless the engine's autoOpen is off). */
  open(): void;
  write(data: string | Buffer): void;
  end(): void;
}

class FakeEngine {
  readonly conns: Conn[] = [];
  /** Send the headers as soon as a request comes in (off: the test calls `open()`). */
  autoOpen = true;
  /** Answer every request with this status and JSON instead of a stream. */
  failWith: { status: number; body: unknown } | undefined;
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async listen(socketPath: string): Promise<FakeEngine> {
    const server = createServer();
    const engine = new FakeEngine(server);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => engine.#handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    return engine;
  }

  get last(): Conn {
    const c = this.conns.at(-1);
    if (!c) throw new Error('no connection yet');
    return c;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    if (this.failWith) {
      const text = JSON.stringify(this.failWith.body);
      res.writeHead(this.failWith.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    const conn: Conn = {
      method: req.method ?? '',
      url: new URL(req.url ?? '/', 'http://engine'),
      res,
      closed: false,
      open() {
        if (res.headersSent) return;
        // No content-length: the body is chunked, as dockerd's is.
        res.writeHead(200, { 'Content-Type': 'application/json', 'Docker-Experimental': 'false', 'Api-Version': '1.46' });
        res.flushHeaders();
      },
      write(data) {
        conn.open();
        res.write(data);
      },
      end() {
        conn.open();
        res.end();
      },
    };
    res.on('close', () => (conn.closed = true));
    this.conns.push(conn);
    if (this.autoOpen) conn.open();
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `p`, or a failure after `timeoutMs`: a stop() that never resolves fails the test instead of hanging it. */
async function within<T>(p: Promise<T>, what: string, timeoutMs = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function waitUntil(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A Docker event line as dockerd writes it (API 1.46), with the Actor's labels. */
function dockerEvent(action: string, id: string, extra: Record<string, string> = {}): Record<string, unknown> {
  return {
    status: action,
    id,
    from: 'nginx:alpine',
    Type: 'container',
    Action: action,
    Actor: {
      ID: id,
      Attributes: {
        'com.docker.swarm.service.id': 'svc123',
        'com.docker.swarm.task.id': 'task456',
        image: 'nginx:alpine',
        name: `web.1.${id}`,
        'skypanel.managed': 'true',
        ...extra,
      },
    },
    scope: 'local',
    time: 1718000000,
    timeNano: 1718000000123456789,
  };
}
const line = (action: string, id: string) => `${JSON.stringify(dockerEvent(action, id))}\n`;

let dir: string;
let socketSeq = 0;
const engines: FakeEngine[] = [];
const streams: { stop(): Promise<void> }[] = [];
const clients: EngineClient[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skp-engine-events-'));
});

afterEach(async () => {
  vi.restoreAllMocks();
  const stopped = Promise.all(streams.splice(0).map((s) => s.stop()));
  try {
    await within(stopped, 'stop() in afterEach');
  } finally {
    // Closing the clients releases any stream a broken stop() left open.
    for (const c of clients.splice(0)) c.close();
    await Promise.all(engines.splice(0).map((e) => e.close()));
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const nextSocketPath = () => join(dir, `docker-${++socketSeq}.sock`);

async function startEngine(socketPath = nextSocketPath()): Promise<{ engine: FakeEngine; socketPath: string }> {
  const engine = await FakeEngine.listen(socketPath);
  engines.push(engine);
  return { engine, socketPath };
}

/** A stream whose callbacks record into `log`, `events` and `delays`; not started. */
function recordingStream(
  socketPath: string,
  { delayMs, timeoutMs, ...opts }: Partial<EngineEventStreamOptions> & { delayMs?: number; timeoutMs?: number } = {},
) {
  const client = createDockerClient({ socketPath, timeoutMs: timeoutMs ?? CLIENT_TIMEOUT_MS });
  clients.push(client);
  const log: string[] = [];
  const events: EngineEvent[] = [];
  const delays: number[] = [];
  const stream = new EngineEventStream({
    client,
    filters: { type: ['container'] },
    onEvent: (e) => void events.push(e),
    onConnected: () => void log.push('connected'),
    onDisconnected: (reason) => void log.push(`disconnected: ${reason}`),
    retryDelayMs: (failures) => (delays.push(failures), delayMs ?? 20),
    ...opts,
  });
  streams.push(stream);
  return { stream, client, log, events, delays };
}

const count = (log: string[], prefix: string) => log.filter((l) => l.startsWith(prefix)).length;

describe('parseEngineEvent', () => {
  it('reads a real Docker event line into type, action, id and the string attributes', () => {
    const text = JSON.stringify(dockerEvent('die', '4f2a9c', { exitCode: '137', 'skypanel.deployment-id': 'dep-1' }));
    expect(parseEngineEvent(text)).toEqual({
      type: 'container',
      action: 'die',
      id: '4f2a9c',
      attributes: {
        'com.docker.swarm.service.id': 'svc123',
        'com.docker.swarm.task.id': 'task456',
        image: 'nginx:alpine',
        name: 'web.1.4f2a9c',
        'skypanel.managed': 'true',
        exitCode: '137',
        'skypanel.deployment-id': 'dep-1',
      },
    });
  });

  it('keeps an action with a detail, and a service event', () => {
    const health = parseEngineEvent(JSON.stringify({ ...dockerEvent('health_status: healthy', 'c1'), Action: 'health_status: healthy' }));
    expect(health?.action).toBe('health_status: healthy');
    expect(
      parseEngineEvent(
        '{"Type":"service","Action":"update","Actor":{"ID":"svc9","Attributes":{"name":"web","updatestate.new":"updating"}},"scope":"swarm","time":1,"timeNano":1}',
      ),
    ).toEqual({
      type: 'service',
      action: 'update',
      id: 'svc9',
      attributes: { name: 'web', 'updatestate.new': 'updating' },
    });
  });

  it('drops attribute values that are not strings', () => {
    const e = parseEngineEvent(
      JSON.stringify({
        Type: 'container',
        Action: 'start',
        Actor: { ID: 'c1', Attributes: { name: 'web', exitCode: 137, flag: true, none: null, nested: { a: 'b' }, list: ['x'] } },
      }),
    );
    expect(e?.attributes).toEqual({ name: 'web' });
  });

  it('an event without an Actor (or with a bad one) gets an empty id and no attributes', () => {
    expect(parseEngineEvent('{"Type":"network","Action":"prune"}')).toEqual({ type: 'network', action: 'prune', id: '', attributes: {} });
    expect(parseEngineEvent('{"Type":"container","Action":"start","Actor":{"ID":42,"Attributes":"name=web"}}')).toEqual({
      type: 'container',
      action: 'start',
      id: '',
      attributes: {},
    });
    expect(parseEngineEvent('{"Type":"container","Action":"start","Actor":null}')).toEqual({
      type: 'container',
      action: 'start',
      id: '',
      attributes: {},
    });
  });

  it.each([
    ['malformed JSON', '{"Type":"container","Action":'],
    ['plain text', 'not json'],
    ['an empty line', ''],
    ['null', 'null'],
    ['an array', '[{"Type":"container","Action":"die"}]'],
    ['an empty array', '[]'],
    ['a string', '"container die"'],
    ['a number', '42'],
    ['no Type', '{"Action":"die","Actor":{"ID":"c1"}}'],
    ['no Action', '{"Type":"container","Actor":{"ID":"c1"}}'],
    ['a Type that is not a string', '{"Type":1,"Action":"die"}'],
    ['an Action that is not a string', '{"Type":"container","Action":null}'],
  ])('%s is not an event', (_what, text) => {
    expect(parseEngineEvent(text)).toBeUndefined();
  });
});

describe('EngineEventStream', () => {
  it('asks for /events with the filters as JSON and reports the connect once the headers arrive', async () => {
    const { engine, socketPath } = await startEngine();
    engine.autoOpen = false;
    const filters = { type: ['container', 'service'], label: ['skypanel.managed=true'], event: ['die', 'start'] };
    const { stream, log } = recordingStream(socketPath, { filters });
    expect(stream.connected).toBe(false);
    stream.start();
    stream.start(); // already running: no second stream
    await waitUntil(() => engine.conns.length === 1, 'the request');
    const conn = engine.last;
    expect(conn.method).toBe('GET');
    expect(conn.url.pathname).toBe('/events');
    expect(JSON.parse(conn.url.searchParams.get('filters') ?? 'null')).toEqual(filters);
    // Well inside the client's header bound: no headers, so not connected yet.
    await sleep(50);
    expect(log).toEqual([]);
    expect(stream.connected).toBe(false);
    conn.open();
    await waitUntil(() => log.length > 0, 'onConnected');
    expect(log).toEqual(['connected']);
    expect(stream.connected).toBe(true);
    await sleep(100);
    expect(engine.conns).toHaveLength(1);
  });

  it('delivers events written in pieces, in order, skipping blank and malformed lines', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, events } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    const conn = engine.last;

    const first = line('start', 'c1');
    const cut = first.indexOf('"Action"');
    conn.write(`\n   \nnot json\n{"Type":\n${first.slice(0, cut)}`);
    await sleep(50);
    expect(events).toEqual([]); // half an object is not an event
    conn.write(first.slice(cut)); // the rest of it, newline included
    conn.write(line('die', 'c2') + line('start', 'c3')); // two in one write
    conn.write('[1,2]\nnull\n{"Action":"kill"}\n\r\n');
    conn.write(line('destroy', 'c4').slice(0, -1));
    await sleep(50);
    conn.write('\n');

    await waitUntil(() => events.length >= 4, 'four events');
    expect(events.map((e) => `${e.action} ${e.id}`)).toEqual(['start c1', 'die c2', 'start c3', 'destroy c4']);
    expect(events[0]).toEqual(parseEngineEvent(first));
    expect(events[0]?.attributes['skypanel.managed']).toBe('true');
    await sleep(50);
    expect(events).toHaveLength(4);
    expect(log).toEqual(['connected']);
    expect(engine.conns).toHaveLength(1);
    expect(conn.closed).toBe(false);
  });

  it('decodes a multi-byte character split across two writes', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, events } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    const bytes = Buffer.from(
      `${JSON.stringify({ Type: 'container', Action: 'start', Actor: { ID: 'c1', Attributes: { name: 'café-☃' } } })}\n`,
    );
    const at = bytes.indexOf(Buffer.from('☃')) + 1; // inside the snowman's three bytes
    engine.last.write(bytes.subarray(0, at));
    await sleep(50);
    engine.last.write(bytes.subarray(at));
    await waitUntil(() => events.length === 1, 'the event');
    expect(events[0]?.attributes.name).toBe('café-☃');
  });

  it(`stays open while silent for several times the client's ${CLIENT_TIMEOUT_MS} ms timeout`, async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, events, delays } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    await sleep(CLIENT_TIMEOUT_MS * 5);
    expect(log).toEqual(['connected']);
    expect(delays).toEqual([]);
    expect(engine.conns).toHaveLength(1);
    expect(engine.last.closed).toBe(false);
    expect(stream.connected).toBe(true);
    engine.last.write(line('die', 'late'));
    await waitUntil(() => events.length === 1, 'the event after the silence');
    expect(events[0]?.id).toBe('late');
  });

  it('when the Engine ends the stream: onDisconnected with the reason, then a reconnect after retryDelayMs(failures)', async () => {
    const { engine, socketPath } = await startEngine();
    const DELAY = 150;
    const { stream, log, events, delays } = recordingStream(socketPath, { delayMs: DELAY });
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');

    for (let i = 1; i <= 3; i++) {
      engine.last.write(line('start', `c${i}`));
      await waitUntil(() => events.length === i, `event ${i}`);
      engine.last.end();
      await waitUntil(() => count(log, 'disconnected') === i, `disconnect ${i}`);
      const downAt = performance.now();
      expect(stream.connected).toBe(false);
      expect(log.at(-1)).toBe('disconnected: the Engine closed the event stream');
      await waitUntil(() => count(log, 'connected') === i + 1, `reconnect ${i}`);
      expect(performance.now() - downAt).toBeGreaterThanOrEqual(DELAY - 20);
      expect(engine.conns).toHaveLength(i + 1);
      expect(stream.connected).toBe(true);
    }
    // Each reconnect re-sends the same request.
    for (const c of engine.conns) expect(JSON.parse(c.url.searchParams.get('filters') ?? 'null')).toEqual({ type: ['container'] });
    // Streams that never stayed up a minute keep backing off.
    expect(delays).toEqual([0, 1, 2]);
    expect(log).toEqual([
      'connected',
      'disconnected: the Engine closed the event stream',
      'connected',
      'disconnected: the Engine closed the event stream',
      'connected',
      'disconnected: the Engine closed the event stream',
      'connected',
    ]);
    engine.last.write(line('die', 'after'));
    await waitUntil(() => events.length === 4, 'an event on the newest stream');
  });

  it('a stream that stayed up a minute resets the backoff', async () => {
    const { engine, socketPath } = await startEngine();
    const realNow = performance.now.bind(performance);
    let offset = 0;
    vi.spyOn(performance, 'now').mockImplementation(() => realNow() + offset);
    const { stream, log, delays } = recordingStream(socketPath);
    stream.start();
    for (let i = 1; i <= 2; i++) {
      await waitUntil(() => count(log, 'connected') === i, `connect ${i}`);
      engine.last.end();
    }
    await waitUntil(() => count(log, 'connected') === 3, 'connect 3');
    offset += 60_000; // this one stays up a minute
    engine.last.end();
    await waitUntil(() => count(log, 'connected') === 4, 'connect 4');
    engine.last.end();
    await waitUntil(() => delays.length === 4, 'the fourth retry');
    expect(delays).toEqual([0, 1, 0, 1]);
  });

  it.each([
    ['a socket that does not exist', 'ENOENT', async (_path: string) => {}],
    ['a socket path nobody listens on', 'ECONNREFUSED', (path: string) => writeFile(path, '')],
  ])(
    '%s: onDisconnected once, retries keep going with growing failures, and it connects once the Engine is up',
    async (_what, code, prepare) => {
      const socketPath = nextSocketPath();
      await prepare(socketPath);
      const { stream, log, delays } = recordingStream(socketPath, { delayMs: 10 });
      stream.start();
      await waitUntil(() => delays.length >= 6, 'six retries');
      expect(delays.slice(0, 6)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(log).toHaveLength(1);
      expect(log[0]).toMatch(new RegExp(`^disconnected: .*${code}`));
      expect(stream.connected).toBe(false);

      await rm(socketPath, { force: true });
      const { engine } = await startEngine(socketPath);
      await waitUntil(() => log.includes('connected'), 'the connect once the Engine is up');
      expect(log.filter((l) => l.startsWith('disconnected'))).toHaveLength(1);
      expect(stream.connected).toBe(true);
      // The failures went on counting until then (only a minute-long stream resets them).
      expect(delays).toEqual(delays.map((_d, i) => i));
      const before = delays.length;
      // A stream that was up is reported lost again, and retried with the next failure count.
      engine.last.end();
      await waitUntil(() => count(log, 'disconnected') === 2, 'the second disconnect');
      await waitUntil(() => delays.length === before + 1, 'the retry');
      expect(delays.at(-1)).toBe(before);
    },
  );

  it("a non-2xx answer is a failed attempt, reported with the Engine's message and retried", async () => {
    const { engine, socketPath } = await startEngine();
    engine.failWith = { status: 500, body: { message: 'daemon is shutting down' } };
    const { stream, log, delays } = recordingStream(socketPath, { delayMs: 10 });
    stream.start();
    await waitUntil(() => delays.length >= 3, 'three retries');
    expect(log).toEqual(['disconnected: HTTP 500: daemon is shutting down']);
    engine.failWith = undefined;
    await waitUntil(() => log.includes('connected'), 'the connect');
  });

  it(`headers that never come fail the attempt after the client's ${CLIENT_TIMEOUT_MS} ms timeout`, async () => {
    const { engine, socketPath } = await startEngine();
    engine.autoOpen = false;
    const { stream, log, delays } = recordingStream(socketPath, { delayMs: 5_000 });
    stream.start();
    await waitUntil(() => log.length > 0, 'the failed attempt');
    expect(log).toEqual([`disconnected: Docker Engine sent nothing for ${CLIENT_TIMEOUT_MS} ms`]);
    expect(delays).toEqual([0]);
    await waitUntil(() => engine.last.closed, 'the request to be dropped');
  });

  it('a line over 1 MiB without a newline drops the connection, and it reconnects', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, events } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    // A big line that does end within the limit is an event like any other.
    const big = { ...dockerEvent('start', 'big'), Actor: { ID: 'big', Attributes: { blob: 'b'.repeat(MIB - 1024) } } };
    engine.last.write(`${JSON.stringify(big)}\n`);
    await waitUntil(() => events.length === 1, 'the big event');
    expect(events[0]?.attributes.blob).toHaveLength(MIB - 1024);
    expect(log).toEqual(['connected']);

    const first = engine.last;
    first.write(`{"Type":"container","Action":"start","Actor":{"ID":"${'x'.repeat(MIB / 2)}`);
    first.write('x'.repeat(MIB / 2 + 16));
    await waitUntil(() => first.closed, 'the stream to be dropped');
    await waitUntil(() => count(log, 'connected') === 2, 'the reconnect');
    expect(log).toEqual(['connected', `disconnected: an event line exceeded ${MIB} bytes`, 'connected']);
    expect(events).toHaveLength(1);
    engine.last.write(line('die', 'c2'));
    await waitUntil(() => events.length === 2, 'an event on the new stream');
    expect(events[1]?.id).toBe('c2');
  });

  it('an onEvent that throws does not end the stream', async () => {
    const { engine, socketPath } = await startEngine();
    const seen: string[] = [];
    const { stream, log } = recordingStream(socketPath, {
      onEvent: (e) => {
        seen.push(e.id);
        if (e.id !== 'ok') throw new Error(`consumer bug on ${e.id}`);
      },
    });
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    engine.last.write(line('die', 'bad1') + line('die', 'ok')); // the throw must not lose the rest of the chunk
    await waitUntil(() => seen.length === 2, 'both events of the chunk');
    engine.last.write(line('die', 'bad2'));
    engine.last.write(line('start', 'ok'));
    await waitUntil(() => seen.length === 4, 'the events after the throws');
    expect(seen).toEqual(['bad1', 'ok', 'bad2', 'ok']);
    expect(log).toEqual(['connected']);
    expect(engine.conns).toHaveLength(1);
    expect(engine.last.closed).toBe(false);
  });

  it('an onConnected that throws still reads the stream; an onDisconnected or retryDelayMs that throws still reconnects', async () => {
    const { engine, socketPath } = await startEngine();
    let connects = 0;
    const { stream, events } = recordingStream(socketPath, {
      onConnected: () => {
        connects++;
        throw new Error('consumer bug in onConnected');
      },
      onDisconnected: () => {
        throw new Error('consumer bug in onDisconnected');
      },
      retryDelayMs: () => {
        throw new Error('consumer bug in retryDelayMs');
      },
    });
    stream.start();
    await waitUntil(() => connects === 1, 'the first connect');
    engine.last.write(line('die', 'after-a-throwing-connect'));
    await waitUntil(() => events.length === 1, 'the event');
    expect(stream.connected).toBe(true);
    engine.last.end();
    await waitUntil(() => connects === 2, 'a reconnect despite the throwing callbacks', 5_000);
    expect(engine.conns).toHaveLength(2);
  });

  it('start() right after a stop() that was not awaited keeps exactly one stream', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    void stream.stop();
    stream.start();
    await waitUntil(() => count(log, 'connected') === 2, 'the second connect');
    await sleep(300);
    expect(engine.conns.filter((c) => !c.closed)).toHaveLength(1);
    expect(engine.conns).toHaveLength(2);
    expect(log).toEqual(['connected', 'connected']); // the deliberate stop is no lost stream
    expect(stream.connected).toBe(true);
  });

  it('stop() closes the open stream, the Engine sees the request close, and nothing reconnects', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, delays } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    await within(stream.stop(), 'stop()');
    expect(stream.connected).toBe(false);
    await waitUntil(() => engine.last.closed, 'the Engine to see the close');
    await sleep(200);
    expect(engine.conns).toHaveLength(1);
    expect(delays).toEqual([]);
    expect(log).toEqual(['connected']); // a deliberate stop is not a lost stream
    await within(stream.stop(), 'stop()'); // twice is fine
  });

  it('stop() cancels a pending reconnect', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, delays } = recordingStream(socketPath, { delayMs: 300 });
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    engine.last.end();
    await waitUntil(() => delays.length === 1, 'the reconnect to be scheduled');
    await within(stream.stop(), 'stop()');
    await sleep(500);
    expect(engine.conns).toHaveLength(1);
    expect(log).toEqual(['connected', 'disconnected: the Engine closed the event stream']);
  });

  it('stop() while waiting for the headers aborts the request', async () => {
    const { engine, socketPath } = await startEngine();
    engine.autoOpen = false;
    // A header bound far beyond the stop: only the abort can end this request in time.
    const { stream, log, delays } = recordingStream(socketPath, { timeoutMs: 10_000 });
    stream.start();
    await waitUntil(() => engine.conns.length === 1, 'the request');
    const t0 = performance.now();
    await within(stream.stop(), 'stop()', 2_000);
    expect(performance.now() - t0).toBeLessThan(2_000);
    await waitUntil(() => engine.last.closed, 'the Engine to see the close');
    await sleep(200);
    expect(engine.conns).toHaveLength(1);
    expect(log).toEqual([]);
    expect(delays).toEqual([]);
  });

  it('can be started again after stop()', async () => {
    const { engine, socketPath } = await startEngine();
    const { stream, log, events } = recordingStream(socketPath);
    stream.start();
    await waitUntil(() => log.includes('connected'), 'onConnected');
    await within(stream.stop(), 'stop()');
    stream.start();
    await waitUntil(() => count(log, 'connected') === 2, 'the second connect');
    expect(engine.conns).toHaveLength(2);
    engine.last.write(line('start', 'again'));
    await waitUntil(() => events.length === 1, 'the event');
  });
});

describe('watchEngineEvents', () => {
  it('reports live on connect and lost with a reason, passes events on, and stop() resolves and closes the stream', async () => {
    const { engine, socketPath } = await startEngine();
    const live: [boolean, string | undefined][] = [];
    const events: EngineEvent[] = [];
    const delays: number[] = [];
    const filters = { type: ['container', 'service'], label: ['skypanel.managed=true'] };
    const watch = watchEngineEvents(
      { socketPath, filters, retryDelayMs: (n) => (delays.push(n), 20) },
      { onEvent: (e) => void events.push(e), onLive: (l, reason) => void live.push([l, reason]) },
    );
    streams.push(watch);
    await sleep(50);
    expect(engine.conns).toHaveLength(0); // nothing before start()
    watch.start();
    await waitUntil(() => live.length === 1, 'onLive(true)');
    expect(live).toEqual([[true, undefined]]);
    expect(engine.last.url.pathname).toBe('/events');
    expect(JSON.parse(engine.last.url.searchParams.get('filters') ?? 'null')).toEqual(filters);

    engine.last.write(line('die', 'c1'));
    await waitUntil(() => events.length === 1, 'the event');
    expect(events[0]).toMatchObject({ type: 'container', action: 'die', id: 'c1' });

    engine.last.end();
    await waitUntil(() => live.length === 3, 'lost, then live again');
    expect(live).toEqual([
      [true, undefined],
      [false, 'the Engine closed the event stream'],
      [true, undefined],
    ]);
    expect(delays).toEqual([0]);

    const open = engine.last;
    await expect(within(watch.stop(), 'stop()')).resolves.toBeUndefined();
    await waitUntil(() => open.closed, 'the Engine to see the close');
    await sleep(100);
    expect(engine.conns).toHaveLength(2);
    expect(live).toHaveLength(3);
  });
});
