import http from 'node:http';
import https from 'node:https';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, RequestOptions } from 'node:http';
import type { Socket } from 'node:net';
import { redact, type Secret } from '../secret.js';
import { AGENT_VERSION } from '../version.js';
import { describeErrorBody } from '../protocol/worker.js';
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

/**
 * A call that comes longer after the previous one than the server keeps an idle connection (its
 * `Keep-Alive: timeout=N` hint, less the second the agent lets go early) finds no connection to
 * reuse, and the one it opens would only idle until it is closed unused: so it asks the server
 * to close it after the answer (`Connection: close`). That spares the idle socket's timers and
 * the client-side close (measured with --jitless: 2.8 against 3.5 ms CPU per call and socket
 * lifetime), which against Express' 5 s is every 10 s heartbeat and most polls. Calls in a burst
 * (status reports of a pass, usage delivery) follow one another closely and keep theirs.
 */
function keepForMs(keepAliveHeader: string | string[] | undefined): number {
  const m = typeof keepAliveHeader === 'string' ? /(?:^|[\s,])timeout=(\d+)/i.exec(keepAliveHeader) : null;
  return m ? Math.max(0, Number(m[1]) * 1000 - 1000) : IDLE_SOCKET_MS;
}

/**
 * Errors that mean "the server closed this connection before reading our request" when they hit a
 * kept-alive socket before any response byte. Every call in the protocol is safe to repeat
 * (heartbeat, register, newest-wins status, usage records keyed by period), so one retry is too.
 */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

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

type Phase = 'connect' | 'headers' | 'body';

/**
 * All HTTP to the control plane goes through one keep-alive node:http(s) agent. Each call is
 * bounded by connect, time-to-headers and body-stall timeouts of `timeoutMs` and a whole-call
 * deadline of twice that, all driven by one timer that exists only while the call does.
 * Failures come back as values, not throws: the loops decide what to do with each kind.
 */
export class ControlPlaneClient {
  readonly #agent: http.Agent;
  readonly #send: (options: RequestOptions) => ClientRequest;
  readonly #tls: boolean;
  readonly #host: string;
  readonly #port: number;
  readonly #prefix: string;
  readonly #token: Secret;
  readonly #timeoutMs: number;
  // Built once: 360+ calls an hour need not rebuild the same four headers.
  readonly #getHeaders: OutgoingHttpHeaders;
  readonly #postHeaders: OutgoingHttpHeaders;
  /** How long the server keeps an idle connection, less a second (see keepForMs). */
  #keepMs = IDLE_SOCKET_MS;
  /** When the last call ended (performance.now()); undefined before the first. */
  #idleSince: number | undefined;
  #inFlight = 0;
  /** At most one request a second per call (method and path). */
  readonly #spacing: CallSpacing;

  constructor(opts: ControlPlaneClientOptions) {
    this.#spacing = new CallSpacing(opts.minCallSpacingMs);
    const url = new URL(opts.baseUrl);
    this.#tls = url.protocol === 'https:';
    if (!this.#tls && url.protocol !== 'http:') throw new TypeError(`control plane URL must be http or https, not ${url.protocol}`);
    this.#host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.#port = url.port === '' ? (this.#tls ? 443 : 80) : Number(url.port);
    this.#prefix = url.pathname.replace(/\/+$/, '');
    this.#token = opts.token;
    this.#timeoutMs = opts.timeoutMs;
    // lifo hands out the most recently used socket, the one least likely to have been closed by the server.
    const agentOptions = {
      keepAlive: true,
      maxSockets: MAX_SOCKETS,
      maxFreeSockets: 2,
      timeout: IDLE_SOCKET_MS,
      scheduling: 'lifo' as const,
    };
    // https.Agent verifies certificates against Node's CA store (plus NODE_EXTRA_CA_CERTS), as undici did.
    this.#agent = this.#tls ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    this.#send = this.#tls ? https.request : http.request;
    this.#getHeaders = {
      authorization: `Bearer ${opts.token.reveal()}`,
      accept: 'application/json',
      'user-agent': `skypanel-agent/${AGENT_VERSION}`,
    };
    // SkyPanelV2 parses a body only with exactly this content type.
    this.#postHeaders = { ...this.#getHeaders, 'content-type': 'application/json' };
  }

  /** Whether this call comes after the server has dropped (or we have closed) every idle connection. */
  #sparse(now: number): boolean {
    return this.#inFlight === 0 && this.#idleSince !== undefined && now - this.#idleSince > this.#keepMs;
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
    return this.#call<T>(method, path, init);
  }

  #call<T>(method: HttpMethod, path: string, init: RequestInit): Promise<CallResult<T>> {
    const { body, signal } = init;
    const timeoutMs = this.#timeoutMs;
    const holdMs = Math.max(0, init.holdMs ?? 0);
    const started = performance.now();
    const deadline = started + 2 * timeoutMs + holdMs;
    const rtt = () => Math.round(performance.now() - started);
    const close = this.#sparse(started);
    const options: RequestOptions = {
      agent: this.#agent,
      host: this.#host,
      port: this.#port,
      method,
      path: this.#prefix + path,
      headers: body === undefined ? this.#getHeaders : this.#postHeaders,
    };
    const agent = this.#agent;
    const send = this.#send;
    const scrub = (text: string) => this.#scrub(text);
    const token = this.#token;
    const secureEvent = this.#tls ? 'secureConnect' : 'connect';
    const noteKeepAlive = (header: string | string[] | undefined) => {
      this.#keepMs = keepForMs(header);
    };
    this.#inFlight++;
    const ended = () => {
      this.#inFlight--;
      this.#idleSince = performance.now();
    };

    return new Promise<CallResult<T>>((resolve) => {
      if (signal?.aborted) {
        ended();
        resolve({ ok: false, kind: 'network', message: 'request aborted by the caller', rttMs: 0 });
        return;
      }
      let req: ClientRequest;
      let phase: Phase = 'connect';
      let timer = setTimeout(onTimeout, timeoutMs);
      // The running timer's duration: the headers phase of a held call needs a longer one.
      let timerMs = timeoutMs;
      // Set once a phase would outlast the whole-call deadline: from then on the timer fires at the deadline.
      let pinned = false;
      let responded = false;
      let retried = false;
      let done = false;
      let status = 0;
      let size = 0;
      const chunks: Buffer[] = [];

      const finish = (result: CallResult<T>) => {
        if (done) return;
        done = true;
        ended();
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(result);
      };
      const fail = (kind: CallFailureKind, message: string) => {
        finish({ ok: false, kind, message, ...(responded ? { status } : {}), rttMs: rtt() });
      };

      // One timer per call: each phase restarts it, unless that would pass the deadline.
      function enter(next: Phase): void {
        phase = next;
        if (pinned) return;
        const now = performance.now();
        const ms = next === 'headers' ? timeoutMs + holdMs : timeoutMs;
        if (now + ms <= deadline) {
          if (ms === timerMs) {
            timer.refresh();
          } else {
            clearTimeout(timer);
            timer = setTimeout(onTimeout, ms);
            timerMs = ms;
          }
        } else {
          clearTimeout(timer);
          timer = setTimeout(onTimeout, Math.max(0, deadline - now));
          pinned = true;
        }
      }

      function onTimeout(): void {
        const message = pinned
          ? `control plane call took longer than ${2 * timeoutMs + holdMs} ms`
          : phase === 'connect'
            ? `no connection to the control plane within ${timeoutMs} ms`
            : phase === 'headers'
              ? `control plane sent no response within ${timeoutMs + holdMs} ms`
              : `control plane response stalled for ${timeoutMs} ms`;
        fail('timeout', message);
        req.destroy();
      }

      function onAbort(): void {
        fail('network', 'request aborted by the caller');
        req.destroy();
      }

      function attempt(): void {
        req = send(options);
        // Listeners first: nothing below may leave a request that can emit an unheard 'error'.
        req.once('socket', onSocket);
        req.once('response', onResponse);
        req.on('error', onRequestError);
        try {
          // setHeader throws on a value HTTP cannot carry (CR/LF, characters above U+00FF), e.g. a damaged stored ETag.
          if (init.headers) for (const name in init.headers) req.setHeader(name, init.headers[name]!);
        } catch (err) {
          fail('network', `request not sent: ${(err as Error).message}`);
          req.destroy();
          return;
        }
        if (close) req.setHeader('connection', 'close');
        // Content-Length, not chunked: some proxies and body parsers refuse chunked request bodies.
        if (body !== undefined) req.setHeader('content-length', Buffer.byteLength(body));
        req.end(body);
      }

      function onSocket(socket: Socket): void {
        // A kept-alive socket (or one handed over by a finished call) is connected already.
        if (socket.connecting) socket.once(secureEvent, onConnected);
        else enter('headers');
      }

      function onConnected(): void {
        if (!done) enter('headers');
      }

      function onRequestError(this: ClientRequest, err: NodeJS.ErrnoException): void {
        if (done || this !== req) return;
        if (!responded && !retried && this.reusedSocket && err.code !== undefined && STALE_SOCKET_CODES.has(err.code)) {
          // The server closed the idle connection as we wrote to it. Its idle siblings are older
          // still, so drop them too and go again on a fresh connection, within the same deadline.
          retried = true;
          dropIdleSockets(agent);
          enter('connect');
          attempt();
          return;
        }
        fail('network', scrub(`${err.code ?? err.name}: ${err.message}`));
      }

      function onResponse(this: ClientRequest, res: IncomingMessage): void {
        if (done || this !== req) return;
        responded = true;
        status = res.statusCode ?? 0;
        noteKeepAlive(res.headers['keep-alive']);
        enter('body');
        if (Number(res.headers['content-length']) > MAX_RESPONSE_BYTES) {
          tooLarge();
          return;
        }
        res.on('data', onData);
        res.on('end', onEnd);
        res.on('error', onResponseError);
      }

      function onData(chunk: Buffer): void {
        if (done) return;
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          tooLarge();
          return;
        }
        chunks.push(chunk);
        enter('body');
      }

      function tooLarge(): void {
        fail('invalid-response', 'control plane response exceeds 1 MiB');
        // Destroying the request destroys its socket: the rest of the body is never read.
        req.destroy();
      }

      function onResponseError(err: NodeJS.ErrnoException): void {
        fail('network', scrub(`${err.code ?? err.name}: ${err.message} (while reading the response)`));
      }

      function onEnd(this: IncomingMessage): void {
        if (done) return;
        const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks, size).toString('utf8');
        const parsed = parseJson(text);
        // 304 Not Modified is a success for conditional GETs: the caller keeps what it has.
        if ((status >= 200 && status < 300) || status === 304) {
          if (parsed === undefined && status !== 204 && status !== 304 && text.length > 0) {
            fail('invalid-response', `control plane answered ${status} with a body that is not JSON`);
            return;
          }
          finish({ ok: true, status, body: parsed as T, headers: this.headers, rttMs: rtt() });
          return;
        }
        const { code, message } = describeErrorBody(parsed, [token]);
        finish({
          ok: false,
          kind: 'http',
          status,
          retryAfterMs: serverRequestedWaitMs(status, this.headers),
          code,
          message: message ?? `HTTP ${status}`,
          rttMs: rtt(),
        });
      }

      signal?.addEventListener('abort', onAbort, { once: true });
      attempt();
    });
  }

  /** A server could echo the token back in an error; it must not reach our logs through us. */
  #scrub(text: string): string {
    return redact(text, [this.#token]);
  }

  /** Closes every connection; calls still in flight resolve as `network` failures. */
  async close(): Promise<void> {
    this.#spacing.close();
    this.#agent.destroy();
  }
}

function dropIdleSockets(agent: http.Agent): void {
  for (const name in agent.freeSockets) {
    for (const socket of agent.freeSockets[name] ?? []) socket.destroy();
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
