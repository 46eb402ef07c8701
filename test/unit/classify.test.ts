import { describe, expect, it } from 'vitest';
import { classifyResponse } from '../../src/controlplane/classify.js';
import type { CallResult } from '../../src/controlplane/control-plane-client.js';

const http = (status: number, code?: string, retryAfterMs?: number): CallResult => ({
  ok: false,
  kind: 'http',
  status,
  message: `HTTP ${status}`,
  rttMs: 1,
  ...(code === undefined ? {} : { code }),
  ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
});
const ok = (status: number): CallResult => ({ ok: true, status, body: {}, headers: {}, rttMs: 1 });

describe('control-plane response classifier', () => {
  it('2xx is ok, 304 is not-modified', () => {
    expect(classifyResponse(ok(200))).toBe('ok');
    expect(classifyResponse(ok(204))).toBe('ok');
    expect(classifyResponse(ok(304))).toBe('not-modified');
  });

  it('a 404 without WORKER_NOT_FOUND on an extension call is extension-missing; with it, worker-gone', () => {
    expect(classifyResponse(http(404))).toBe('extension-missing');
    expect(classifyResponse(http(404, 'NOT_FOUND'))).toBe('extension-missing');
    expect(classifyResponse(http(404, 'WORKER_NOT_FOUND'))).toBe('worker-gone');
  });

  it('any 404 on a stock call (the heartbeat) is worker-gone', () => {
    expect(classifyResponse(http(404), { extension: false })).toBe('worker-gone');
    expect(classifyResponse(http(404, 'WORKER_NOT_FOUND'), { extension: false })).toBe('worker-gone');
  });

  it('400, 413 and 404 DEPLOYMENT_NOT_FOUND are refused: the request will never be accepted', () => {
    expect(classifyResponse(http(400))).toBe('refused');
    expect(classifyResponse(http(413))).toBe('refused');
    expect(classifyResponse(http(404, 'DEPLOYMENT_NOT_FOUND'))).toBe('refused');
  });

  it('a named wait is retry-after; everything else failed', () => {
    expect(classifyResponse(http(429, undefined, 5_000))).toBe('retry-after');
    expect(classifyResponse(http(503, undefined, 5_000))).toBe('retry-after');
    expect(classifyResponse(http(429))).toBe('failed');
    expect(classifyResponse(http(500))).toBe('failed');
    expect(classifyResponse(http(401))).toBe('failed');
    expect(classifyResponse({ ok: false, kind: 'network', message: 'down', rttMs: 0 })).toBe('failed');
    expect(classifyResponse({ ok: false, kind: 'timeout', message: 'slow', rttMs: 0 })).toBe('failed');
  });
});
