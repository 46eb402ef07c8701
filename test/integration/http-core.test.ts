import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { HttpCallSpec } from '../../src/http/call.js';
import {
  BodyTimeoutError,
  ConnectTimeoutError,
  DeadlineError,
  HeadersTimeoutError,
  InvalidRequestError,
  RequestAbortedError,
  ResponseTooLargeError,
  SocketError,
  type HttpTransportError,
} from '../../src/http/errors.js';
import { HttpPool, keepAliveMs, type HttpPoolOptions, type HttpTarget } from '../../src/http/pool.js';
import { endlessBody } from '../helpers/endless-body.js';

// The HTTP core on its own, against node:http servers on 127.0.0.1 and on a unix socket that misbehave on purpose.

const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '../../dist');
const T = 300; // every phase bound in these tests
const TIMEOUTS = { connectMs: T, headersMs: T, bodyMs: T };

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: net.Server, where: string | number = 0): Promise<HttpTarget> {
  if (typeof where === 'string') server.listen(where);
  else server.listen(where, '127.0.0.1');
  await once(server, 'listening');
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return typeof where === 'string'
    ? { socketPath: where }
    : { tls: false, host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

async function serve(handler: http.RequestListener, opts: { keepAliveTimeout?: number; socketPath?: string } = {}) {
  const server = http.createServer(handler);
  if (opts.keepAliveTimeout !== undefined) server.keepAliveTimeout = opts.keepAliveTimeout;
  const target = await listen(server, opts.socketPath);
  return { server, target };
}

function pool(target: HttpTarget, opts: Partial<HttpPoolOptions> = {}): HttpPool {
  const p = new HttpPool(target, { keepAlive: true, ...opts });
  cleanups.push(() => p.close());
  return p;
}

const get = (extra: Partial<HttpCallSpec> = {}): HttpCallSpec => ({
  method: 'GET',
  path: '/',
  timeouts: TIMEOUTS,
  maxResponseBytes: 1 << 20,
  ...extra,
});

async function failure(p: Promise<unknown>): Promise<HttpTransportError & Error> {
  try {
    await p;
  } catch (err) {
    return err as HttpTransportError & Error;
  }
  throw new Error('expected a transport failure, got an answer');
}

/** Counts each connection's requests on `socket.n`, so a handler can misbehave on the nth request of a connection. */
function nth(req: http.IncomingMessage): number {
  const s = req.socket as net.Socket & { n?: number };
  return (s.n = (s.n ?? 0) + 1);
}

/*
 * A child process runs calls that end every way (answered, headers timeout, too large, aborted,
 * refused) with 30 s bounds, through a kept-alive pool and a one-shot one, and must then exit by
 * itself: a timer or socket one of them left behind would hold it for those 30 s.
 */
const CHILD = `
import { HttpPool } from ${JSON.stringify(pathToFileURL(join(DIST, 'http/pool.js')).href)};
const [port, refused] = process.argv.slice(1).map(Number);
const target = { tls: false, host: '127.0.0.1', port };
const long = { connectMs: 30000, headersMs: 30000, bodyMs: 30000, deadlineMs: 30000 };
const spec = (path, extra = {}) => ({ method: 'GET', path, timeouts: long, maxResponseBytes: 1024, ...extra });
const outcome = (p) => p.then((r) => r.status, (e) => e.code);
const kept = new HttpPool(target, { keepAlive: true });
const once = new HttpPool(target, { keepAlive: false });
const ac = new AbortController();
setTimeout(() => ac.abort(), 100);
const out = [];
for (const pool of [kept, once]) {
  out.push(await outcome(pool.request(spec('/ok'))));
  out.push(await outcome(pool.request(spec('/hang', { timeouts: { ...long, headersMs: 100 } }))));
  out.push(await outcome(pool.request(spec('/big'))));
  out.push(await outcome(pool.request(spec('/ok', { maxResponseBytes: 0, overflow: 'truncate' }))));
}
out.push(await outcome(kept.request(spec('/hang', { signal: ac.signal }))));
out.push(await outcome(new HttpPool({ ...target, port: refused }, { keepAlive: false }).request(spec('/'))));
console.log(JSON.stringify(out));
`;

describe('HTTP core: nothing left behind', () => {
  it('no timer or socket outlives a call, however it ended: the process exits by itself', async () => {
    const { target } = await serve((req, res) => {
      if (req.url === '/hang') return;
      if (req.url === '/big') return void res.writeHead(200, { 'content-length': '4096' }).write('x');
      res.end('{}');
    });
    const s = net.createServer();
    const { port: refused } = (await listen(s)) as { port: number };
    await new Promise((r) => s.close(r));
    const started = performance.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, String((target as { port: number }).port), String(refused)]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [code] = (await once(child, 'exit')) as [number | null];
    clearTimeout(kill);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual([
      ...[200, 'HTTP_HEADERS_TIMEOUT', 'HTTP_RESPONSE_TOO_LARGE', 200],
      ...[200, 'HTTP_HEADERS_TIMEOUT', 'HTTP_RESPONSE_TOO_LARGE', 200],
      'ABORT_ERR',
      'ECONNREFUSED',
    ]);
    // Well inside the 30 s bounds, plus Node's start-up.
    expect(performance.now() - started).toBeLessThan(5_000);
  }, 15_000);
});

describe('HTTP core: phase bounds, each with its typed error', () => {
  it('a connection that never completes its TLS handshake: ConnectTimeoutError', async () => {
    const { port } = (await listen(net.createServer(() => undefined))) as { port: number }; // accepts, says nothing
    const started = performance.now();
    const err = await failure(pool({ tls: true, host: '127.0.0.1', port }).request(get()));
    expect(err).toBeInstanceOf(ConnectTimeoutError);
    expect(err.code).toBe('HTTP_CONNECT_TIMEOUT');
    expect(performance.now() - started).toBeGreaterThanOrEqual(T - 20);
    expect(performance.now() - started).toBeLessThan(2 * T);
  });

  it('a server that never sends headers: HeadersTimeoutError', async () => {
    const { target } = await serve(() => undefined);
    const err = await failure(pool(target).request(get()));
    expect(err).toBeInstanceOf(HeadersTimeoutError);
    expect(err.code).toBe('HTTP_HEADERS_TIMEOUT');
    expect(err.status).toBeUndefined();
  });

  it('a phase bound shorter than what is left of the deadline fires, even after a phase that ran up to the deadline', async () => {
    // The connect bound equals the deadline, so the timer first runs for the deadline; the headers bound must replace it.
    const { target } = await serve(() => undefined);
    const started = performance.now();
    const err = await failure(
      pool(target).request(get({ timeouts: { connectMs: 5_000, headersMs: T, bodyMs: 5_000, deadlineMs: 5_000 } })),
    );
    expect(err).toBeInstanceOf(HeadersTimeoutError);
    expect(performance.now() - started).toBeLessThan(2 * T);
  });

  it('a body that stalls: BodyTimeoutError carrying the status', async () => {
    const { target } = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"a":');
    });
    const err = await failure(pool(target).request(get()));
    expect(err).toBeInstanceOf(BodyTimeoutError);
    expect(err).toMatchObject({ code: 'HTTP_BODY_TIMEOUT', status: 200, timeoutMs: T });
  });

  it('a server that trickles bytes: each chunk restarts the body bound, the deadline ends it (DeadlineError)', async () => {
    const { target } = await serve((_req, res) => {
      res.writeHead(200);
      const tick = setInterval(() => res.write(' '), T / 3);
      res.on('close', () => clearInterval(tick));
    });
    const started = performance.now();
    const err = await failure(pool(target).request(get({ timeouts: { ...TIMEOUTS, deadlineMs: 2 * T } })));
    expect(err).toBeInstanceOf(DeadlineError);
    expect(err).toMatchObject({ code: 'HTTP_DEADLINE', status: 200 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(2 * T - 20);
    expect(performance.now() - started).toBeLessThan(3 * T);
  });

  it('a refused connection and a missing unix socket: SocketError with the socket code', async () => {
    const s = net.createServer();
    const { port } = (await listen(s)) as { port: number };
    await new Promise((r) => s.close(r));
    const refused = await failure(pool({ tls: false, host: '127.0.0.1', port }).request(get()));
    expect(refused).toBeInstanceOf(SocketError);
    expect(refused).toMatchObject({ code: 'ECONNREFUSED', phase: 'connect' });
    const missing = await failure(pool({ socketPath: join(tmpdir(), `skp-no-such-${process.pid}.sock`) }).request(get()));
    expect(missing).toMatchObject({ name: 'SocketError', code: 'ENOENT' });
  });

  it('an abort before or during the call: RequestAbortedError shaped like Node (AbortError, ABORT_ERR)', async () => {
    const { target } = await serve(() => undefined);
    const p = pool(target);
    const pre = await failure(p.request(get({ signal: AbortSignal.abort() })));
    expect(pre).toBeInstanceOf(RequestAbortedError);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const started = performance.now();
    const during = await failure(p.request(get({ signal: ac.signal, timeouts: { connectMs: 5_000, headersMs: 5_000, bodyMs: 5_000 } })));
    expect(during).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('a header value HTTP cannot carry: InvalidRequestError naming the header, nothing sent', async () => {
    let requests = 0;
    const { target } = await serve((_req, res) => {
      requests++;
      res.end('{}');
    });
    const p = pool(target);
    const err = await failure(p.request(get({ headers: { 'if-none-match': '"a"\r\nx-injected: secret-value' } })));
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err.message).toMatch(/if-none-match/);
    expect(err.message).not.toContain('secret-value');
    expect(requests).toBe(0);
    expect((await p.request(get())).status).toBe(200);
  });
});

describe('HTTP core: size cap', () => {
  it('refuses a declared Content-Length above the cap at once, without reading or waiting for the body', async () => {
    const { target } = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(2 << 20) });
      res.write('{');
    });
    const started = performance.now();
    const err = await failure(pool(target).request(get()));
    expect(err).toBeInstanceOf(ResponseTooLargeError);
    expect(err).toMatchObject({ code: 'HTTP_RESPONSE_TOO_LARGE', status: 200, maxBytes: 1 << 20 });
    expect(performance.now() - started).toBeLessThan(T);
  });

  it('stops reading a chunked body at the cap and closes the connection instead of reading on', async () => {
    let closedEarly: Promise<boolean> | undefined;
    const { target } = await serve((_req, res) => {
      res.writeHead(200);
      closedEarly = endlessBody(res);
    });
    const err = await failure(pool(target).request(get({ timeouts: { connectMs: 5_000, headersMs: 5_000, bodyMs: 5_000 } })));
    expect(err).toBeInstanceOf(ResponseTooLargeError);
    expect(await closedEarly).toBe(true);
  });

  it("with overflow 'truncate': keeps the first bytes and says so; a cap of 0 resolves at the headers", async () => {
    const { target } = await serve((_req, res) => {
      res.writeHead(200, { date: 'x' });
      res.write('0123456789');
      setTimeout(() => res.end('abcdef'), 20);
    });
    const p = pool(target);
    const cut = await p.request(get({ maxResponseBytes: 12, overflow: 'truncate' }));
    expect(cut).toMatchObject({ status: 200, truncated: true });
    expect(cut.body.toString()).toBe('0123456789ab');
    const whole = await p.request(get({ maxResponseBytes: 100, overflow: 'truncate' }));
    expect(whole).toMatchObject({ truncated: false });
    expect(whole.body.toString()).toBe('0123456789abcdef');
    const headersOnly = await p.request(get({ maxResponseBytes: 0, overflow: 'truncate' }));
    expect(headersOnly).toMatchObject({ status: 200, truncated: false, body: Buffer.alloc(0) });
    expect(headersOnly.headers.date).toBe('x');
  });
});

describe('HTTP core: kept-alive connections', () => {
  it('retries an idempotent call once on a fresh connection when the server closed the kept-alive one; never a POST', async () => {
    let connections = 0;
    let seen = 0;
    const { server, target } = await serve((req, res) => {
      seen++;
      // The second request on a connection finds it gone, as when an idle timeout crosses our write.
      if (nth(req) === 2) return void req.socket.destroy();
      res.end('{}');
    });
    server.on('connection', () => connections++);
    const p = pool(target);
    expect((await p.request(get())).status).toBe(200);
    expect((await p.request(get())).status).toBe(200);
    expect({ connections, seen }).toEqual({ connections: 2, seen: 3 });

    // A POST may have been acted on: the same reset fails it.
    const post = await failure(p.request(get({ method: 'POST', body: '{}' })));
    expect(post).toMatchObject({ name: 'SocketError', code: 'ECONNRESET' });
    expect({ connections, seen }).toEqual({ connections: 2, seen: 4 });

    // Unless the caller says it is safe to repeat.
    expect((await p.request(get())).status).toBe(200); // a fresh connection, first request
    expect((await p.request(get({ method: 'POST', body: '{}', idempotent: true }))).status).toBe(200);
    expect({ connections, seen }).toEqual({ connections: 4, seen: 7 });
  });

  it('retries at most once, and never a reset on a fresh connection', async () => {
    let seen = 0;
    const { target } = await serve((req, res) => {
      seen++;
      if (seen === 1) return void res.end('{}');
      req.socket.destroy();
    });
    const p = pool(target);
    await p.request(get());
    const err = await failure(p.request(get()));
    expect(err).toMatchObject({ name: 'SocketError', code: 'ECONNRESET' });
    expect(seen).toBe(3); // the first call, the stale attempt, one retry on a fresh connection
  });

  it("honours the server's Keep-Alive hint: the idle socket is closed a second before the server would", async () => {
    const { server, target } = await serve((_req, res) => res.end('{}'), { keepAliveTimeout: 2_000 });
    const closed = new Promise<number>((resolve) =>
      server.once('connection', (s: net.Socket) => s.once('close', () => resolve(performance.now()))),
    );
    const res = await pool(target).request(get());
    const answered = performance.now();
    expect(res.headers['keep-alive']).toBe('timeout=2');
    const idleMs = (await closed) - answered;
    expect(idleMs).toBeGreaterThan(800);
    expect(idleMs).toBeLessThan(1_800);
    expect(keepAliveMs('timeout=5', 45_000)).toBe(4_000);
    expect(keepAliveMs('max=100, timeout=75', 45_000)).toBe(74_000);
    expect(keepAliveMs(undefined, 45_000)).toBe(45_000);
  });

  it('closeWhenSparse: a call after the hinted idle time asks for Connection: close; a pool without it keeps its connections', async () => {
    const seen: (string | undefined)[] = [];
    const { target } = await serve(
      (req, res) => {
        seen.push(req.headers.connection);
        res.end('{}');
      },
      { keepAliveTimeout: 2_000 },
    );
    const sparse = pool(target, { closeWhenSparse: true });
    const plain = pool(target);
    for (const p of [sparse, plain]) {
      await p.request(get());
      await p.request(get());
    }
    await new Promise((r) => setTimeout(r, 1_400));
    await sparse.request(get());
    await plain.request(get());
    expect(seen).toEqual(['keep-alive', 'keep-alive', 'keep-alive', 'keep-alive', 'close', 'keep-alive']);
  });

  it('over a unix socket: answers, and consecutive calls share one connection', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-http-core-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    let connections = 0;
    const { server, target } = await serve((req, res) => res.end(JSON.stringify({ url: req.url })), { socketPath: join(dir, 's.sock') });
    server.on('connection', () => connections++);
    const p = pool(target);
    for (let i = 0; i < 3; i++) expect((await p.request(get({ path: `/v?i=${i}` }))).body.toString()).toBe(`{"url":"/v?i=${i}"}`);
    expect(connections).toBe(1);
  });
});

describe('HTTP core: streams', () => {
  it('hands a 2xx over as a stream and buffers any other status', async () => {
    const { target } = await serve((req, res) => {
      if (req.url === '/missing') return void res.writeHead(404).end('{"message":"no"}');
      res.writeHead(200);
      res.write('a\n');
      setTimeout(() => res.end('b\n'), 50);
    });
    const p = pool(target);
    const streamIf = (s: number) => s < 300;
    const ok = await p.send(get({ streamIf }));
    expect(ok.streamed).toBe(true);
    if (!ok.streamed) return;
    let text = '';
    for await (const chunk of ok.stream) text += String(chunk);
    expect(text).toBe('a\nb\n');
    const missing = await p.send(get({ path: '/missing', streamIf }));
    expect(missing).toMatchObject({ streamed: false, status: 404 });
  });

  it('cuts a handed-over stream silent for streamIdleMs (BodyTimeoutError), keeps one with 0 open while silent', async () => {
    const { target } = await serve((_req, res) => {
      res.writeHead(200);
      res.write('hello\n');
      setTimeout(() => res.end('late\n'), 3 * T);
    });
    const p = pool(target);
    const cut = await p.send(get({ streamIf: () => true, streamIdleMs: T }));
    const cutErr = await new Promise<Error>((resolve) => {
      if (cut.streamed) cut.stream.on('error', resolve).resume();
    });
    expect(cutErr).toBeInstanceOf(BodyTimeoutError);

    const open = await p.send(get({ streamIf: () => true, streamIdleMs: 0 }));
    let text = '';
    if (open.streamed) for await (const chunk of open.stream) text += String(chunk);
    expect(text).toBe('hello\nlate\n');
  });

  it('an abort after the hand-over destroys the stream with RequestAbortedError', async () => {
    const { target } = await serve((_req, res) => {
      res.writeHead(200);
      res.write('x');
    });
    const ac = new AbortController();
    const r = await pool(target).send(get({ streamIf: () => true, streamIdleMs: 0, signal: ac.signal }));
    const err = new Promise<Error>((resolve) => {
      if (r.streamed) r.stream.on('error', resolve).resume();
    });
    ac.abort();
    expect(await err).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });
});
