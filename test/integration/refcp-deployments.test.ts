import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { statusReportSchema } from '../../src/protocol/status-report.js';
import { MAX_USAGE_RECORDS_PER_CALL, usageBatchSchema, type UsageRecord } from '../../src/protocol/usage.js';
import { createReferenceControlPlane, startReferenceControlPlane, type ReferenceControlPlane } from '../../src/refcp/index.js';

const WORKER_ID = '0b6f7c1a-2d3e-4f50-8a9b-c0d1e2f3a4b5';
const OTHER_ID = '9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d';
const DEP_A = 'd0000000-0000-4000-8000-00000000000a';
const DEP_B = 'd0000000-0000-4000-8000-00000000000b';

const REGISTER_BODY = { hostname: 'node-1', ipAddress: '10.0.0.5', capacity: { cpuCores: 4, memoryMb: 8192, diskGb: 80 } };
const REPORT = { status: 'running', seq: 1, bootId: 'boot-1', reportedAt: '2025-01-01T00:00:00.000Z' } as const;

interface CallOptions {
  method?: string;
  /** null: no Authorization header. Default: a valid token for WORKER_ID. */
  auth?: string | null;
  body?: unknown;
  headers?: Record<string, string>;
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
  const headers: Record<string, string> = { 'content-type': 'application/json', ...opts.headers };
  const auth = opts.auth === undefined ? `Bearer ${token}` : opts.auth;
  if (auth !== null) headers.authorization = auth;
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  const res = await fetch(cp.url + path, { method: opts.method ?? 'POST', headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

const register = (auth?: string) => call('/api/workers/register', { body: REGISTER_BODY, ...(auth ? { auth } : {}) });
const getDeployments = (opts: CallOptions = {}, id = WORKER_ID) => call(`/api/workers/${id}/deployments`, { method: 'GET', ...opts });
const report = (deploymentId: string, body: unknown, opts: CallOptions = {}, id = WORKER_ID) =>
  call(`/api/workers/${id}/deployments/${encodeURIComponent(deploymentId)}/status`, { body, ...opts });
const postUsage = (records: unknown, opts: CallOptions = {}, id = WORKER_ID) =>
  call(`/api/workers/${id}/usage`, { body: { records }, ...opts });
const admin = (path: string, opts: CallOptions = {}) => call(path, { method: 'GET', auth: `Bearer ${cp.adminToken}`, ...opts });

function usage(overrides: Partial<UsageRecord> = {}): UsageRecord {
  return {
    deploymentId: DEP_A,
    serviceId: 'svc-1',
    organizationId: 'org-1',
    periodStart: '2025-01-01T00:00:00.000Z',
    periodEnd: '2025-01-01T01:00:00.000Z',
    cpuHours: 0.5,
    memoryGbHours: 0.25,
    storageGbHours: 0,
    networkGb: 0.01,
    samples: 60,
    complete: true,
    ...overrides,
  };
}

const sha32 = (text: string) => `"${createHash('sha256').update(text).digest('hex').slice(0, 32)}"`;
const validation = (field: string, rule: string) => ({
  success: false,
  error: { code: 'VALIDATION_ERROR', message: `${field}: ${rule}`, field },
});

beforeEach(async () => {
  cp = await startReferenceControlPlane();
  token = cp.mintToken(WORKER_ID);
});

afterEach(async () => {
  await cp.close();
});

describe('GET /api/workers/:id/deployments', () => {
  it('serves an empty set with a strong ETag over the exact body', async () => {
    await register();
    const res = await getDeployments();
    expect(res.status).toBe(200);
    expect(res.text).toBe('{"success":true,"data":{"deployments":[]}}');
    expect(res.headers.get('etag')).toBe(sha32(res.text));
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(cp.deploymentsEtagOf(WORKER_ID)).toBe(res.headers.get('etag'));
  });

  it('serves exactly the rows set, hostile ones included, kept from before registration', async () => {
    const rows = [{ id: DEP_A, imageTag: 'x;rm -rf /', port: -1 }, 'not an object', null, { nested: { deep: [1, 2] } }];
    cp.setDeployments(WORKER_ID, rows);
    expect((await getDeployments()).status).toBe(404);
    await register();
    const res = await getDeployments();
    expect(res.json).toEqual({ success: true, data: { deployments: rows } });
    expect(cp.deploymentsOf(WORKER_ID)).toBe(rows);
  });

  it("names the set's current ETag in every heartbeat answer, and not at all with extensions: false", async () => {
    await register();
    const beat = () =>
      call(`/api/workers/${WORKER_ID}/heartbeat`, { body: { cpuPercent: 1, memoryPercent: 2, diskPercent: 3, containerCount: 0 } });
    const empty = await beat();
    expect(empty.json).toEqual({
      success: true,
      message: 'Heartbeat received',
      data: { deploymentsEtag: (await getDeployments()).headers.get('etag') },
    });
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    const changed = (await beat()).json as { data: { deploymentsEtag: string } };
    expect(changed.data.deploymentsEtag).not.toBe((empty.json as { data: { deploymentsEtag: string } }).data.deploymentsEtag);
    expect(changed.data.deploymentsEtag).toBe((await getDeployments()).headers.get('etag'));
    await cp.close();
    cp = await startReferenceControlPlane({ extensions: false });
    token = cp.mintToken(WORKER_ID);
    await register();
    expect((await beat()).json).toEqual({ success: true, message: 'Heartbeat received' });
  });

  it('answers 304 with the ETag and no body to a matching If-None-Match, in every form', async () => {
    await register();
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    const first = await getDeployments();
    const etag = first.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, `W/"x",W/${etag}`, '*']) {
      const res = await getDeployments({ headers: { 'if-none-match': inm } });
      expect(res.status, inm).toBe(304);
      expect(res.text).toBe('');
      expect(res.headers.get('etag')).toBe(etag);
    }
    expect((await getDeployments({ headers: { 'if-none-match': '"other"' } })).status).toBe(200);
    expect(cp.requests.at(-2)?.headers.ifNoneMatch).toBe('*');
  });

  it('changes the ETag when the set changes, so the old one fetches the new set', async () => {
    await register();
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    const etag = (await getDeployments()).headers.get('etag')!;
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }, { id: DEP_B }]);
    const res = await getDeployments({ headers: { 'if-none-match': etag } });
    expect(res.status).toBe(200);
    expect(res.headers.get('etag')).not.toBe(etag);
    expect((res.json as { data: { deployments: unknown[] } }).data.deployments).toHaveLength(2);
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    expect((await getDeployments({ headers: { 'if-none-match': etag } })).status).toBe(304);
  });

  it('serves a raw body verbatim, ETag computed over it', async () => {
    await register();
    cp.setDeploymentsBody(WORKER_ID, '<html>not json');
    const res = await getDeployments();
    expect(res.status).toBe(200);
    expect(res.text).toBe('<html>not json');
    expect(res.headers.get('etag')).toBe(sha32('<html>not json'));
    expect(cp.deploymentsOf(WORKER_ID)).toBeUndefined();
  });

  it('answers HEAD like GET, without a body', async () => {
    await register();
    const res = await getDeployments({ method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.text).toBe('');
    expect(res.headers.get('etag')).toBe(cp.deploymentsEtagOf(WORKER_ID));
  });

  it('routes case-insensitively with a trailing slash, and with an upper-case worker id', async () => {
    await register();
    expect((await call(`/API/Workers/${WORKER_ID.toUpperCase()}/Deployments/`, { method: 'GET' })).status).toBe(200);
  });

  it('answers 500 for a path parameter that cannot be percent-decoded', async () => {
    const res = await call('/api/workers/%E0%A4%A/deployments', { method: 'GET' });
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ success: false, error: 'Internal server error' });
  });
});

describe.each([
  ['GET deployments', (opts: CallOptions, id?: string) => getDeployments(opts, id)],
  ['POST status', (opts: CallOptions, id?: string) => report(DEP_A, REPORT, opts, id)],
  ['POST usage', (opts: CallOptions, id?: string) => postUsage([usage()], opts, id)],
])('%s: worker authentication and identity', (_name, send) => {
  beforeEach(() => cp.setDeployments(WORKER_ID, [{ id: DEP_A }]));

  it('answers 401 like the stock routes', async () => {
    await register();
    expect((await send({ auth: null })).json).toEqual({ error: 'Unauthorized', message: 'Worker authentication token required' });
    expect((await send({ auth: 'Bearer not.a.jwt' })).status).toBe(401);
  });

  it('answers 403 when the token belongs to another worker', async () => {
    await register();
    const res = await send({ auth: `Bearer ${cp.mintToken(OTHER_ID)}` });
    expect(res.status).toBe(403);
    expect(res.json).toEqual({ success: false, error: { code: 'FORBIDDEN', message: 'Token does not belong to this worker' } });
  });

  it('answers 404 WORKER_NOT_FOUND when the worker row does not exist', async () => {
    const res = await send({});
    expect(res.status).toBe(404);
    expect(res.json).toEqual({ success: false, error: { code: 'WORKER_NOT_FOUND', message: 'Worker not found' } });
  });

  it('answers stock 404 "API not found" with extensions: false, whatever the auth', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ extensions: false });
    token = cp.mintToken(WORKER_ID);
    await register();
    for (const auth of [undefined, null]) {
      const res = await send(auth === null ? { auth } : {});
      expect(res.status).toBe(404);
      expect(res.json).toEqual({ success: false, error: 'API not found' });
    }
    expect(cp.extensions).toBe(false);
  });

  it('is counted by the rate limiter and subject to faults', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ rateLimit: { max: 2, windowMs: 900_000 } });
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    token = cp.mintToken(WORKER_ID);
    await register();
    expect((await send({})).status).toBe(200);
    const limited = await send({});
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('900');
    await cp.close();
    cp = await startReferenceControlPlane();
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    token = cp.mintToken(WORKER_ID);
    await register();
    cp.setFault({ kind: 'status', status: 503, count: 1 });
    expect((await send({})).status).toBe(503);
    expect((await send({})).status).toBe(200);
  });
});

describe('POST /api/workers/:id/deployments/:deploymentId/status', () => {
  beforeEach(async () => {
    await register();
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }, { id: DEP_B }]);
  });

  it('accepts a full report, keeping it in arrival order and as the latest status', async () => {
    const full = {
      ...REPORT,
      swarmServiceId: 'svc123',
      containerId: 'c'.repeat(64),
      publicUrl: 'https://app.example.com:8443/x',
      externalPort: 30001,
      deploymentLogs: 'line 1\nline 2',
      message: 'ok',
      deployedAt: '2025-01-01T00:00:00Z',
      stoppedAt: '2025-01-01T00:00:00+02:00',
    };
    const before = Date.now();
    const res = await report(DEP_A, { ...full, futureField: 1 });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ success: true });
    expect(cp.reportsOf(WORKER_ID)).toEqual([{ deploymentId: DEP_A, report: full, receivedAt: expect.any(Date) }]);
    expect(cp.reportsOf(WORKER_ID)[0]!.receivedAt.getTime()).toBeGreaterThanOrEqual(before);
    expect(cp.deploymentStatusOf(WORKER_ID).get(DEP_A)).toEqual(full);
    await report(DEP_A, { ...REPORT, status: 'stopped', seq: 2 });
    expect(cp.deploymentStatusOf(WORKER_ID).get(DEP_A)?.status).toBe('stopped');
    expect(cp.reportsOf(WORKER_ID)).toHaveLength(2);
  });

  it.each([
    ['status', { status: undefined }, 'is required'],
    ['status', { status: 'healthy' }, 'must be one of deploying, running, stopped, failed, rolled_back'],
    ['swarmServiceId', { swarmServiceId: 'x'.repeat(129) }, 'must be at most 128 characters'],
    ['swarmServiceId', { swarmServiceId: null }, 'must be a string'],
    ['containerId', { containerId: 42 }, 'must be a string'],
    ['containerId', { containerId: '' }, 'must not be empty'],
    ['publicUrl', { publicUrl: 'ftp://example.com' }, 'must be an http or https URL'],
    ['publicUrl', { publicUrl: 'javascript:alert(1)' }, 'must be an http or https URL'],
    ['publicUrl', { publicUrl: `https://example.com/${'a'.repeat(2048)}` }, 'must be at most 2048 characters'],
    ['externalPort', { externalPort: 0 }, 'must be between 1 and 65535'],
    ['externalPort', { externalPort: 65536 }, 'must be between 1 and 65535'],
    ['externalPort', { externalPort: 80.5 }, 'must be an integer'],
    ['externalPort', { externalPort: '80' }, 'must be a number'],
    ['deploymentLogs', { deploymentLogs: 'é'.repeat(32_769) }, 'must be at most 65536 bytes of UTF-8'],
    ['message', { message: 'm'.repeat(4097) }, 'must be at most 4096 characters'],
    ['deployedAt', { deployedAt: '2025-01-01' }, 'must be an ISO 8601 date-time'],
    ['stoppedAt', { stoppedAt: 'yesterday' }, 'must be an ISO 8601 date-time'],
    ['seq', { seq: undefined }, 'is required'],
    ['seq', { seq: 0 }, 'must be at least 1'],
    ['seq', { seq: 1.5 }, 'must be a safe integer'],
    ['seq', { seq: 2 ** 53 }, 'must be a safe integer'],
    ['bootId', { bootId: undefined }, 'is required'],
    ['bootId', { bootId: 'b'.repeat(65) }, 'must be at most 64 characters'],
    ['reportedAt', { reportedAt: undefined }, 'is required'],
    ['reportedAt', { reportedAt: '2025-02-30T00:00:00Z' }, 'must be an ISO 8601 date-time'],
  ])('answers 400 naming %s for %o', async (field, change, rule) => {
    const res = await report(DEP_A, { ...REPORT, ...change });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validation(field, rule));
    expect(cp.reportsOf(WORKER_ID)).toHaveLength(0);
  });

  it('accepts the limits themselves', async () => {
    const edge = { ...REPORT, externalPort: 65535, deploymentLogs: 'é'.repeat(32_768), message: 'm'.repeat(4096), bootId: 'b'.repeat(64) };
    expect((await report(DEP_A, edge)).status).toBe(200);
  });

  it('answers 413 to a valid report whose JSON escaping takes it past the 100 kB body limit', async () => {
    // 64 KiB of ESC characters is 384 KiB of JSON: the agent must bound the serialised body, not the log bytes.
    const heavy = { ...REPORT, deploymentLogs: '\u001b'.repeat(65_536) };
    expect(statusReportSchema.safeParse(heavy).success).toBe(true);
    const res = await report(DEP_A, heavy);
    expect(res.status).toBe(413);
    expect(res.json).toEqual({ success: false, error: 'Payload too large' });
  });

  it('answers 400 for a body that is not an object', async () => {
    expect((await report(DEP_A, [REPORT])).json).toEqual(validation('body', 'must be a JSON object'));
  });

  it('acknowledges a repeated (deploymentId, bootId, seq) without counting it again', async () => {
    expect((await report(DEP_A, REPORT)).status).toBe(200);
    const again = await report(DEP_A, { ...REPORT, status: 'failed' });
    expect(again.status).toBe(200);
    expect(again.json).toEqual({ success: true });
    expect(cp.reportsOf(WORKER_ID)).toHaveLength(1);
    expect(cp.deploymentStatusOf(WORKER_ID).get(DEP_A)?.status).toBe('running');
    expect(cp.duplicateReports).toBe(1);
    // Same seq for another deployment, or another boot, is a different report.
    expect((await report(DEP_B, REPORT)).status).toBe(200);
    expect((await report(DEP_A, { ...REPORT, bootId: 'boot-2' })).status).toBe(200);
    expect(cp.reportsOf(WORKER_ID)).toHaveLength(3);
    expect(cp.duplicateReports).toBe(1);
  });

  it('accepts reports for a deployment no longer assigned, but not for one never assigned here', async () => {
    cp.setDeployments(WORKER_ID, [{ id: DEP_B }]);
    expect((await report(DEP_A, { ...REPORT, status: 'stopped' })).status).toBe(200);
    const never = await report('d-never', REPORT);
    expect(never.status).toBe(404);
    expect(never.json).toEqual({
      success: false,
      error: { code: 'DEPLOYMENT_NOT_FOUND', message: 'Deployment is not assigned to this worker' },
    });
    cp.setDeployments(OTHER_ID, [{ id: 'd-other' }]);
    expect((await report('d-other', REPORT)).status).toBe(404);
  });

  it('counts ids found in a parseable raw body as assigned', async () => {
    cp.setDeploymentsBody(WORKER_ID, JSON.stringify({ success: true, data: { deployments: [{ id: 'd-raw' }] } }));
    expect((await report('d-raw', REPORT)).status).toBe(200);
  });

  it('keeps memory bounded: oldest reports dropped beyond maxReports', async () => {
    await cp.close();
    cp = await startReferenceControlPlane({ maxReports: 3 });
    token = cp.mintToken(WORKER_ID);
    await register();
    cp.setDeployments(WORKER_ID, [{ id: DEP_A }]);
    for (let seq = 1; seq <= 5; seq++) expect((await report(DEP_A, { ...REPORT, seq })).status).toBe(200);
    expect(cp.reportsOf(WORKER_ID).map((r) => r.report.seq)).toEqual([3, 4, 5]);
    expect((await report(DEP_A, { ...REPORT, seq: 5 })).status).toBe(200);
    expect(cp.duplicateReports).toBe(1);
  });
});

describe('POST /api/workers/:id/usage', () => {
  beforeEach(async () => {
    await register();
  });

  it('stores records by (deploymentId, periodStart) and counts a repeat once', async () => {
    const a = usage();
    const b = usage({ periodStart: '2025-01-01T01:00:00.000Z', periodEnd: '2025-01-01T02:00:00.000Z' });
    const res = await postUsage([a, b]);
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ success: true, data: { accepted: 2, duplicates: 0 } });
    // The same period spelled without milliseconds is the same record; a complete record is final.
    const again = await postUsage([a, { ...b, periodStart: '2025-01-01T01:00:00Z', cpuHours: 99 }, usage({ deploymentId: DEP_B })]);
    expect(again.json).toEqual({ success: true, data: { accepted: 1, duplicates: 2 } });
    expect(cp.duplicateUsage).toBe(2);
    expect([...cp.usageOf(WORKER_ID).keys()]).toEqual([
      `${DEP_A}|2025-01-01T00:00:00.000Z`,
      `${DEP_A}|2025-01-01T01:00:00.000Z`,
      `${DEP_B}|2025-01-01T00:00:00.000Z`,
    ]);
    expect(cp.usageOf(WORKER_ID).get(`${DEP_A}|2025-01-01T01:00:00.000Z`)?.cpuHours).toBe(0.5);
  });

  it('lets an open period be updated until it is complete', async () => {
    const open = usage({ complete: false, cpuHours: 0.1 });
    expect((await postUsage([open])).json).toMatchObject({ data: { accepted: 1, duplicates: 0 } });
    expect((await postUsage([open])).json).toMatchObject({ data: { accepted: 0, duplicates: 1 } });
    expect((await postUsage([usage({ cpuHours: 0.5 })])).json).toMatchObject({ data: { accepted: 1, duplicates: 0 } });
    expect((await postUsage([usage({ complete: false, cpuHours: 0.7 })])).json).toMatchObject({ data: { accepted: 0, duplicates: 1 } });
    expect(cp.usageOf(WORKER_ID).get(`${DEP_A}|2025-01-01T00:00:00.000Z`)).toEqual(usage({ cpuHours: 0.5 }));
  });

  it('accepts an empty batch', async () => {
    expect((await postUsage([])).json).toEqual({ success: true, data: { accepted: 0, duplicates: 0 } });
  });

  it.each([
    ['records', { records: undefined }, 'is required'],
    ['records', { records: {} }, 'must be an array'],
    ['records[0].deploymentId', { records: [usage({ deploymentId: '' })] }, 'must not be empty'],
    ['records[1].organizationId', { records: [usage(), { ...usage(), organizationId: undefined }] }, 'is required'],
    [
      'records[0].periodStart',
      { records: [usage({ periodStart: '2025-01-01T00:00:00+01:00' })] },
      'must be an ISO 8601 UTC date-time ending in Z',
    ],
    ['records[0].periodEnd', { records: [usage({ periodEnd: '2025-01-01T00:00:00Z' })] }, 'must be after periodStart'],
    ['records[0].cpuHours', { records: [usage({ cpuHours: -0.1 })] }, 'must be at least 0'],
    ['records[0].networkGb', { records: [{ ...usage(), networkGb: '1' }] }, 'must be a number'],
    ['records[0].samples', { records: [usage({ samples: 1.5 })] }, 'must be an integer'],
    ['records[0].complete', { records: [{ ...usage(), complete: 'yes' }] }, 'must be true or false'],
  ])('answers 400 naming %s, storing nothing from the batch', async (field, body, rule) => {
    const res = await call(`/api/workers/${WORKER_ID}/usage`, { body });
    expect(res.status).toBe(400);
    expect(res.json).toEqual(validation(field, rule));
    expect(cp.usageOf(WORKER_ID).size).toBe(0);
  });

  it(`refuses more than ${MAX_USAGE_RECORDS_PER_CALL} records (over HTTP the 100 kB body limit bites first)`, async () => {
    const many = Array.from({ length: MAX_USAGE_RECORDS_PER_CALL + 1 }, (_, i) => usage({ deploymentId: `d${i}` }));
    expect(usageBatchSchema.safeParse({ records: many }).success).toBe(false);
    expect(usageBatchSchema.safeParse({ records: many.slice(1) }).success).toBe(true);
    expect((await postUsage(many)).status).toBe(413);
  });
});

describe('admin routes', () => {
  it.each([
    ['no header', null],
    ['a wrong token', 'Bearer wrong-token-wrong-token'],
    ['the token without Bearer', 'TOKEN'],
    ['a worker token', 'WORKER'],
  ])('answer 401 to %s, before reading the body', async (_what, auth) => {
    const value = auth === 'TOKEN' ? cp.adminToken : auth === 'WORKER' ? `Bearer ${token}` : auth;
    for (const [method, path] of [
      ['GET', '/admin/workers'],
      ['PUT', `/admin/workers/${WORKER_ID}/deployments`],
      ['GET', '/admin/nope'],
    ]) {
      const res = await admin(path!, { method, auth: value, body: method === 'PUT' ? { deployments: [{ id: DEP_A }] } : undefined });
      expect(res.status).toBe(401);
      expect(res.json).toEqual({ success: false, error: { code: 'UNAUTHORIZED', message: 'Admin token required' } });
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
    }
    expect(cp.deploymentsOf(WORKER_ID)).toEqual([]);
  });

  it('PUT sets the desired set the worker then polls, and GET lists workers with what they reported', async () => {
    expect(cp.adminToken).toMatch(/^[0-9a-f]{64}$/);
    const put = await admin(`/admin/workers/${WORKER_ID}/deployments`, {
      method: 'PUT',
      body: { deployments: [{ id: DEP_A }, { id: 7 }] },
    });
    expect(put.status).toBe(200);
    expect(put.json).toEqual({ success: true, data: { workerId: WORKER_ID, count: 2, etag: cp.deploymentsEtagOf(WORKER_ID) } });
    await register();
    expect((await getDeployments()).json).toEqual({ success: true, data: { deployments: [{ id: DEP_A }, { id: 7 }] } });
    await call(`/api/workers/${WORKER_ID}/heartbeat`, { body: { cpuPercent: 1, memoryPercent: 2, diskPercent: 3, containerCount: 0 } });
    await report(DEP_A, { ...REPORT, deploymentLogs: 'abc' });
    await postUsage([usage()]);
    cp.setDeployments(OTHER_ID, []);

    const list = await admin('/admin/workers');
    expect(list.status).toBe(200);
    const { deploymentLogs: _logs, ...reported } = { ...REPORT, deploymentLogs: 'abc' };
    expect(list.json).toEqual({
      success: true,
      data: {
        workers: [
          {
            id: WORKER_ID,
            registered: true,
            name: 'worker-node-1',
            hostname: 'node-1',
            status: 'active',
            lastHeartbeatAt: expect.any(String),
            heartbeats: 1,
            deployments: { count: 2, etag: cp.deploymentsEtagOf(WORKER_ID) },
            deploymentStatus: { [DEP_A]: { ...reported, logBytes: 3 } },
            reports: 1,
            duplicateReports: 0,
            usage: { records: 1, duplicates: 0 },
          },
          {
            id: OTHER_ID,
            registered: false,
            name: null,
            hostname: null,
            status: null,
            lastHeartbeatAt: null,
            heartbeats: 0,
            deployments: { count: 0, etag: cp.deploymentsEtagOf(OTHER_ID) },
            deploymentStatus: {},
            reports: 0,
            duplicateReports: 0,
            usage: { records: 0, duplicates: 0 },
          },
        ],
      },
    });
  });

  it('answers 400 without an array, 404 for unknown admin routes', async () => {
    const bad = await admin(`/admin/workers/${WORKER_ID}/deployments`, { method: 'PUT', body: { deployments: {} } });
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({ success: false, error: { code: 'VALIDATION_ERROR', message: 'deployments: must be an array' } });
    expect((await admin(`/admin/workers/${WORKER_ID}/deployments`, { method: 'PUT', body: '{' })).status).toBe(400);
    expect((await admin('/admin/workers', { method: 'DELETE' })).status).toBe(404);
  });

  it('accepts desired sets larger than the worker API body limit', async () => {
    const big = Array.from({ length: 100 }, (_, i) => ({ id: `d${i}`, env: { PAD: 'x'.repeat(2000) } }));
    expect((await admin(`/admin/workers/${WORKER_ID}/deployments`, { method: 'PUT', body: { deployments: big } })).status).toBe(200);
    expect(cp.deploymentsOf(WORKER_ID)).toHaveLength(100);
  });

  it('are neither rate-limited nor faulted, and keep their token and body out of the records', async () => {
    await cp.close();
    const lines: string[] = [];
    cp = await startReferenceControlPlane({
      rateLimit: { max: 1, windowMs: 900_000 },
      adminToken: 'operator-token-0123456789',
      logger: (l) => lines.push(l),
    });
    cp.setFault({ kind: 'status', status: 503 });
    for (let i = 0; i < 3; i++) {
      const res = await admin(`/admin/workers/${WORKER_ID}/deployments`, {
        method: 'PUT',
        body: { deployments: [{ id: 'd', secret: 'hunter2-hunter2' }] },
      });
      expect(res.status).toBe(200);
    }
    expect((await admin('/admin/workers')).status).toBe(200);
    const dump = JSON.stringify(cp.requests) + lines.join('\n');
    expect(dump).not.toContain('operator-token-0123456789');
    expect(dump).not.toContain('hunter2-hunter2');
    expect(cp.requests.at(0)).toMatchObject({ method: 'PUT', path: `/admin/workers/${WORKER_ID}/deployments`, status: 200 });
  });

  it('refuses a weak admin token option', () => {
    expect(() => createReferenceControlPlane({ adminToken: 'short' })).toThrow(RangeError);
    expect(() => createReferenceControlPlane({ adminToken: 'has a space in it, sadly' })).toThrow(RangeError);
  });
});

describe('protocol schemas', () => {
  it('statusReportSchema strips unknown fields and refuses null for optional ones', () => {
    expect(statusReportSchema.parse({ ...REPORT, extra: true })).toEqual(REPORT);
    expect(statusReportSchema.safeParse({ ...REPORT, message: null }).success).toBe(false);
  });
});
