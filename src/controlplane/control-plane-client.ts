import { redact, type Secret } from '../secret.js';
import { AGENT_VERSION } from '../version.js';
import { describeErrorBody } from '../protocol/worker.js';
import { HttpPool, targetFromUrl } from '../http/pool.js';
import type { BufferedResponse } from '../http/call.js';
import {
  BodyTimeoutError,
  ConnectTimeoutError,
  DeadlineError,
  HeadersTimeoutError,
  HttpTransportError,
  InvalidRequestError,
  RequestAbortedError,
  ResponseTooLargeError,
  SocketError,
} from '../http/errors.js';
import { serverRequestedWaitMs } from './retry-after.js';
import { CallSpacing } from './call-spacing.js';

/** Bodies from the control plane above this size are refused: nothing we expect is that big. */
const MAX_RESPONSE_BYTES = 1 << 20;

/** Enough for a reconcile pass posting a few reports while a heartbeat is in flight; more would only queue at the panel. */
const MAX_SOCKETS = 4;

/**
 * How long an idle connection is kept when the server does not say. Node's agent shortens it to
 * the server's `Keep-Alive: timeout=N` hint minus one second, and Express on Node (SkyPanelV2
 * served directly) announces 5 s: there we close at 4 s, before the server does, so the
 * close-while-we-write race is rare. Behind a proxy that keeps connections longer (nginx 75 s,
 * most load balancers 60 s) a heartbeat reuses the connection instead. Measured on this machine
 * (2 cores, loopback, 300-byte POST), one request costs about 0.2 ms CPU on a kept connection,
 * 0.5 ms on a new plain one and 4 ms with a full TLS handshake (2 ms with session resumption,
 * which https.Agent does by itself): at 360 heartbeats an hour a handshake each time would be over
 * a second of the 2 s budget. 45 s spans a heartbeat interval (default 30 s + jitter) and stays
 * under the usual 60 s proxy limits; a proxy that closes sooner without a hint costs one retried
 * write (below), not a failure.
 */
const IDLE_SOCKET_MS = 45_000;

export type CallFailureKind = 'network' | 'timeout' | 'http' | 'invalid-response';

export type CallResult<T = unknown> =
  | { ok: true; status: number; body: T; headers: Record<string, string | string[] | undefined>; rttMs: number }
  | {
      ok: false;
      kind: CallFailureKind;
      status?: number;
      /** Server-requested wait (Retry-After; on a 429 the rate-limit window's end when sooner), in ms, capped (retry-after.ts). */
      retryAfterMs?: number;
      code?: string;
      message: string;
      rttMs: number;
    };

export interface ControlPlaneClientOptions {
  baseUrl: string;
  token: Secret;
  timeoutMs: number;
  /** MIN_CALL_SPACING_MS (call-spacing.ts) unless given (tests of the HTTP core itself). */
  minCallSpacingMs?: number;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface CallOptions {
  /** Ends the call early; it then resolves as a `network` failure. */
  signal?: AbortSignal;
  /** How long the server may hold the answer (blocking query): added to the headers wait and the deadline. */
  holdMs?: number;
}

export interface RequestInit extends CallOptions {
  /** Already-serialised JSON. */
  body?: string;
  headers?: Readonly<Record<string, string>>;
}

/**
 * All HTTP to the control plane goes through one keep-alive node:http(s) agent. Each call is
 * bounded by connect, time-to-headers and body-stall timeouts of `timeoutMs` and a whole-call
 * deadline of twice that, all driven by one timer that exists only while the call does.
 * Failures come back as values, not throws: the loops decide what to do with each kind.
 */
export class ControlPlaneClient {
  readonly #pool: HttpPool;
  readonly #prefix: string;
  readonly #token: Secret;
  readonly #timeoutMs: number;
  // Built once: 360+ calls an hour need not rebuild the same four headers.
  readonly #getHeaders: Readonly<Record<string, string>>;
  readonly #postHeaders: Readonly<Record<string, string>>;
  /** At most one request a second per call (method and path). */
  readonly #spacing: CallSpacing;

  constructor(opts: ControlPlaneClientOptions) {
    this.#spacing = new CallSpacing(opts.minCallSpacingMs);
    const url = new URL(opts.baseUrl);
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw new TypeError(`control plane URL must be http or https, not ${url.protocol}`);
    this.#prefix = url.pathname.replace(/\/+$/, '');
    this.#token = opts.token;
    this.#timeoutMs = opts.timeoutMs;
    // Over https, certificates are verified against Node's CA store (plus NODE_EXTRA_CA_CERTS), as undici did.
    // closeWhenSparse: a call that comes after the server's `Keep-Alive: timeout=N` (less the second the agent
    // lets go early) asks for `Connection: close`, since the connection it opens would only idle until closed
    // unused (measured with --jitless: 2.8 against 3.5 ms CPU per call and socket lifetime); against Express'
    // 5 s that is every 10 s heartbeat and most polls, while calls in a burst (a pass's reports) keep theirs.
    this.#pool = new HttpPool(targetFromUrl(url), {
      keepAlive: true,
      maxSockets: MAX_SOCKETS,
      maxFreeSockets: 2,
      idleSocketMs: IDLE_SOCKET_MS,
      closeWhenSparse: true,
    });
    this.#getHeaders = {
      authorization: `Bearer ${opts.token.reveal()}`,
      accept: 'application/json',
      'user-agent': `skypanel-agent/${AGENT_VERSION}`,
    };
    // SkyPanelV2 parses a body only with exactly this content type.
    this.#postHeaders = { ...this.#getHeaders, 'content-type': 'application/json' };
  }

  postJson<T = unknown>(path: string, body: unknown, opts: CallOptions = {}): Promise<CallResult<T>> {
    return this.request<T>('POST', path, { body: JSON.stringify(body), signal: opts.signal });
  }

  /** Conditional GET: 304 comes back as ok with no body. */
  getJson<T = unknown>(path: string, etag?: string, opts: CallOptions = {}): Promise<CallResult<T>> {
    return this.request<T>('GET', path, {
      headers: etag ? { 'if-none-match': etag } : undefined,
      signal: opts.signal,
      holdMs: opts.holdMs,
    });
  }

  async request<T = unknown>(method: HttpMethod, path: string, init: RequestInit = {}): Promise<CallResult<T>> {
    if (!(await this.#spacing.wait(`${method} ${path.split('?')[0]}`, init.signal))) {
      return {
        ok: false,
        kind: 'network',
        message: this.#spacing.closed ? 'control-plane client closed' : 'request aborted by the caller',
        rttMs: 0,
      };
    }
    return new PanelCall<T>(this.#timeoutMs, Math.max(0, init.holdMs ?? 0), this.#token).run(this.#pool, {
      method,
      path: this.#prefix + path,
      headers: this.#headersFor(init),
      body: init.body,
      signal: init.signal,
    });
  }

  #headersFor(init: RequestInit): Readonly<Record<string, string>> {
    const base = init.body === undefined ? this.#getHeaders : this.#postHeaders;
    return init.headers ? { ...base, ...init.headers } : base;
  }

  /** Closes every connection; calls still in flight resolve as `network` failures. */
  async close(): Promise<void> {
    this.#spacing.close();
    this.#pool.close();
  }
}

/**
 * One call to the panel: sends it through the core, bounded by connect, time-to-headers and
 * body-stall timeouts of `timeoutMs` (the headers wait stretched by a blocking query's hold) and a
 * whole-call deadline of twice that, and reads the outcome into a CallResult: the answer through
 * onAnswer, each kind of transport failure through its own handler.
 */
class PanelCall<T> {
  readonly #started = performance.now();

  constructor(
    readonly timeoutMs: number,
    readonly holdMs: number,
    readonly token: Secret,
  ) {}

  async run(
    pool: HttpPool,
    req: { method: HttpMethod; path: string; headers: Readonly<Record<string, string>>; body?: string; signal?: AbortSignal },
  ): Promise<CallResult<T>> {
    const { timeoutMs, holdMs } = this;
    try {
      const res = await pool.request({
        ...req,
        timeouts: { connectMs: timeoutMs, headersMs: timeoutMs + holdMs, bodyMs: timeoutMs, deadlineMs: 2 * timeoutMs + holdMs },
        maxResponseBytes: MAX_RESPONSE_BYTES,
        // Every call in the protocol is safe to repeat (heartbeat, register, newest-wins status, usage
        // records keyed by period): a kept-alive socket the server had closed costs one retry, not a failure.
        idempotent: true,
      });
      return this.onAnswer(res);
    } catch (err) {
      if (err instanceof HttpTransportError) return this.onFailure(err);
      throw err;
    }
  }

  get rttMs(): number {
    return Math.round(performance.now() - this.#started);
  }

  onAnswer(res: BufferedResponse): CallResult<T> {
    const { status } = res;
    const text = res.body.toString('utf8');
    const parsed = parseJson(text);
    // 304 Not Modified is a success for conditional GETs: the caller keeps what it has.
    if ((status >= 200 && status < 300) || status === 304) {
      if (parsed === undefined && status !== 204 && status !== 304 && text.length > 0)
        return this.#failed('invalid-response', `control plane answered ${status} with a body that is not JSON`, status);
      return { ok: true, status, body: parsed as T, headers: res.headers, rttMs: this.rttMs };
    }
    const { code, message } = describeErrorBody(parsed, [this.token]);
    return {
      ok: false,
      kind: 'http',
      status,
      retryAfterMs: serverRequestedWaitMs(status, res.headers),
      code,
      message: message ?? `HTTP ${status}`,
      rttMs: this.rttMs,
    };
  }

  onFailure(err: HttpTransportError): CallResult<T> {
    const { timeoutMs, holdMs } = this;
    if (err instanceof DeadlineError)
      return this.#failed('timeout', `control plane call took longer than ${2 * timeoutMs + holdMs} ms`, err.status);
    if (err instanceof ConnectTimeoutError) return this.#failed('timeout', `no connection to the control plane within ${timeoutMs} ms`);
    if (err instanceof HeadersTimeoutError)
      return this.#failed('timeout', `control plane sent no response within ${timeoutMs + holdMs} ms`);
    if (err instanceof BodyTimeoutError) return this.#failed('timeout', `control plane response stalled for ${timeoutMs} ms`, err.status);
    if (err instanceof ResponseTooLargeError) return this.#failed('invalid-response', 'control plane response exceeds 1 MiB', err.status);
    if (err instanceof RequestAbortedError) return this.#failed('network', 'request aborted by the caller');
    if (err instanceof InvalidRequestError) return this.#failed('network', `request not sent: ${err.message}`);
    const where = err instanceof SocketError && err.phase === 'body' ? ' (while reading the response)' : '';
    // A server could echo the token back in an error; it must not reach our logs through us.
    return this.#failed('network', redact(`${err.code}: ${err.message}${where}`, [this.token]), err.status);
  }

  #failed(kind: CallFailureKind, message: string, status?: number): CallResult<T> {
    return { ok: false, kind, message, ...(status !== undefined ? { status } : {}), rttMs: this.rttMs };
  }
}

function parseJson(text: string): unknown {
  if (text.length === 0) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
