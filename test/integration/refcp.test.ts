import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  signJwt,
  signWorkerToken,
  startReferenceControlPlane,
  createReferenceControlPlane,
  type ReferenceControlPlane,
} from '../../src/refcp/index.js';
import { FixedWindowLimiter } from '../../src/refcp/rate-limit.js';
import { authenticateWorker } from '../../src/refcp/worker-routes.js';

const WORKER_ID = '0b6f7c1a-2d3e-4f50-8a9b-c0d1e2f3a4b5';
const OTHER_ID = '9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d';

const REGISTER_BODY = {
  hostname: 'node-1',
  ipAddress: '10.0.0.5',
  capacity: { cpuCores: 4, memoryMb: 8192, diskGb: 80 },
  metadata: { osVersion: 'Ubuntu 24.04', dockerVersion: '27.3.1' },
};
const METRICS = { cpuPercent: 12.5, memoryPercent: 40, diskPercent: 55, containerCount: 3 };

interface CallOptions {
  method?: string;
  /** null: no Authorization header. Default: a valid token for WORKER_ID. */
  auth?: string | null;
  /** Objects are JSON-encoded; strings and buffers are sent verbatim. */
  body?: unknown;
  /** null: no Content-Type header at all. */
  contentType?: string | null;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

interface CallResult {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

let cp: ReferenceControlPlane;
let token: string;

async function call(path: string, opts: CallOptions = {}): Promise<CallResult> {
  const headers: Record<string, string> = { ...opts.headers };
  const auth = opts.auth === undefined ? `Bearer ${token}` : opts.auth;
  if (auth !== null) headers.authorization = auth;
  const contentType = opts.contentType === undefined ? 'application/json' : opts.contentType;
  if (contentType !== null) headers['content-type'] = contentType;
  let body: Uint8Array<ArrayBuffer> | undefined;
  if (opts.body !== undefined) {
    const raw = typeof opts.body === 'string' || Buffer.isBuffer(opts.body) ? opts.body : JSON.stringify(opts.body);
    // A Uint8Array keeps fetch from adding a text/plain Content-Type of its own.
    body = new Uint8Array(Buffer.from(raw as string | Buffer));
  }
  const res = await fetch(cp.url + path, { method: opts.method ?? 'POST', headers, body, signal: opts.signal });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

const register = (body: unknown = REGISTER_BODY, opts: CallOptions = {}) => call('/api/workers/register', { body, ...opts });
const heartbeat = (id = WORKER_ID, body: unknown = METRICS, opts: CallOptions = {}) =>
  call(`/api/workers/${id}/heartbeat`, { body, ...opts });

function validationError(message: string) {
  return { success: false, error: { code: 'VALIDATION_ERROR', message } };
}

function unauthorized(message: string) {
  return { error: 'Unauthorized', message };
}

/** A raw HTTP/1.1 exchange, for what fetch cannot express (chunked uploads, odd bytes). */
function rawRequest(opts: { path: string; headers: Record<string, string>; chunks: Buffer[]; localAddress?: string }) {
  const url = new URL(cp.url);
  return new Promise<{ status: number; headers: Record<string, unknown>; text: string }>((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: opts.path,
        method: 'POST',
        headers: opts.headers,
        agent: false,
        localAddress: opts.localAddress,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(parts).toString() }));
      },
    );
    req.on('error', reject);
    for (const chunk of opts.chunks) req.write(chunk);
    req.end();
  });
}

beforeEach(async () => {
  cp = await startReferenceControlPlane();
  token = cp.mintToken(WORKER_ID);
});

afterEach(async () => {
  await cp.close();
});

describe('routing', () => {
  it.each([
    ['GET', '/'],
    ['GET', '/api/workers'],
    ['GET', '/api/workers/register'],
    ['POST', '/api/workers'],
    ['POST', '/api/nope'],
    ['POST', '/api/workers/generate-script'],
    ['PUT', `/api/workers/${WORKER_ID}/heartbeat`],
    ['POST', '/api/workers//heartbeat'],
    ['POST', '/healthz'],
  ])('answers %s %s with 404 API not found, without asking for auth', async (method, path) => {
    const res = await call(path, { method, auth: null, body: method === 'GET' ? undefined : {} });
    expect(res.status).toBe(404);
    expect(res.json).toEqual({ success: false, error: 'API not found' });
  });

  it('matches routes case-insensitively and with a trailing slash, like Express', async () => {
    expect((await call('/API/Workers/Register/', { auth: null, body: {} })).status).toBe(401);
    expect((await call(`/api/workers/${WORKER_ID}/heartbeat/`, { auth: null, body: {} })).status).toBe(401);
  });

  it('ignores the query string when routing', async () => {
    expect((await call('/api/workers/register?x=1', { body: REGISTER_BODY })).status).toBe(201);
  });

  it('answers 500 when a path parameter cannot be percent-decoded', async () => {
    const res = await call('/api/workers/%E0%A4%A/heartbeat', { body: METRICS });
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ success: false, error: 'Internal server error' });
  });

  it('sends JSON with charset, a Date header, and keeps the connection alive', async () => {
    const res = await call('/api/nope', { auth: null });
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(Date.parse(res.headers.get('date') ?? '')).not.toBeNaN();
    expect(res.headers.get('connection')).toBe('keep-alive');
    expect(res.headers.get('etag')).toMatch(/^W\/"[0-9a-f]+-[A-Za-z0-9+/]{27}"$/);
  });
});

describe('body parsing (express.json semantics)', () => {
  it('ignores a body whose Content-Type is not JSON', async () => {
    const res = await register(REGISTER_BODY, { contentType: 'text/plain' });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError('Missing required fields: hostname, ipAddress, capacity'));
    expect(cp.requests.at(-1)?.body).toBeUndefined();
  });

  it('ignores a body sent without any Content-Type', async () => {
    const res = await register(REGISTER_BODY, { contentType: null });
    expect(res.status).toBe(400);
    expect(cp.requests.at(-1)?.headers.contentType).toBeNull();
  });

  it('parses application/json with a charset parameter, in any case', async () => {
    expect((await register(REGISTER_BODY, { contentType: 'application/json; charset=utf-8' })).status).toBe(201);
    expect((await register(REGISTER_BODY, { contentType: 'Application/JSON;Charset=UTF-8' })).status).toBe(201);
  });

  it('treats an empty JSON body as {}', async () => {
    const res = await register('');
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError('Missing required fields: hostname, ipAddress, capacity'));
  });

  it.each([
    ['broken JSON', '{"hostname":'],
    ['a bare number (strict mode)', '123'],
    ['a bare string (strict mode)', '"x"'],
    ['whitespace only', '   '],
  ])('answers 500 Internal server error for %s, as SkyPanelV2 does', async (_name, raw) => {
    const res = await register(raw);
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ success: false, error: 'Internal server error' });
  });

  it('reports malformed JSON even on an unknown route, because the parser runs before routing', async () => {
    expect((await call('/api/nope', { body: '{', auth: null })).status).toBe(500);
  });

  it('accepts a body of exactly 100 kB', async () => {
    const base = JSON.stringify({ ...REGISTER_BODY, metadata: { pad: '' } });
    const body = JSON.stringify({ ...REGISTER_BODY, metadata: { pad: 'x'.repeat(102_400 - base.length) } });
    expect(Buffer.byteLength(body)).toBe(102_400);
    expect((await register(body)).status).toBe(201);
  });

  it('answers 413 Payload too large one byte over 100 kB', async () => {
    const res = await register(' '.repeat(102_400) + '{}');
    expect(res.status).toBe(413);
    expect(res.json).toEqual({ success: false, error: 'Payload too large' });
  });

  it('answers 413 for a chunked body that grows past the limit, and keeps serving', async () => {
    const res = await rawRequest({
      path: '/api/workers/register',
      headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked', authorization: `Bearer ${token}` },
      chunks: [Buffer.from('['), ...Array.from({ length: 30 }, () => Buffer.from('1,'.repeat(2000)))],
    });
    expect(res.status).toBe(413);
    expect((await register()).status).toBe(201);
  });

  it('does not apply the limit to bodies it does not parse', async () => {
    expect((await register('x'.repeat(300_000), { contentType: 'text/plain' })).status).toBe(400);
  });
});

describe('worker authentication', () => {
  const routes = [
    ['register', () => '/api/workers/register'],
    ['heartbeat', () => `/api/workers/${WORKER_ID}/heartbeat`],
  ] as const;

  describe.each(routes)('on %s', (_name, path) => {
    it('requires an Authorization header', async () => {
      const res = await call(path(), { auth: null, body: {} });
      expect(res.status).toBe(401);
      expect(res.json).toEqual(unauthorized('Worker authentication token required'));
    });

    it('requires the Bearer scheme, case-sensitively', async () => {
      for (const auth of [`Basic ${token}`, `bearer ${token}`, token]) {
        const res = await call(path(), { auth, body: {} });
        expect(res.status).toBe(401);
        expect(res.json).toEqual(unauthorized('Worker authentication token required'));
      }
    });

    it('treats a bare "Bearer " as no token: HTTP parsing trims the trailing space', async () => {
      // fetch trims header values before sending, so only a raw request can send the space.
      const res = await rawRequest({
        path: path(),
        headers: { authorization: 'Bearer ', 'content-type': 'application/json' },
        chunks: [Buffer.from('{}')],
      });
      expect(res.status).toBe(401);
      expect(JSON.parse(res.text)).toEqual(unauthorized('Worker authentication token required'));
    });

    it.each([
      ['signed with another secret', () => signWorkerToken('another-secret', { workerId: WORKER_ID })],
      ['expired', () => signWorkerToken(cp.jwtSecret, { workerId: WORKER_ID, now: Date.now() - 7200_000, expiresInSeconds: 3600 })],
      ['garbage', () => 'not.a.jwt'],
      [
        'alg none',
        () =>
          `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(`{"type":"worker","workerId":"${WORKER_ID}"}`).toString('base64url')}.`,
      ],
    ])('rejects a token that is %s', async (_what, make) => {
      const res = await call(path(), { auth: `Bearer ${make()}`, body: {} });
      expect(res.status).toBe(401);
      expect(res.json).toEqual(unauthorized('Invalid or expired worker token'));
    });

    it('rejects a valid JWT that is not a worker token', async () => {
      const userToken = signJwt({ userId: WORKER_ID, type: 'user', exp: Math.floor(Date.now() / 1000) + 60 }, cp.jwtSecret);
      const res = await call(path(), { auth: `Bearer ${userToken}`, body: {} });
      expect(res.status).toBe(401);
      expect(res.json).toEqual(unauthorized('Invalid token type'));
    });
  });

  it("keeps stock's empty-token branch, which only a direct call can reach", () => {
    expect(authenticateWorker('Bearer ', cp.jwtSecret)).toEqual({
      ok: false,
      reply: { status: 401, body: unauthorized('Invalid worker authentication token') },
    });
  });
});

describe('POST /api/workers/register', () => {
  it('creates the worker from the token and answers 201 with the row', async () => {
    const before = Date.now();
    const res = await register({ ...REGISTER_BODY, metadata: { ...REGISTER_BODY.metadata, swarmNodeId: 'swarm-abc' } });
    expect(res.status).toBe(201);
    const body = res.json as { success: boolean; data: Record<string, unknown> };
    expect(body.success).toBe(true);
    expect(body.data).toEqual({
      id: WORKER_ID,
      name: 'worker-node-1',
      hostname: 'node-1',
      ipAddress: '10.0.0.5',
      authTokenHash: createHash('sha256').update(token).digest('hex'),
      status: 'active',
      capacity: REGISTER_BODY.capacity,
      currentLoad: { cpuPercent: 0, memoryPercent: 0, diskPercent: 0, containerCount: 0 },
      lastHeartbeatAt: expect.any(String),
      metadata: { ...REGISTER_BODY.metadata, swarmNodeId: 'swarm-abc' },
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
    });
    expect(Date.parse(body.data.createdAt as string)).toBeGreaterThanOrEqual(before - 1);
    expect(res.text).not.toContain(token);

    const row = cp.workers.get(WORKER_ID);
    // Stock's INSERT never fills swarm_node_id: the node id only lives in metadata.
    expect(row).toMatchObject({ status: 'active', heartbeats: 0, swarmNodeId: null, lastHeartbeatExtras: null });
    expect(row?.createdAt).toBeInstanceOf(Date);
  });

  it('stores {} for missing metadata and omits a null swarmNodeId from the JSON', async () => {
    const { metadata: _unused, ...noMetadata } = REGISTER_BODY;
    const res = await register(noMetadata);
    const data = (res.json as { data: Record<string, unknown> }).data;
    expect(data.metadata).toEqual({});
    expect('swarmNodeId' in data).toBe(false);
    expect(cp.workers.get(WORKER_ID)?.swarmNodeId).toBeNull();
  });

  it.each([
    ['hostname', { ...REGISTER_BODY, hostname: '' }],
    ['ipAddress', { ...REGISTER_BODY, ipAddress: undefined }],
    ['capacity', { ...REGISTER_BODY, capacity: null }],
    ['everything (a JSON array body)', [REGISTER_BODY]],
  ])('answers 400 when %s is missing', async (_field, body) => {
    const res = await register(body);
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError('Missing required fields: hostname, ipAddress, capacity'));
  });

  it.each([
    ['cpuCores missing', { memoryMb: 1, diskGb: 1 }],
    ['memoryMb zero', { cpuCores: 1, memoryMb: 0, diskGb: 1 }],
    ['diskGb empty string', { cpuCores: 1, memoryMb: 1, diskGb: '' }],
    ['capacity a string', 'big'],
  ])('answers 400 when capacity is incomplete: %s', async (_what, capacity) => {
    const res = await register({ ...REGISTER_BODY, capacity });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError('Capacity must include cpuCores, memoryMb, and diskGb'));
  });

  it.each([
    ['IPv4 octet over 255', '256.1.1.1', 'Valid IP address is required'],
    ['a hostname instead of an IP', 'node-1.example.com', 'Valid IP address is required'],
    ['compressed IPv6 (stock accepts only all 8 groups)', 'fd00::5', 'Valid IP address is required'],
    ['IPv4 with CIDR suffix', '10.0.0.5/24', 'Valid IP address is required'],
  ])('answers 400 for %s', async (_what, ipAddress, message) => {
    const res = await register({ ...REGISTER_BODY, ipAddress });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError(message));
  });

  it.each([
    [{ cpuCores: -1, memoryMb: 1, diskGb: 1 }, 'CPU cores must be between 1 and 256'],
    [{ cpuCores: 257, memoryMb: 1, diskGb: 1 }, 'CPU cores must be between 1 and 256'],
    [{ cpuCores: 1, memoryMb: -5, diskGb: 1 }, 'Memory must be between 1 MB and 1 TB'],
    [{ cpuCores: 1, memoryMb: 1_048_577, diskGb: 1 }, 'Memory must be between 1 MB and 1 TB'],
    [{ cpuCores: 1, memoryMb: 1, diskGb: -1 }, 'Disk must be between 1 GB and 10 TB'],
    [{ cpuCores: 1, memoryMb: 1, diskGb: 10_241 }, 'Disk must be between 1 GB and 10 TB'],
  ])('answers 400 for out-of-range capacity %o', async (capacity, message) => {
    const res = await register({ ...REGISTER_BODY, capacity });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError(message));
  });

  it('accepts the capacity bounds themselves', async () => {
    const res = await register({ ...REGISTER_BODY, capacity: { cpuCores: 256, memoryMb: 1_048_576, diskGb: 10_240 } });
    expect(res.status).toBe(201);
  });

  it('reproduces stock quirks: "Hostname is required" for a truthy value with length 0, loose capacity comparisons', async () => {
    const res = await register({ ...REGISTER_BODY, hostname: { length: 0 } });
    expect(res.json).toEqual(validationError('Hostname is required'));
    // "abc" <= 0 and "abc" > 256 are both false in JavaScript, so stock lets this through.
    expect((await register({ ...REGISTER_BODY, capacity: { cpuCores: 'abc', memoryMb: '2048', diskGb: 'x' } })).status).toBe(201);
  });

  it('accepts a full 8-group IPv6 address and returns it in Postgres inet form', async () => {
    const res = await register({ ...REGISTER_BODY, ipAddress: '2001:0DB8:0000:0000:0000:0000:0000:0001' });
    expect(res.status).toBe(201);
    expect((res.json as { data: { ipAddress: string } }).data.ipAddress).toBe('2001:db8::1');
  });

  it('prints an IPv4-mapped IPv6 address the way Postgres does', async () => {
    const res = await register({ ...REGISTER_BODY, ipAddress: '0000:0000:0000:0000:0000:ffff:0a00:0005' });
    expect((res.json as { data: { ipAddress: string } }).data.ipAddress).toBe('::ffff:10.0.0.5');
  });

  it.each([
    ['an array IP that stringifies to a dotted quad', { ...REGISTER_BODY, ipAddress: ['10.0.0.5'] }, 500],
    ['a hostname object whose toString is not callable', { ...REGISTER_BODY, hostname: { toString: 1 } }, 500],
    ['a 300-character hostname', { ...REGISTER_BODY, hostname: 'h'.repeat(300) }, 500],
    ['a NUL byte in the hostname', { ...REGISTER_BODY, hostname: 'a\u0000b' }, 500],
    ['deeply nested metadata', { ...REGISTER_BODY, metadata: JSON.parse('['.repeat(2000) + ']'.repeat(2000)) as unknown }, 201],
  ])('answers %s the way stock would (%#), without harm to the server', async (_what, body, status) => {
    const res = await register(body);
    expect(res.status).toBe(status);
    if (status === 500) expect(res.json).toMatchObject({ success: false, error: { code: 'WORKER_REGISTRATION_ERROR' } });
    expect((await call('/api/nope', { auth: null })).status).toBe(404);
  });

  it('re-registration updates the row, keeps createdAt and the heartbeat count, and skips validateWorkerInfo', async () => {
    await register();
    await heartbeat();
    const row = cp.workers.get(WORKER_ID)!;
    const createdAt = row.createdAt;
    row.status = 'draining';
    const res = await register({
      hostname: 'node-1b',
      ipAddress: 'fd00::5', // rejected on first registration, accepted by inet on re-registration
      capacity: { cpuCores: 999, memoryMb: 1, diskGb: 1 },
    });
    expect(res.status).toBe(201);
    expect(cp.workers.get(WORKER_ID)).toMatchObject({
      name: 'worker-node-1', // stock does not rename
      hostname: 'node-1b',
      ipAddress: 'fd00::5',
      capacity: { cpuCores: 999, memoryMb: 1, diskGb: 1 },
      metadata: {},
      status: 'active',
      createdAt,
      heartbeats: 1,
    });
  });

  it('re-registration with something Postgres cannot store as inet answers 500', async () => {
    await register();
    const res = await register({ ...REGISTER_BODY, ipAddress: 'not-an-ip' });
    expect(res.status).toBe(500);
    expect(res.json).toMatchObject({ success: false, error: { code: 'WORKER_REGISTRATION_ERROR' } });
    expect(cp.workers.get(WORKER_ID)?.ipAddress).toBe('10.0.0.5');
  });

  it('answers 500 for a worker token without a usable workerId, as Postgres would', async () => {
    const noId = signJwt({ type: 'worker', exp: Math.floor(Date.now() / 1000) + 60 }, cp.jwtSecret);
    const badId = signJwt({ type: 'worker', workerId: 'w-1', exp: Math.floor(Date.now() / 1000) + 60 }, cp.jwtSecret);
    for (const t of [noId, badId]) {
      const res = await register(REGISTER_BODY, { auth: `Bearer ${t}` });
      expect(res.status).toBe(500);
      expect(res.json).toMatchObject({ success: false, error: { code: 'WORKER_REGISTRATION_ERROR' } });
    }
    expect(cp.workers.size).toBe(0);
  });

  it('lets two workers report the same swarm node id in metadata (stock leaves the UNIQUE column empty)', async () => {
    const metadata = { swarmNodeId: 'dup' };
    expect((await register({ ...REGISTER_BODY, metadata })).status).toBe(201);
    const res = await register({ ...REGISTER_BODY, metadata }, { auth: `Bearer ${cp.mintToken(OTHER_ID)}` });
    expect(res.status).toBe(201);
  });
});

describe('POST /api/workers/:id/heartbeat', () => {
  beforeEach(async () => {
    expect((await register()).status).toBe(201);
  });

  it('records the metrics and extras and answers 200', async () => {
    const extras = {
      bootId: 'b-1',
      seq: 7,
      sentAt: '2025-01-01T00:00:00.000Z',
      agentVersion: '0.1.0',
      swarmNodeId: 'n1',
      dockerHealthy: true,
    };
    const res = await heartbeat(WORKER_ID, { ...METRICS, ...extras });
    expect(res.status).toBe(200);
    // The stock answer, plus the desired-set hint of the extensions.
    expect(res.json).toEqual({ success: true, message: 'Heartbeat received', data: { deploymentsEtag: cp.deploymentsEtagOf(WORKER_ID) } });
    const row = cp.workers.get(WORKER_ID)!;
    expect(row.currentLoad).toEqual(METRICS);
    expect(row.lastHeartbeatExtras).toEqual(extras);
    expect(row.heartbeats).toBe(1);
    expect(row.status).toBe('active');
    expect(row.lastHeartbeatAt!.getTime()).toBeGreaterThanOrEqual(row.createdAt.getTime());
  });

  it.each([
    [{ cpuPercent: 90.1 }, 'unhealthy'],
    [{ cpuPercent: 90 }, 'active'],
    [{ memoryPercent: 95.5 }, 'unhealthy'],
    [{ memoryPercent: 95 }, 'active'],
    [{ diskPercent: 91 }, 'unhealthy'],
  ])('marks the worker by load: %o -> %s', async (load, status) => {
    expect((await heartbeat(WORKER_ID, { ...METRICS, ...load })).status).toBe(200);
    expect(cp.workers.get(WORKER_ID)?.status).toBe(status);
  });

  it('recovers to active on the next healthy heartbeat, and overrides draining like stock', async () => {
    await heartbeat(WORKER_ID, { ...METRICS, cpuPercent: 99 });
    expect(cp.workers.get(WORKER_ID)?.status).toBe('unhealthy');
    cp.workers.get(WORKER_ID)!.status = 'draining';
    await heartbeat();
    expect(cp.workers.get(WORKER_ID)?.status).toBe('active');
  });

  it.each(['cpuPercent', 'memoryPercent', 'diskPercent', 'containerCount'])('answers 400 when %s is missing', async (key) => {
    const body: Record<string, unknown> = { ...METRICS };
    delete body[key];
    const res = await heartbeat(WORKER_ID, body);
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError('Missing required metrics: cpuPercent, memoryPercent, diskPercent, containerCount'));
  });

  it.each([
    [{ cpuPercent: '50' }, 'CPU percent must be between 0 and 100'],
    [{ cpuPercent: null }, 'CPU percent must be between 0 and 100'],
    [{ cpuPercent: -0.1 }, 'CPU percent must be between 0 and 100'],
    [{ cpuPercent: 100.1 }, 'CPU percent must be between 0 and 100'],
    [{ memoryPercent: 101 }, 'Memory percent must be between 0 and 100'],
    [{ memoryPercent: true }, 'Memory percent must be between 0 and 100'],
    [{ diskPercent: -1 }, 'Disk percent must be between 0 and 100'],
    [{ containerCount: -1 }, 'Container count must be a non-negative number'],
    [{ containerCount: '3' }, 'Container count must be a non-negative number'],
  ])('answers 400 for invalid metrics %o', async (bad, message) => {
    const res = await heartbeat(WORKER_ID, { ...METRICS, ...bad });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validationError(message));
    expect(cp.workers.get(WORKER_ID)?.heartbeats).toBe(0);
  });

  it('answers 500 HEARTBEAT_ERROR for a path id that is not a UUID (the Postgres error leaking through)', async () => {
    const res = await heartbeat('worker-1', METRICS);
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ success: false, error: { code: 'HEARTBEAT_ERROR', message: 'invalid input syntax for type uuid' } });
  });

  it('validates metrics before the id, as stock does', async () => {
    expect((await heartbeat('worker-1', {})).status).toBe(400);
  });

  it('keeps a "__proto__" extra as plain data', async () => {
    const raw = JSON.stringify(METRICS).replace('{', '{"__proto__":{"polluted":true},');
    expect((await heartbeat(WORKER_ID, raw)).status).toBe(200);
    const extras = cp.workers.get(WORKER_ID)!.lastHeartbeatExtras!;
    expect(Object.getPrototypeOf(extras)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(extras, '__proto__')?.value).toEqual({ polluted: true });
  });

  it('accepts the id in upper case, as Postgres compares uuids case-insensitively', async () => {
    expect((await heartbeat(WORKER_ID.toUpperCase())).status).toBe(200);
  });

  it('answers 404 WORKER_NOT_FOUND for an unknown worker (reference divergence from stock)', async () => {
    cp.workers.delete(WORKER_ID);
    const res = await heartbeat();
    expect(res.status).toBe(404);
    expect(res.json).toEqual({ success: false, error: { code: 'WORKER_NOT_FOUND', message: 'Worker not found' } });
    expect((await register()).status).toBe(201);
    expect((await heartbeat()).status).toBe(200);
  });

  it('answers 403 when the token belongs to another worker (reference-only strictness)', async () => {
    const res = await heartbeat(WORKER_ID, METRICS, { auth: `Bearer ${cp.mintToken(OTHER_ID)}` });
    expect(res.status).toBe(403);
    expect(res.json).toEqual({ success: false, error: { code: 'FORBIDDEN', message: 'Token does not belong to this worker' } });
    expect(cp.workers.get(WORKER_ID)?.heartbeats).toBe(0);
  });
});

describe('rate limiting', () => {
  it('is off by default', async () => {
    const results = await Promise.all(Array.from({ length: 250 }, () => call('/api/nope', { auth: null })));
    expect(results.every((r) => r.status === 404)).toBe(true);
  });

  it('answers 429 with Retry-After once a client exceeds max in the window', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ rateLimit: { max: 3, windowMs: 900_000 } });
    token = cp.mintToken(WORKER_ID);
    expect((await register()).status).toBe(201);
    expect((await heartbeat()).status).toBe(200);
    expect((await call('/api/nope', { auth: null })).status).toBe(404); // 404s under /api/ count too
    const res = await heartbeat();
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('900');
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(res.json).toEqual({ success: false, error: 'Too many requests from this IP, please try again later.' });
    expect(cp.workers.get(WORKER_ID)?.heartbeats).toBe(1);
  });

  it('does not count or limit paths outside /api/', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ rateLimit: { max: 1, windowMs: 900_000 } });
    for (let i = 0; i < 3; i++) expect((await call('/other', { auth: null })).status).toBe(404);
    expect((await call('/api/x', { auth: null })).status).toBe(404);
    expect((await call('/api/x', { auth: null })).status).toBe(429);
  });

  it('opens a new window once the old one expires', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ rateLimit: { max: 2, windowMs: 300 } });
    expect((await call('/api/x', { auth: null })).status).toBe(404);
    expect((await call('/api/x', { auth: null })).status).toBe(404);
    const limited = await call('/api/x', { auth: null });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('1');
    await new Promise((r) => setTimeout(r, 350));
    expect((await call('/api/x', { auth: null })).status).toBe(404);
  });

  it('counts each client address separately', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ rateLimit: { max: 1, windowMs: 900_000 } });
    const from = (localAddress: string) => rawRequest({ path: '/api/x', headers: {}, chunks: [], localAddress }).then((r) => r.status);
    expect(await from('127.0.0.2')).toBe(404);
    expect(await from('127.0.0.2')).toBe(429);
    expect(await from('127.0.0.3')).toBe(404);
  });

  it('forgets expired windows so the client map stays bounded', () => {
    const limiter = new FixedWindowLimiter({ max: 1, windowMs: 1000 });
    for (let i = 0; i < 500; i++) limiter.hit(`10.0.${i >> 8}.${i & 255}`, 0);
    expect(limiter.size).toBe(500);
    expect(limiter.hit('10.9.9.9', 1000)).toEqual({ allowed: true });
    expect(limiter.size).toBe(1);
  });

  it('computes Retry-After from the time left in the window, rounded up', () => {
    const limiter = new FixedWindowLimiter({ max: 1, windowMs: 900_000 });
    limiter.hit('a', 0);
    expect(limiter.hit('a', 1)).toEqual({ allowed: false, retryAfterSeconds: 900 });
    expect(limiter.hit('a', 899_001)).toEqual({ allowed: false, retryAfterSeconds: 1 });
    expect(limiter.hit('a', 900_000)).toEqual({ allowed: true });
  });
});

describe('fault injection', () => {
  it('status: answers every /api/ request with the status, Retry-After and body, for count requests', async () => {
    cp.setFault({ kind: 'status', status: 503, retryAfter: '7', count: 2 });
    for (let i = 0; i < 2; i++) {
      const res = await register();
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('7');
      expect(res.json).toEqual({ success: false, error: 'Injected fault: HTTP 503' });
    }
    expect((await register()).status).toBe(201);
    expect(cp.requests.map((r) => [r.status, r.fault])).toEqual([
      [503, 'status'],
      [503, 'status'],
      [201, undefined],
    ]);
  });

  it('status: sends a custom body with a matching content type, until cleared', async () => {
    cp.setFault({ kind: 'status', status: 502, body: '<html>Bad Gateway</html>' });
    for (let i = 0; i < 3; i++) {
      const res = await heartbeat();
      expect(res.status).toBe(502);
      expect(res.text).toBe('<html>Bad Gateway</html>');
      expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    }
    cp.setFault(null);
    expect((await register()).status).toBe(201);
  });

  it('delay: holds the answer long enough for a client timeout, yet the request still takes effect', async () => {
    await register();
    cp.setFault({ kind: 'delay', ms: 400, count: 1 });
    await expect(heartbeat(WORKER_ID, METRICS, { signal: AbortSignal.timeout(100) })).rejects.toThrow();
    expect(cp.requests.at(-1)).toMatchObject({ fault: 'delay', status: 0, body: METRICS });
    await new Promise((r) => setTimeout(r, 450));
    expect(cp.workers.get(WORKER_ID)?.heartbeats).toBe(1);
    const started = Date.now();
    expect((await heartbeat()).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(300);
  });

  it('delay: answers normally after the wait', async () => {
    cp.setFault({ kind: 'delay', ms: 150 });
    const started = Date.now();
    expect((await register()).status).toBe(201);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('garbage: answers 200 with a body that is not JSON', async () => {
    cp.setFault({ kind: 'garbage', count: 1 });
    const res = await register();
    expect(res.status).toBe(200);
    expect(res.text).toBe('<html>oops</html>');
    expect(res.json).toBeUndefined();
    expect(cp.workers.size).toBe(0);
    expect((await register()).status).toBe(201);
  });

  it('reset: drops the connection without an answer', async () => {
    cp.setFault({ kind: 'reset', count: 1 });
    await expect(register()).rejects.toThrow(/fetch failed/);
    expect(cp.requests.at(-1)).toMatchObject({ status: 0, fault: 'reset', body: REGISTER_BODY });
    expect((await register()).status).toBe(201);
  });

  it('leaves paths outside /api/ alone', async () => {
    cp.setFault({ kind: 'status', status: 500 });
    expect((await call('/metrics', { method: 'GET', auth: null })).status).toBe(404);
  });

  it('rejects nonsensical faults', () => {
    expect(() => cp.setFault({ kind: 'status', status: 42 })).toThrow(RangeError);
    expect(() => cp.setFault({ kind: 'delay', ms: -1 })).toThrow(RangeError);
    expect(() => cp.setFault({ kind: 'delay', ms: 2 ** 31 })).toThrow(RangeError);
    expect(() => cp.setFault({ kind: 'status', status: 429, headers: { 'Bad Name': '1' } })).toThrow(RangeError);
    expect(() => cp.setFault({ kind: 'status', status: 429, headers: { 'RateLimit-Reset': '1\r\nX: y' } })).toThrow(RangeError);
    expect(() => cp.setFault({ kind: 'reset', count: 0 })).toThrow(RangeError);
  });
});

describe('request records and logs', () => {
  it('records method, path without query, status, arrival and answer times, parsed body and header facts', async () => {
    const before = Date.now();
    await register(REGISTER_BODY, { headers: { 'if-none-match': '"v1"' } });
    await call('/api/workers/register?debug=1', { body: '{', auth: null, contentType: 'application/json; charset=utf-8' });
    expect(cp.requests).toEqual([
      {
        method: 'POST',
        path: '/api/workers/register',
        status: 201,
        at: expect.any(Number),
        answeredAt: expect.any(Number),
        body: REGISTER_BODY,
        headers: { authorization: true, contentType: 'application/json', ifNoneMatch: '"v1"' },
      },
      {
        method: 'POST',
        path: '/api/workers/register',
        status: 500,
        at: expect.any(Number),
        answeredAt: expect.any(Number),
        headers: { authorization: false, contentType: 'application/json; charset=utf-8' },
      },
    ]);
    expect(cp.requests[0]!.at).toBeGreaterThanOrEqual(before);
    expect(cp.requests[0]!.answeredAt).toBeGreaterThanOrEqual(cp.requests[0]!.at);
  });

  it('never holds the token, even when a client puts it in the path or the body', async () => {
    const lines: string[] = [];
    await cp.close();
    cp = await startReferenceControlPlane({ logger: (l) => lines.push(l) });
    token = cp.mintToken(WORKER_ID);
    await register();
    await heartbeat();
    await heartbeat(WORKER_ID, METRICS, { auth: `Bearer ${token}x` });
    await call(`/api/workers/${token}/heartbeat`, { body: { ...METRICS, echo: token, [token]: 1 } });
    await register({ ...REGISTER_BODY, metadata: { note: `token is ${token}` } });
    const dump = JSON.stringify(cp.requests) + lines.join('\n');
    expect(dump).not.toContain(token);
    expect(dump).not.toContain(token.split('.')[2]);
    expect(dump).not.toContain('Bearer');
    expect(dump).toContain('[redacted]');
    expect(JSON.stringify([...cp.workers.values()].map((w) => ({ ...w, metadata: null })))).not.toContain(token);
  });

  it('logs one short line per request', async () => {
    const lines: string[] = [];
    await cp.close();
    cp = await startReferenceControlPlane({ logger: (l) => lines.push(l) });
    token = cp.mintToken(WORKER_ID);
    await register();
    await heartbeat();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^POST \/api\/workers\/register 201 \d+ms$/);
    expect(lines[1]).toMatch(new RegExp(`^POST /api/workers/${WORKER_ID}/heartbeat 200 \\d+ms$`));
  });

  it('survives a logger that throws', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({
      logger: () => {
        throw new Error('boom');
      },
    });
    token = cp.mintToken(WORKER_ID);
    expect((await register()).status).toBe(201);
  });
});

describe('lifecycle and robustness', () => {
  it('listens on 127.0.0.1 with an ephemeral port by default', () => {
    expect(cp.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(cp.url).not.toMatch(/:0$/);
  });

  it('has no URL before listen() when the port is ephemeral', async () => {
    const idle = createReferenceControlPlane();
    expect(() => idle.url).toThrow(/not listening/);
    await idle.close();
  });

  it('close() returns promptly although a keep-alive connection is open', async () => {
    expect((await register()).status).toBe(201); // leaves an idle pooled connection behind
    const started = Date.now();
    await cp.close();
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('close() returns promptly while a delayed answer is pending', async () => {
    cp.setFault({ kind: 'delay', ms: 30_000 });
    const pending = register().catch((err: unknown) => err);
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await cp.close();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await pending).toBeInstanceOf(Error);
  });

  it('comes back on the same URL with its state after close() and listen(), refusing connections meanwhile', async () => {
    await register();
    const url = cp.url;
    await cp.close();
    await expect(register()).rejects.toThrow(/fetch failed/);
    expect(await cp.listen()).toBe(url);
    expect((await heartbeat()).status).toBe(200);
    expect(cp.workers.get(WORKER_ID)?.heartbeats).toBe(1);
  });

  it('keeps serving after a malformed request line and an oversized header', async () => {
    const url = new URL(cp.url);
    const junk = await new Promise<string>((resolve) => {
      const socket = connect(Number(url.port), url.hostname, () => socket.write('\x00\x01 GARBAGE\r\n\r\n'));
      let data = '';
      socket.on('data', (c: Buffer) => (data += c.toString()));
      socket.on('close', () => resolve(data));
      socket.on('error', () => resolve(data));
    });
    expect(junk).toMatch(/^HTTP\/1\.1 400/);
    const big = await new Promise<string>((resolve) => {
      const socket = connect(Number(url.port), url.hostname, () =>
        socket.write(`POST /api/workers/register HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
      );
      let data = '';
      socket.on('data', (c: Buffer) => (data += c.toString()));
      socket.on('close', () => resolve(data));
      socket.on('error', () => resolve(data));
    });
    expect(big).toMatch(/^HTTP\/1\.1 431/);
    expect((await register()).status).toBe(201);
  });

  it('mints tokens the server accepts, with a fresh worker id when none is given', async () => {
    const fresh = cp.mintToken();
    const res = await register(REGISTER_BODY, { auth: `Bearer ${fresh}` });
    expect(res.status).toBe(201);
    expect(cp.workers.size).toBe(1);
    expect(cp.workers.has(WORKER_ID)).toBe(false);
  });
});
