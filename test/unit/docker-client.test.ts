import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { countDockerCalls } from '../../src/swarm/call-counter.js';
import { EngineClient, EngineError, MAX_ENGINE_RESPONSE_BYTES, createDockerClient } from '../../src/swarm/docker-client.js';

/*
 * EngineClient against a fake Engine: a node:http server on a unix socket in a temp dir. Every
 * wait below is bounded by the client's own timeout or the test timeout.
 */

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

let dir: string;
let socketPath: string;
let server: Server;
const seen: Seen[] = [];
const clients: EngineClient[] = [];

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function route(req: IncomingMessage, res: ServerResponse, body: string): void {
  const path = new URL(req.url ?? '/', 'http://engine').pathname;
  switch (path) {
    case '/version':
      return json(res, 200, { Version: '27.0.0', ApiVersion: '1.46' });
    case '/echo':
      return json(res, 200, { method: req.method, url: req.url, body: body ? (JSON.parse(body) as unknown) : null });
    case '/containers/abc/start':
      res.writeHead(204);
      return void res.end();
    case '/services/missing':
      return json(res, 404, { message: 'service missing not found' });
    case '/plain-error':
      res.writeHead(500, { 'content-type': 'text/plain' });
      return void res.end('engine exploded\n');
    case '/malformed':
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end('{"ID": "abc", ');
    case '/text':
      res.writeHead(200, { 'content-type': 'text/plain' });
      return void res.end('raw bytes');
    case '/huge':
      // Announces more than the client buffers, then sends a little and stalls: the refusal must
      // come from the header, not from reading 64 MiB or from the inactivity timeout.
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(MAX_ENGINE_RESPONSE_BYTES + 1) });
      return void res.write('[');
    case '/hang':
      return; // never answers
    default:
      return json(res, 404, { message: `page not found: ${path}` });
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skp-engine-client-'));
  socketPath = join(dir, 'docker.sock');
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      route(req, res, body);
    });
  });
  // Like dockerd: an idle kept-alive connection is never closed by the server.
  server.keepAliveTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  seen.length = 0;
  server.closeAllConnections();
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

function client(timeoutMs = 2_000): EngineClient {
  const c = createDockerClient({ socketPath, timeoutMs });
  clients.push(c);
  return c;
}

async function rejection(p: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  try {
    await p;
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  throw new Error('expected a rejection, got an answer');
}

describe('EngineClient over a unix socket', () => {
  it('points at the socket it was given', () => {
    expect(client().endpoint).toBe(`unix://${socketPath}`);
  });

  it('keeps its idle connection across the gap between routine calls (GET /info every 30 s at 10 s beats)', async () => {
    let connections = 0;
    const count = () => connections++;
    server.on('connection', count);
    try {
      const c = client();
      await c.request({ method: 'GET', path: '/version' });
      await new Promise((r) => setTimeout(r, 6_000)); // longer than the 5 s it used to keep
      await c.request({ method: 'GET', path: '/version' });
      expect(connections).toBe(1);
    } finally {
      server.off('connection', count);
    }
  }, 20_000);

  it('parses a JSON answer', async () => {
    const version = await client().request<{ Version: string; ApiVersion: string }>({ method: 'GET', path: '/version' });
    expect(version).toEqual({ Version: '27.0.0', ApiVersion: '1.46' });
    expect(seen[0]).toMatchObject({ method: 'GET', url: '/version' });
  });

  it('sends a body as JSON with its content type and length', async () => {
    const r = await client().request<{ method: string; body: unknown }>({
      method: 'POST',
      path: '/echo',
      body: { Name: 'svc', Labels: { a: 'b' } },
    });
    expect(r).toMatchObject({ method: 'POST', body: { Name: 'svc', Labels: { a: 'b' } } });
    expect(seen[0]!.headers['content-type']).toBe('application/json');
    expect(Number(seen[0]!.headers['content-length'])).toBe(Buffer.byteLength(seen[0]!.body));
  });

  it('resolves a 204 as undefined', async () => {
    await expect(client().request({ method: 'POST', path: '/containers/abc/start' })).resolves.toBeUndefined();
  });

  it('resolves a non-JSON answer as its raw bytes', async () => {
    const r = await client().request<Buffer>({ method: 'GET', path: '/text' });
    expect(Buffer.isBuffer(r)).toBe(true);
    expect(r.toString('utf8')).toBe('raw bytes');
  });

  it('rejects a non-2xx answer with EngineError carrying the status and the Engine message', async () => {
    const err = await rejection(client().request({ method: 'GET', path: '/services/missing' }));
    expect(err).toBeInstanceOf(EngineError);
    const e = err as unknown as EngineError;
    expect(e.statusCode).toBe(404);
    expect(e.message).toContain('service missing not found');
    expect(e.json).toEqual({ message: 'service missing not found' });

    const plain = (await rejection(client().request({ method: 'GET', path: '/plain-error' }))) as unknown as EngineError;
    expect(plain).toBeInstanceOf(EngineError);
    expect(plain.statusCode).toBe(500);
    expect(plain.message).toBe('HTTP 500: engine exploded');
  });

  it('rejects malformed JSON on a 2xx with code EBADRESPONSE', async () => {
    const err = await rejection(client().request({ method: 'GET', path: '/malformed' }));
    expect(err).not.toBeInstanceOf(EngineError);
    expect(err.code).toBe('EBADRESPONSE');
  });

  it('rejects with code ETIMEDOUT when the Engine sends nothing for timeoutMs', async () => {
    const started = Date.now();
    const err = await rejection(client(200).request({ method: 'GET', path: '/hang' }));
    expect(err.code).toBe('ETIMEDOUT');
    expect(err.message).toContain('200 ms');
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it(`refuses an answer announced larger than ${MAX_ENGINE_RESPONSE_BYTES} bytes, without waiting for it`, async () => {
    const started = Date.now();
    const err = await rejection(client(5_000).request({ method: 'GET', path: '/huge' }));
    expect(err.code).toBe('ETOOLARGE');
    expect(err.message).toContain(String(MAX_ENGINE_RESPONSE_BYTES));
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('sends registryAuth as padded base64url in X-Registry-Auth, never in the URL', async () => {
    const auth = { serveraddress: 'registry.example:5000', username: 'ci', password: 'pa/ss+word?x' };
    const encoded = JSON.stringify(auth);
    // Padding is what Go's base64.URLEncoding wants; make sure this case has some.
    expect(Buffer.byteLength(encoded) % 3).not.toBe(0);
    await client().request({
      method: 'POST',
      path: '/echo',
      query: { fromImage: 'registry.example:5000/app', tag: '1' },
      registryAuth: auth,
    });
    const got = seen[0]!;
    const header = got.headers['x-registry-auth'];
    expect(typeof header).toBe('string');
    expect(header).toMatch(/^[A-Za-z0-9_-]+={1,2}$/);
    expect(header).toBe(`${Buffer.from(encoded).toString('base64url')}${'='.repeat((3 - (Buffer.byteLength(encoded) % 3)) % 3)}`);
    expect(JSON.parse(Buffer.from(header as string, 'base64url').toString('utf8'))).toEqual(auth);
    expect(got.url).not.toContain(auth.password);
    expect(decodeURIComponent(got.url)).not.toContain(auth.password);
    expect(got.url).not.toContain((header as string).replace(/=+$/, ''));
    expect(got.url).toBe(`/echo?fromImage=${encodeURIComponent('registry.example:5000/app')}&tag=1`);
  });

  it('encodes query objects as JSON and leaves undefined values out', async () => {
    const filters = { label: ['skypanel.worker.id=w1', 'a=b&c'], node: ['n1'] };
    await client().request({ method: 'GET', path: '/echo', query: { filters, all: true, limit: 5, since: undefined } });
    const url = new URL(seen[0]!.url, 'http://engine');
    expect(url.pathname).toBe('/echo');
    expect(JSON.parse(url.searchParams.get('filters')!)).toEqual(filters);
    expect(url.searchParams.get('all')).toBe('true');
    expect(url.searchParams.get('limit')).toBe('5');
    expect(url.searchParams.has('since')).toBe(false);
  });

  it('rejects with name AbortError when the signal fires, before or during the call', async () => {
    const c = client(5_000);
    const pre = await rejection(c.request({ method: 'GET', path: '/version', signal: AbortSignal.abort() }));
    expect(pre.name).toBe('AbortError');

    const ac = new AbortController();
    const started = Date.now();
    const pending = c.request({ method: 'GET', path: '/hang', signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    const during = await rejection(pending);
    expect(during.name).toBe('AbortError');
    expect(during.code).toBe('ABORT_ERR');
    expect(Date.now() - started).toBeLessThan(2_000);

    // The client still works after an aborted call.
    await expect(c.request({ method: 'GET', path: '/version' })).resolves.toMatchObject({ Version: '27.0.0' });
  });

  it('tells onCall listeners `METHOD /path` (no query) for every call, until they stop', async () => {
    const c = client();
    const heard: string[] = [];
    const stop = c.onCall((method, path) => heard.push(`${method} ${path}`));
    await c.request({ method: 'GET', path: '/version' });
    await c.request({ method: 'GET', path: '/echo', query: { filters: { label: ['x'] } } });
    await rejection(c.request({ method: 'DELETE', path: '/services/missing' }));
    expect(heard).toEqual(['GET /version', 'GET /echo', 'DELETE /services/missing']);
    stop();
    await c.request({ method: 'GET', path: '/version' });
    expect(heard).toHaveLength(3);
  });
});

describe('countDockerCalls', () => {
  it('counts every call through one client, by `METHOD /path`, with reset and restore', async () => {
    const c = client();
    const other = client();
    const counter = countDockerCalls(c);
    await c.request({ method: 'GET', path: '/version' });
    await c.request({ method: 'GET', path: '/version' });
    await c.request({ method: 'POST', path: '/echo', query: { a: 1 }, body: {} });
    // Failed calls count too; calls through another client do not.
    await rejection(c.request({ method: 'GET', path: '/services/missing' }));
    await other.request({ method: 'GET', path: '/version' });
    expect(counter.count).toBe(4);
    expect(Object.fromEntries(counter.byPath)).toEqual({ 'GET /version': 2, 'POST /echo': 1, 'GET /services/missing': 1 });

    counter.reset();
    expect(counter.count).toBe(0);
    expect(counter.byPath.size).toBe(0);
    await c.request({ method: 'GET', path: '/version' });
    expect(counter.count).toBe(1);

    counter.restore();
    await c.request({ method: 'GET', path: '/version' });
    expect(counter.count).toBe(1);
  });
});
