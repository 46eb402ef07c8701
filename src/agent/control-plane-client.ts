import { Pool, errors as undiciErrors } from 'undici';
import type { Dispatcher } from 'undici';
import { Secret } from '../secret.js';
import { AGENT_VERSION } from '../version.js';
import { describeErrorBody } from '../protocol/worker.js';
import { parseRetryAfter } from './retry-after.js';

/** Bodies from the control plane above this size are refused: nothing we expect is that big. */
const MAX_RESPONSE_BYTES = 1 << 20;

export type CallFailureKind = 'network' | 'timeout' | 'http' | 'invalid-response';

export type CallResult<T = unknown> =
  | { ok: true; status: number; body: T; headers: Record<string, string | string[] | undefined>; rttMs: number }
  | {
      ok: false;
      kind: CallFailureKind;
      status?: number;
      /** Server-requested wait from Retry-After, in ms. */
      retryAfterMs?: number;
      code?: string;
      message: string;
      rttMs: number;
    };

export interface ControlPlaneClientOptions {
  baseUrl: string;
  token: Secret;
  timeoutMs: number;
}

/**
 * All HTTP to the control plane goes through one keep-alive undici Pool with connect, headers
 * and body timeouts, so no call can wait forever. Failures come back as values, not throws:
 * the loops decide what to do with each kind.
 */
export class ControlPlaneClient {
  readonly #pool: Pool;
  readonly #prefix: string;
  readonly #token: Secret;
  readonly #timeoutMs: number;

  constructor(opts: ControlPlaneClientOptions) {
    const url = new URL(opts.baseUrl);
    this.#prefix = url.pathname.replace(/\/+$/, '');
    this.#token = opts.token;
    this.#timeoutMs = opts.timeoutMs;
    this.#pool = new Pool(url.origin, {
      connections: 2,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connectTimeout: opts.timeoutMs,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
  }

  postJson<T = unknown>(path: string, body: unknown): Promise<CallResult<T>> {
    return this.request<T>('POST', path, JSON.stringify(body));
  }

  /** Conditional GET: 304 comes back as ok with no body. */
  getJson<T = unknown>(path: string, etag?: string): Promise<CallResult<T>> {
    return this.request<T>('GET', path, undefined, etag ? { 'if-none-match': etag } : {});
  }

  async request<T = unknown>(method: Dispatcher.HttpMethod, path: string, body?: string, extraHeaders: Record<string, string> = {}): Promise<CallResult<T>> {
    const started = performance.now();
    const rtt = () => Math.round(performance.now() - started);
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token.reveal()}`,
      accept: 'application/json',
      'user-agent': `skypanel-agent/${AGENT_VERSION}`,
      ...extraHeaders,
    };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Dispatcher.ResponseData;
    try {
      // A whole-call deadline on top of undici's per-phase timeouts: a server that trickles bytes stays bounded.
      res = await this.#pool.request({ method, path: this.#prefix + path, headers, body, signal: AbortSignal.timeout(this.#timeoutMs * 2) });
    } catch (err) {
      return { ok: false, ...this.#describeTransportError(err), rttMs: rtt() };
    }
    let text: string;
    try {
      text = await readLimited(res.body);
    } catch (err) {
      return { ok: false, ...this.#describeTransportError(err), status: res.statusCode, rttMs: rtt() };
    }
    const parsed = parseJson(text);
    const status = res.statusCode;
    // 304 Not Modified is a success for conditional GETs: the caller keeps what it has.
    if ((status >= 200 && status < 300) || status === 304) {
      if (parsed === undefined && status !== 204 && status !== 304 && text.length > 0) {
        return { ok: false, kind: 'invalid-response', status, message: `control plane answered ${status} with a body that is not JSON`, rttMs: rtt() };
      }
      return { ok: true, status, body: parsed as T, headers: res.headers, rttMs: rtt() };
    }
    const { code, message } = describeErrorBody(parsed);
    return {
      ok: false,
      kind: 'http',
      status,
      retryAfterMs: parseRetryAfter(res.headers['retry-after']),
      code,
      message: this.#scrub(message ?? `HTTP ${status}`),
      rttMs: rtt(),
    };
  }

  /** A server could echo the token back in an error; it must not reach our logs through us. */
  #scrub(text: string): string {
    const token = this.#token.reveal();
    return token.length > 0 ? text.split(token).join('[redacted]') : text;
  }

  #describeTransportError(err: unknown): { kind: CallFailureKind; message: string } {
    const e = err as { code?: string; name?: string; message?: string };
    const timeout =
      err instanceof undiciErrors.ConnectTimeoutError ||
      err instanceof undiciErrors.HeadersTimeoutError ||
      err instanceof undiciErrors.BodyTimeoutError ||
      e.name === 'TimeoutError';
    if (timeout) return { kind: 'timeout', message: `control plane did not answer within ${this.#timeoutMs} ms` };
    if (e.code === 'SKP_BODY_TOO_LARGE') return { kind: 'invalid-response', message: 'control plane response exceeds 1 MiB' };
    return { kind: 'network', message: this.#scrub(`${e.code ?? e.name ?? 'error'}: ${e.message ?? 'request failed'}`) };
  }

  async close(): Promise<void> {
    await this.#pool.destroy();
  }
}

async function readLimited(body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > MAX_RESPONSE_BYTES) {
      body.destroy();
      throw Object.assign(new Error('response too large'), { code: 'SKP_BODY_TOO_LARGE' });
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): unknown {
  if (text.length === 0) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
