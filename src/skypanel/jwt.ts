import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

/**
 * HS256 JWTs compatible with the `jsonwebtoken` package SkyPanelV2 uses, written against
 * node:crypto: the panel half (src/panel) verifies them and the reference control plane (src/refcp)
 * mints and verifies them, neither with a JWT library.
 */

/** jsonwebtoken's `expiresIn: '10y'` goes through `ms`, where a year is 365.25 days. */
export const WORKER_TOKEN_LIFETIME_SECONDS = 10 * 365.25 * 24 * 60 * 60;

export type JwtPayload = Record<string, unknown>;

export interface WorkerTokenClaims {
  workerId: string;
  type: 'worker';
  generatedBy: string;
  generatedAt: string;
  iat: number;
  exp: number;
}

export interface SignWorkerTokenOptions {
  /** Defaults to a fresh random UUID, as SkyPanelV2's generateWorkerScript does. */
  workerId?: string;
  /** The admin user id that generated the script in SkyPanelV2. */
  generatedBy?: string;
  /** Clock override (ms since epoch or Date); lets tests mint already-expired tokens. */
  now?: number | Date;
  expiresInSeconds?: number;
}

export type VerifyFailure =
  | 'malformed' // not three base64url segments, or header/payload not JSON objects
  | 'algorithm' // header.alg is not HS256 (this rejects alg "none")
  | 'signature'
  | 'claims' // exp/nbf present but not numbers
  | 'not-active' // nbf in the future
  | 'expired';

export type VerifyResult = { ok: true; header: JwtPayload; payload: JwtPayload } | { ok: false; reason: VerifyFailure };

export interface VerifyOptions {
  /** Clock override in ms since epoch. */
  now?: number;
}

const SEGMENT = /^[A-Za-z0-9_-]+$/;
const DEFAULT_HEADER = { alg: 'HS256', typ: 'JWT' } as const;

function encodeJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

function hmac(input: string, secret: string): string {
  return createHmac('sha256', secret).update(input, 'utf8').digest('base64url');
}

function parseObjectSegment(segment: string): JwtPayload | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JwtPayload) : null;
  } catch {
    return null;
  }
}

/**
 * Signs `payload` as-is (no iat/exp added). `header` overrides are for tests that need to
 * forge odd tokens; the signature is always HS256 whatever the header claims.
 */
export function signJwt(payload: JwtPayload, secret: string, header: JwtPayload = DEFAULT_HEADER): string {
  const signingInput = `${encodeJson(header)}.${encodeJson(payload)}`;
  return `${signingInput}.${hmac(signingInput, secret)}`;
}

/** Mints a token shaped exactly like SkyPanelV2's generateWorkerScript output. */
export function signWorkerToken(secret: string, opts: SignWorkerTokenOptions = {}): string {
  const nowMs = opts.now === undefined ? Date.now() : typeof opts.now === 'number' ? opts.now : opts.now.getTime();
  const iat = Math.floor(nowMs / 1000);
  // Key order matches jsonwebtoken: caller's claims first, then iat, then exp.
  const claims: WorkerTokenClaims = {
    workerId: opts.workerId ?? randomUUID(),
    type: 'worker',
    generatedBy: opts.generatedBy ?? 'refcp-admin',
    generatedAt: new Date(nowMs).toISOString(),
    iat,
    exp: iat + (opts.expiresInSeconds ?? WORKER_TOKEN_LIFETIME_SECONDS),
  };
  return signJwt({ ...claims }, secret);
}

/**
 * Verifies like `jsonwebtoken.verify(token, secret)` restricted to HS256: structure, algorithm,
 * signature (constant time), then nbf and exp when present. Like jsonwebtoken, a token without
 * `exp` is accepted; every token SkyPanelV2 mints carries one.
 */
export function verify(token: string, secret: string, opts: VerifyOptions = {}): VerifyResult {
  const parts = token.split('.');
  if (parts.length !== 3) return { ok: false, reason: 'malformed' };
  const [encodedHeader, encodedPayload, signature] = parts as [string, string, string];
  if (!SEGMENT.test(encodedHeader) || !SEGMENT.test(encodedPayload)) return { ok: false, reason: 'malformed' };

  const header = parseObjectSegment(encodedHeader);
  if (header === null) return { ok: false, reason: 'malformed' };
  if (header.alg !== 'HS256') return { ok: false, reason: 'algorithm' };

  // Both sides are compared as base64url text, as jws does, so a non-canonical encoding of the
  // right bytes is still rejected. The length check leaks nothing: HS256 output is fixed-size.
  const expected = Buffer.from(hmac(`${encodedHeader}.${encodedPayload}`, secret), 'utf8');
  const given = Buffer.from(signature, 'utf8');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return { ok: false, reason: 'signature' };
  }

  const payload = parseObjectSegment(encodedPayload);
  if (payload === null) return { ok: false, reason: 'malformed' };

  const nowSeconds = Math.floor((opts.now ?? Date.now()) / 1000);
  if (payload.nbf !== undefined) {
    if (typeof payload.nbf !== 'number') return { ok: false, reason: 'claims' };
    if (payload.nbf > nowSeconds) return { ok: false, reason: 'not-active' };
  }
  if (payload.exp !== undefined) {
    if (typeof payload.exp !== 'number') return { ok: false, reason: 'claims' };
    if (nowSeconds >= payload.exp) return { ok: false, reason: 'expired' };
  }
  return { ok: true, header, payload };
}

/** What SkyPanelV2 stores in container_workers.auth_token_hash. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
