import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { WORKER_TOKEN_LIFETIME_SECONDS, hashToken, signJwt, signWorkerToken, verify } from '../../src/skypanel/jwt.js';

const SECRET = 'test-secret-0123456789abcdef';
const WORKER_ID = '3f2b8c1e-6a4d-4f0e-9b7a-1c2d3e4f5a6b';

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function decodePart(token: string, index: number): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[index] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Builds a token by hand, signing `header.payload` with HS256 whatever the header says. */
function forge(header: unknown, payload: unknown, secret = SECRET): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

describe('signWorkerToken', () => {
  it('produces the payload SkyPanelV2 generateWorkerScript signs, in jsonwebtoken key order', () => {
    const now = Date.UTC(2025, 10, 11, 12, 0, 0);
    const token = signWorkerToken(SECRET, { workerId: WORKER_ID, generatedBy: 'admin-1', now });
    const payload = decodePart(token, 1);
    expect(Object.keys(payload)).toEqual(['workerId', 'type', 'generatedBy', 'generatedAt', 'iat', 'exp']);
    expect(payload).toEqual({
      workerId: WORKER_ID,
      type: 'worker',
      generatedBy: 'admin-1',
      generatedAt: '2025-11-11T12:00:00.000Z',
      iat: now / 1000,
      exp: now / 1000 + 315_576_000,
    });
    expect(decodePart(token, 0)).toEqual({ alg: 'HS256', typ: 'JWT' });
  });

  it("expires after ten years of 365.25 days, like jsonwebtoken's expiresIn '10y'", () => {
    expect(WORKER_TOKEN_LIFETIME_SECONDS).toBe(315_576_000);
  });

  it('defaults to a random UUID worker id', () => {
    const a = decodePart(signWorkerToken(SECRET), 1).workerId;
    const b = decodePart(signWorkerToken(SECRET), 1).workerId;
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
  });

  it('signs with standard HS256, so an independent implementation agrees', () => {
    const token = signWorkerToken(SECRET, { workerId: WORKER_ID });
    const [h, p, s] = token.split('.');
    expect(s).toBe(createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url'));
  });
});

describe('verify', () => {
  it('accepts a token it signed and returns header and payload', () => {
    const result = verify(signWorkerToken(SECRET, { workerId: WORKER_ID }), SECRET);
    expect(result.ok).toBe(true);
    if (result.ok) {
      expect(result.payload.workerId).toBe(WORKER_ID);
      expect(result.header.alg).toBe('HS256');
    }
  });

  it('rejects a token signed with a different secret', () => {
    expect(verify(signWorkerToken('other-secret', { workerId: WORKER_ID }), SECRET)).toEqual({ ok: false, reason: 'signature' });
  });

  it('rejects a tampered payload that keeps the original signature', () => {
    const token = signWorkerToken(SECRET, { workerId: WORKER_ID });
    const [h, , s] = token.split('.');
    const payload = { ...decodePart(token, 1), workerId: '00000000-0000-4000-8000-000000000000' };
    expect(verify(`${h}.${b64(payload)}.${s}`, SECRET)).toEqual({ ok: false, reason: 'signature' });
  });

  it('rejects a tampered header', () => {
    const token = signWorkerToken(SECRET);
    const [, p, s] = token.split('.');
    expect(verify(`${b64({ alg: 'HS256', typ: 'JWT', kid: 'x' })}.${p}.${s}`, SECRET).ok).toBe(false);
  });

  it('rejects alg "none" with an empty signature', () => {
    const payload = decodePart(signWorkerToken(SECRET), 1);
    expect(verify(`${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`, SECRET)).toEqual({ ok: false, reason: 'algorithm' });
  });

  it('rejects alg "none" even when a valid HS256 signature is attached', () => {
    const token = forge({ alg: 'none', typ: 'JWT' }, { type: 'worker', workerId: WORKER_ID });
    expect(verify(token, SECRET)).toEqual({ ok: false, reason: 'algorithm' });
  });

  it('rejects other algorithms such as HS512 and RS256', () => {
    expect(verify(forge({ alg: 'HS512', typ: 'JWT' }, { type: 'worker' }), SECRET).ok).toBe(false);
    expect(verify(forge({ alg: 'RS256', typ: 'JWT' }, { type: 'worker' }), SECRET).ok).toBe(false);
  });

  it('rejects an expired token, counting the exp second itself as expired', () => {
    const token = signWorkerToken(SECRET, { now: 1_000_000_000_000, expiresInSeconds: 60 });
    expect(verify(token, SECRET, { now: 1_000_000_059_999 }).ok).toBe(true);
    expect(verify(token, SECRET, { now: 1_000_000_060_000 })).toEqual({ ok: false, reason: 'expired' });
    expect(verify(token, SECRET)).toEqual({ ok: false, reason: 'expired' });
  });

  it('rejects a token whose exp or nbf is not a number', () => {
    expect(verify(signJwt({ exp: 'never' }, SECRET), SECRET)).toEqual({ ok: false, reason: 'claims' });
    expect(verify(signJwt({ nbf: '0' }, SECRET), SECRET)).toEqual({ ok: false, reason: 'claims' });
  });

  it('rejects a token that is not active yet (nbf in the future)', () => {
    const nbf = Math.floor(Date.now() / 1000) + 3600;
    expect(verify(signJwt({ nbf }, SECRET), SECRET)).toEqual({ ok: false, reason: 'not-active' });
  });

  it('accepts a token without exp, as jsonwebtoken does', () => {
    expect(verify(signJwt({ type: 'worker', workerId: WORKER_ID }, SECRET), SECRET).ok).toBe(true);
  });

  it.each([
    ['two segments', 'abc.def'],
    ['four segments', 'a.b.c.d'],
    ['empty string', ''],
    ['non-base64url characters', 'a+b.c/d.e'],
    ['empty header', `.${b64({})}.sig`],
  ])('rejects a malformed token: %s', (_name, token) => {
    expect(verify(token, SECRET)).toEqual({ ok: false, reason: 'malformed' });
  });

  it('rejects a header that is not a JSON object', () => {
    const input = `${Buffer.from('not json').toString('base64url')}.${b64({})}`;
    expect(verify(`${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`, SECRET)).toEqual({
      ok: false,
      reason: 'malformed',
    });
  });

  it('rejects a correctly signed payload that is not a JSON object', () => {
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, ['worker']), SECRET)).toEqual({ ok: false, reason: 'malformed' });
    expect(verify(forge({ alg: 'HS256', typ: 'JWT' }, 'worker'), SECRET)).toEqual({ ok: false, reason: 'malformed' });
  });

  it('rejects a signature with a trailing character or a padded encoding', () => {
    const token = signWorkerToken(SECRET);
    expect(verify(`${token}A`, SECRET).ok).toBe(false);
    expect(verify(`${token}=`, SECRET).ok).toBe(false);
  });
});

describe('hashToken', () => {
  it('is the sha256 hex digest SkyPanelV2 stores as auth_token_hash', () => {
    expect(hashToken('abc')).toBe(createHash('sha256').update('abc').digest('hex'));
    expect(hashToken('abc')).toMatch(/^[0-9a-f]{64}$/);
  });
});
