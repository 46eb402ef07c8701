import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlPlaneClient, type CallResult } from '../../src/controlplane/control-plane-client.js';
import { MIN_CALL_SPACING_MS } from '../../src/controlplane/call-spacing.js';
import { MAX_SERVER_WAIT_MS } from '../../src/controlplane/retry-after.js';
import { Secret } from '../../src/secret.js';
import { endlessBody } from '../helpers/endless-body.js';

// The client against node:http servers on 127.0.0.1 that misbehave on purpose, one way per test.

const TOKEN = 'tok-3f9a1c0e7b5d4e2a9c8b7a6f5e4d3c2b1a0f9e8d';
const T = 300; // per-phase timeout in these tests; the whole-call deadline is twice that

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
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
  return (server.address() as AddressInfo).port;
}

async function httpServer(handler: http.RequestListener, opts: { keepAliveTimeout?: number } = {}) {
  const server = http.createServer(handler);
  if (opts.keepAliveTimeout !== undefined) server.keepAliveTimeout = opts.keepAliveTimeout;
  const port = await listen(server);
  return { server, port };
}

/** The HTTP core without the per-call floor (tested on its own below), so calls follow each other at once. */
function client(port: number, opts: { scheme?: string; timeoutMs?: number; prefix?: string; minCallSpacingMs?: number } = {}) {
  const c = new ControlPlaneClient({
    baseUrl: `${opts.scheme ?? 'http'}://127.0.0.1:${port}${opts.prefix ?? ''}`,
    token: new Secret(TOKEN),
    timeoutMs: opts.timeoutMs ?? T,
    minCallSpacingMs: opts.minCallSpacingMs ?? 0,
  });
  cleanups.push(() => c.close());
  return c;
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (s += c));
    req.on('end', () => resolve(s));
  });
}

function expectNoToken(r: CallResult): void {
  expect(JSON.stringify(r)).not.toContain(TOKEN);
}

describe('ControlPlaneClient', () => {
  it('posts JSON with Content-Length and the exact content type, and reads the JSON answer', async () => {
    let seen: { headers: http.IncomingHttpHeaders; body: string; url?: string } | undefined;
    const { port } = await httpServer(async (req, res) => {
      seen = { headers: req.headers, body: await readBody(req), url: req.url };
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"success":true,"message":"Heartbeat received"}');
    });
    const r = await client(port, { prefix: '/panel/' }).postJson('/api/workers/w1/heartbeat', { cpuPercent: 1.5, note: 'é' });
    expect(r).toMatchObject({ ok: true, status: 200, body: { success: true } });
    expect(seen!.url).toBe('/panel/api/workers/w1/heartbeat');
    expect(seen!.headers['content-type']).toBe('application/json');
    expect(seen!.headers['content-length']).toBe(String(Buffer.byteLength(seen!.body)));
    expect(seen!.headers['transfer-encoding']).toBeUndefined();
    expect(seen!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(JSON.parse(seen!.body)).toEqual({ cpuPercent: 1.5, note: 'é' });
  });

  it('sends If-None-Match and treats 304 as success with no body; returns the ETag of a 200', async () => {
    const { port } = await httpServer((req, res) => {
      if (req.headers['if-none-match'] === '"v1"') res.writeHead(304, { etag: '"v1"' }).end();
      else res.writeHead(200, { etag: '"v1"', 'content-type': 'application/json' }).end('{"deployments":[]}');
    });
    const c = client(port);
    const first = await c.getJson('/d');
    expect(first).toMatchObject({ ok: true, status: 200, body: { deployments: [] } });
    expect(first.ok && first.headers.etag).toBe('"v1"');
    const second = await c.getJson('/d', '"v1"');
    expect(second).toMatchObject({ ok: true, status: 304 });
    expect(second.ok && second.body).toBeUndefined();
  });

  it('refuses a response above 1 MiB and destroys the connection instead of reading on', async () => {
    let closedEarly: Promise<boolean> | undefined;
    const { port } = await httpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no Content-Length to refuse up front
      closedEarly = endlessBody(res);
    });
    const r = await client(port, { timeoutMs: 5_000 }).getJson('/big');
    expect(r).toMatchObject({ ok: false, kind: 'invalid-response', status: 200, message: expect.stringMatching(/1 MiB/) });
    expect(await closedEarly).toBe(true);
  });

  it('refuses a declared Content-Length above 1 MiB before reading the body', async () => {
    const { port } = await httpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(2 << 20) });
      res.write('{');
    });
    const r = await client(port).getJson('/big');
    expect(r).toMatchObject({ ok: false, kind: 'invalid-response' });
    expect(r.rttMs).toBeLessThan(T);
  });

  it('times out a connection that never completes its TLS handshake', async () => {
    const port = await listen(net.createServer(() => undefined)); // accepts, says nothing
    const r = await client(port, { scheme: 'https' }).getJson('/');
    expect(r).toMatchObject({ ok: false, kind: 'timeout', message: expect.stringMatching(/no connection/) });
    expect(r.rttMs).toBeGreaterThanOrEqual(T - 20);
    expect(r.rttMs).toBeLessThan(2 * T);
  });

  it('times out a server that never sends headers', async () => {
    const { port } = await httpServer(() => undefined);
    const r = await client(port).postJson('/hb', { a: 1 });
    expect(r).toMatchObject({ ok: false, kind: 'timeout', message: expect.stringMatching(/no response/) });
    expect(r.rttMs).toBeGreaterThanOrEqual(T - 20);
    expect(r.rttMs).toBeLessThan(2 * T);
  });

  it('times out a body that stalls', async () => {
    const { port } = await httpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"a":');
    });
    const r = await client(port).getJson('/');
    expect(r).toMatchObject({ ok: false, kind: 'timeout', status: 200, message: expect.stringMatching(/stalled/) });
  });

  it('bounds a server that trickles bytes by the whole-call deadline', async () => {
    const { port } = await httpServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const tick = setInterval(() => res.write(' '), T / 3);
      res.on('close', () => clearInterval(tick));
    });
    const r = await client(port).getJson('/');
    expect(r).toMatchObject({ ok: false, kind: 'timeout', message: expect.stringMatching(/longer than 600 ms/) });
    expect(r.rttMs).toBeGreaterThanOrEqual(2 * T - 20);
    expect(r.rttMs).toBeLessThan(3 * T);
  });

  it('passes Retry-After (seconds or HTTP-date) and the error code of a refusal', async () => {
    const date = new Date(Date.now() + 120_000).toUTCString();
    const { port } = await httpServer((req, res) => {
      if (req.url === '/429')
        res.writeHead(429, { 'retry-after': '7', 'content-type': 'application/json' }).end('{"success":false,"error":"Too many requests"}');
      else
        res
          .writeHead(503, { 'retry-after': date, 'content-type': 'application/json' })
          .end('{"success":false,"error":{"code":"MAINTENANCE","message":"later"}}');
    });
    const c = client(port);
    expect(await c.postJson('/429', {})).toMatchObject({ ok: false, kind: 'http', status: 429, retryAfterMs: 7_000 });
    const r = await c.getJson('/503');
    expect(r).toMatchObject({ ok: false, kind: 'http', status: 503, code: 'MAINTENANCE', message: 'later' });
    expect(!r.ok && r.retryAfterMs).toBeGreaterThan(100_000);
  });

  it("on a 429 honours the rate-limit window's end when it comes before Retry-After, and caps both", async () => {
    const { port } = await httpServer((req, res) => {
      const headers: Record<string, string> =
        req.url === '/skypanel'
          ? { 'retry-after': '900', 'ratelimit-limit': '200', 'ratelimit-remaining': '0', 'ratelimit-reset': '4' }
          : { 'retry-after': '99999999999' };
      res.writeHead(429, { ...headers, 'content-type': 'application/json' }).end('{"success":false,"error":"Too many requests"}');
    });
    const c = client(port);
    expect(await c.postJson('/skypanel', {})).toMatchObject({ ok: false, status: 429, retryAfterMs: 4_000 });
    expect(await c.postJson('/huge', {})).toMatchObject({ ok: false, status: 429, retryAfterMs: MAX_SERVER_WAIT_MS });
  });

  it('sends the same call at most once a second, whatever the callers do; other calls are not held up', async () => {
    const arrivals: { url: string; at: number }[] = [];
    const { port } = await httpServer((req, res) => {
      arrivals.push({ url: req.url!, at: performance.now() });
      res.writeHead(503, { 'content-type': 'application/json' }).end('{}');
    });
    const c = client(port, { minCallSpacingMs: MIN_CALL_SPACING_MS });
    const started = performance.now();
    // A loop gone wrong: five attempts of one call back to back, three of them concurrent.
    await c.postJson('/api/workers/w/heartbeat', {});
    await c.postJson('/api/workers/w/heartbeat', {});
    await Promise.all([
      c.postJson('/api/workers/w/heartbeat', {}),
      c.postJson('/api/workers/w/heartbeat', {}),
      c.getJson('/api/workers/w/deployments'),
    ]);
    const beats = arrivals.filter((a) => a.url.endsWith('/heartbeat')).map((a) => a.at);
    expect(beats).toHaveLength(4);
    // The floor spaces the sends; arrivals also carry each request's own latency (the first one opened the connection).
    for (let i = 1; i < beats.length; i++) expect(beats[i]! - beats[i - 1]!).toBeGreaterThanOrEqual(MIN_CALL_SPACING_MS - 150);
    expect(beats.at(-1)! - beats[0]!).toBeGreaterThanOrEqual(3 * MIN_CALL_SPACING_MS - 150);
    // The poll was not queued behind the heartbeats.
    expect(arrivals.find((a) => a.url.endsWith('/deployments'))!.at - started).toBeLessThan(2 * MIN_CALL_SPACING_MS + 500);
  });

  it('a call waiting out the floor ends when the client is closed', async () => {
    const { port } = await httpServer((req, res) => res.writeHead(200).end('{}'));
    const c = client(port, { minCallSpacingMs: 60_000 });
    expect((await c.postJson('/hb', {})).ok).toBe(true);
    const waiting = c.postJson('/hb', {});
    await new Promise((r) => setTimeout(r, 50));
    await c.close();
    expect(await waiting).toMatchObject({ ok: false, kind: 'network', message: 'control-plane client closed' });
  });

  it('treats a 2xx that is not JSON as an invalid response', async () => {
    const { port } = await httpServer((req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>oops</html>'));
    expect(await client(port).getJson('/')).toMatchObject({ ok: false, kind: 'invalid-response', status: 200 });
  });

  it('reuses a kept-alive connection', async () => {
    const { server, port } = await httpServer((req, res) => res.writeHead(200).end('{}'));
    let connections = 0;
    server.on('connection', () => connections++);
    const c = client(port);
    for (let i = 0; i < 5; i++) expect((await c.postJson('/hb', { i })).ok).toBe(true);
    expect(connections).toBe(1);
  });

  it('retries once on a fresh connection when the server closed the kept-alive one as we wrote to it', async () => {
    const bodies: string[] = [];
    let connections = 0;
    const { server, port } = await httpServer(async (req, res) => {
      const n = ((req.socket as net.Socket & { n?: number }).n = ((req.socket as net.Socket & { n?: number }).n ?? 0) + 1);
      // The second request on a connection finds it gone, as when an idle timeout crosses our write.
      if (n === 2) return void req.socket.destroy();
      bodies.push(await readBody(req));
      res.writeHead(200).end('{"success":true}');
    });
    server.on('connection', () => connections++);
    const c = client(port);
    expect((await c.postJson('/hb', { seq: 1 })).ok).toBe(true);
    const r = await c.postJson('/hb', { seq: 2 });
    expect(r).toMatchObject({ ok: true, status: 200 });
    expect(connections).toBe(2);
    expect(bodies.map((b) => JSON.parse(b))).toEqual([{ seq: 1 }, { seq: 2 }]);
  });

  it('does not retry a reset on a fresh connection', async () => {
    let requests = 0;
    const { port } = await httpServer((req) => {
      requests++;
      req.socket.destroy();
    });
    const r = await client(port).postJson('/hb', {});
    expect(r).toMatchObject({ ok: false, kind: 'network', message: expect.stringMatching(/ECONNRESET/) });
    expect(requests).toBe(1);
  });

  it('closes an idle connection before the server says it will', async () => {
    // Node servers announce `Keep-Alive: timeout=N`; the client lets go a second earlier.
    const { server, port } = await httpServer((req, res) => res.writeHead(200).end('{}'), { keepAliveTimeout: 2_000 });
    const closed = new Promise<number>((resolve) =>
      server.once('connection', (s: net.Socket) => s.once('close', () => resolve(performance.now()))),
    );
    const r = await client(port).getJson('/');
    const answered = performance.now();
    expect(r.ok).toBe(true);
    const idleMs = (await closed) - answered;
    expect(idleMs).toBeGreaterThan(800);
    expect(idleMs).toBeLessThan(1_800);
  });

  it('asks for Connection: close when a call comes after the server would have dropped the connection; calls close together keep theirs', async () => {
    // keepAliveTimeout 2 s: the server announces timeout=2, the client keeps an idle connection 1 s.
    const seen: { connection: string | undefined; socket: number }[] = [];
    const sockets = new Map<net.Socket, number>();
    const { port } = await httpServer(
      (req, res) => {
        if (!sockets.has(req.socket)) sockets.set(req.socket, sockets.size);
        seen.push({ connection: req.headers.connection, socket: sockets.get(req.socket)! });
        res.writeHead(200).end('{}');
      },
      { keepAliveTimeout: 2_000 },
    );
    const c = client(port);
    expect((await c.postJson('/hb', { n: 1 })).ok).toBe(true);
    expect((await c.postJson('/hb', { n: 2 })).ok).toBe(true);
    await new Promise((r) => setTimeout(r, 1_400));
    expect((await c.postJson('/hb', { n: 3 })).ok).toBe(true);
    expect((await c.getJson('/deployments')).ok).toBe(true);
    expect(seen).toEqual([
      { connection: 'keep-alive', socket: 0 },
      { connection: 'keep-alive', socket: 0 },
      { connection: 'close', socket: 1 },
      { connection: 'keep-alive', socket: 2 },
    ]);
  });

  it('leaves no timer behind once a call is over', async () => {
    const { port } = await httpServer((req, res) => res.writeHead(200).end('{}'));
    const c = client(port);
    await c.getJson('/'); // warm: the agent and its socket exist
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    for (let i = 0; i < 3; i++) await c.postJson('/', {});
    expect(timers()).toBe(before);
  });

  it('ends a call when the caller aborts', async () => {
    const { port } = await httpServer(() => undefined);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const r = await client(port, { timeoutMs: 5_000 }).postJson('/hb', {}, { signal: ac.signal });
    expect(r).toMatchObject({ ok: false, kind: 'network', message: expect.stringMatching(/aborted/) });
    expect(r.rttMs).toBeLessThan(1_000);
  });

  it('never puts the token in a failure, even when the server echoes it back', async () => {
    const { port } = await httpServer((req, res) => {
      res
        .writeHead(401, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: 'Unauthorized', message: `bad token ${req.headers.authorization}` }));
    });
    const failures: CallResult[] = [await client(port).postJson('/hb', {})];
    expect(failures[0]).toMatchObject({ ok: false, kind: 'http', status: 401, message: expect.stringContaining('[redacted]') });
    const closedPort = await (async () => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
      const p = (s.address() as AddressInfo).port;
      await new Promise((r) => s.close(r));
      return p;
    })();
    failures.push(await client(closedPort).postJson('/hb', {}));
    expect(failures[1]).toMatchObject({ ok: false, kind: 'network', message: expect.stringMatching(/ECONNREFUSED/) });
    const { port: silent } = await httpServer(() => undefined);
    failures.push(await client(silent).getJson('/'));
    for (const f of failures) expectNoToken(f);
  });

  it('a message echoing the token, cut to 300 characters, leaves no head of the token (redacted before the cut)', async () => {
    // The token's last character falls exactly past the 300-character cut: cut first, then redact, left 40 of its 41 characters.
    const pad = 'x'.repeat(300 - TOKEN.length + 1);
    const spellings = [
      TOKEN,
      JSON.stringify(TOKEN).slice(1, -1),
      Buffer.from(TOKEN).toString('base64'),
      Buffer.from(`u:${TOKEN}`).toString('base64'),
    ];
    for (const echoed of spellings) {
      const { port } = await httpServer((_req, res) => {
        res
          .writeHead(400, { 'content-type': 'application/json' })
          .end(JSON.stringify({ success: false, error: { code: 'BAD', message: `${pad}${echoed}` } }));
      });
      const r = await client(port).postJson('/hb', {});
      expect(r.ok).toBe(false);
      const message = (r as { message: string }).message;
      expect(message.length).toBeLessThanOrEqual(300);
      expect(message.startsWith(pad)).toBe(true);
      // No 12-character run of the token (in any spelling) survives.
      for (const form of spellings) for (let i = 0; i + 12 <= form.length; i++) expect(message).not.toContain(form.slice(i, i + 12));
    }
  });

  it('a header value HTTP cannot carry (a damaged stored ETag) is a failure value, not a throw or an unhandled error', async () => {
    let requests = 0;
    const { port } = await httpServer((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    const c = client(port);
    for (const etag of ['"a"\r\nx-injected: 1', '"\u0100"', '"\u4e2d\u6587"']) {
      const r = await c.getJson('/deployments', etag);
      expect(r).toMatchObject({ ok: false, kind: 'network', message: expect.stringMatching(/^request not sent: /) });
    }
    expect(requests).toBe(0);
    // The client still works afterwards.
    expect((await c.getJson('/deployments', '"ok"')).ok).toBe(true);
  });
});
