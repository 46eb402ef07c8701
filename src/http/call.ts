import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, RequestOptions } from 'node:http';
import type { Socket } from 'node:net';
import {
  BodyTimeoutError,
  ConnectTimeoutError,
  DeadlineError,
  HeadersTimeoutError,
  InvalidRequestError,
  RequestAbortedError,
  ResponseTooLargeError,
  SocketError,
  type HttpPhase,
  type HttpTransportError,
} from './errors.js';

/** Named bounds, as undici's connectTimeout / headersTimeout / bodyTimeout. */
export interface HttpTimeouts {
  /** From the start of the call (a wait for a pooled socket included) to a connected socket (TLS handshake included). */
  connectMs: number;
  /** From the connection to the response headers. */
  headersMs: number;
  /** Longest silence between two body chunks. */
  bodyMs: number;
  /** The whole call, a stale-socket retry included; a phase bound that would pass it fires at it instead. None when absent. */
  deadlineMs?: number;
}

export interface HttpCallSpec {
  method: string;
  /** Path and query string. */
  path: string;
  headers?: Readonly<OutgoingHttpHeaders>;
  /** Sent with Content-Length, never chunked: some proxies and body parsers refuse chunked request bodies. */
  body?: string;
  timeouts: HttpTimeouts;
  /** The body cap. 0 with `overflow: 'truncate'`: resolve at the headers, body unread. */
  maxResponseBytes: number;
  /** Past the cap: fail with ResponseTooLargeError (default), or keep the first `maxResponseBytes` and stop reading. */
  overflow?: 'fail' | 'truncate';
  /**
   * Whether the request may be sent twice: then a reused kept-alive socket the server had closed
   * (reset before any response byte) is retried once on a fresh connection. Default: by method.
   */
  idempotent?: boolean;
  /** Hands the response over as a stream, instead of buffering it, when this says so for its status. */
  streamIf?: (status: number) => boolean;
  /** For a handed-over stream: socket inactivity bound (BodyTimeoutError); 0 for none (an event stream may be silent for hours). */
  streamIdleMs?: number;
  signal?: AbortSignal;
}

export interface BufferedResponse {
  streamed: false;
  status: number;
  statusMessage: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Only with `overflow: 'truncate'`: the answer was longer than the cap (or announced so, then nothing is read). */
  truncated: boolean;
  /** Date.now() when the headers arrived. */
  headersAt: number;
}

export interface StreamedResponse {
  streamed: true;
  status: number;
  headers: IncomingHttpHeaders;
  /** The caller's to read and destroy; it fails with BodyTimeoutError or RequestAbortedError when the core cuts it. */
  stream: IncomingMessage;
}

export type HttpResponse = BufferedResponse | StreamedResponse;

/** What a call needs from the pool it runs in. */
export interface CallContext {
  send(options: RequestOptions): ClientRequest;
  options: RequestOptions;
  /** 'secureConnect' over TLS: the connect phase ends after the handshake. */
  connectedEvent: 'connect' | 'secureConnect';
  /** Before a stale-socket retry: the idle siblings of a socket the server closed are older still. */
  dropIdleSockets(): void;
  /** Every response's headers: the pool reads the keep-alive hint. */
  onHeaders(headers: IncomingHttpHeaders): void;
  /** Once, however the call ends. */
  onEnd(): void;
}

/** Errors that mean "the server closed this kept-alive connection before reading our request". */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
/** Probes on a stream left without an inactivity bound, so a peer that vanished is noticed (TCP only). */
const OPEN_STREAM_KEEPALIVE_MS = 30_000;

/**
 * One request, from send to settle: each event of node:http has its named handler below, and the
 * call's state lives in its fields. One timer covers every phase: entering a phase (or a body
 * chunk) restarts it for that phase's bound, or sets it for the deadline when that comes first.
 */
export class HttpCall {
  readonly #ctx: CallContext;
  readonly #spec: HttpCallSpec;
  readonly #resolve: (r: HttpResponse) => void;
  readonly #reject: (e: HttpTransportError) => void;
  readonly #deadlineAt: number;
  #req: ClientRequest | undefined;
  #res: IncomingMessage | undefined;
  #phase: HttpPhase = 'connect';
  #timer: NodeJS.Timeout | undefined;
  #timerMs = 0;
  /** Whether the running timer is set for the deadline rather than for the phase. */
  #byDeadline = false;
  #retried = false;
  #done = false;
  #headersAt = 0;
  #size = 0;
  #chunks: Buffer[] = [];

  constructor(ctx: CallContext, spec: HttpCallSpec, resolve: (r: HttpResponse) => void, reject: (e: HttpTransportError) => void) {
    this.#ctx = ctx;
    this.#spec = spec;
    this.#resolve = resolve;
    this.#reject = reject;
    const { deadlineMs } = spec.timeouts;
    this.#deadlineAt = deadlineMs !== undefined && deadlineMs > 0 ? performance.now() + deadlineMs : Infinity;
  }

  start(): void {
    const { signal } = this.#spec;
    if (signal?.aborted) return this.#fail(new RequestAbortedError(signal.reason));
    signal?.addEventListener('abort', this.onAbort, { once: true });
    this.#enter('connect');
    this.#attempt();
  }

  #attempt(): void {
    const { method, path, headers, body } = this.#spec;
    let req: ClientRequest;
    try {
      // Node validates headers here and throws on a value HTTP cannot carry (a damaged stored ETag).
      req = this.#ctx.send({ ...this.#ctx.options, method, path, headers });
    } catch (err) {
      return this.#fail(new InvalidRequestError(err as Error));
    }
    this.#req = req;
    // Listeners first: nothing below may leave a request that can emit an unheard 'error'.
    req.once('socket', this.onSocket);
    req.once('response', (res: IncomingMessage) => this.onResponse(req, res));
    req.on('error', (err: NodeJS.ErrnoException) => this.onRequestError(req, err));
    if (body !== undefined) req.setHeader('content-length', Buffer.byteLength(body));
    req.end(body);
  }

  readonly onSocket = (socket: Socket): void => {
    // A kept-alive socket (or one handed over by a finished call) is connected already.
    if (socket.connecting) socket.once(this.#ctx.connectedEvent, this.onConnected);
    else this.#enter('headers');
  };

  readonly onConnected = (): void => {
    if (!this.#done && this.#phase === 'connect') this.#enter('headers');
  };

  onRequestError(req: ClientRequest, err: NodeJS.ErrnoException): void {
    // An error of the attempt a retry replaced, or of a call already settled, is nobody's news.
    if (this.#done || req !== this.#req) return;
    if (this.#res === undefined && !this.#retried && this.#idempotent() && req.reusedSocket && STALE_SOCKET_CODES.has(err.code ?? '')) {
      // The server closed the idle connection as we wrote to it: go again on a fresh one, within the same deadline.
      this.#retried = true;
      this.#ctx.dropIdleSockets();
      this.#enter('connect');
      return this.#attempt();
    }
    this.#fail(new SocketError(err, this.#phase, this.#res?.statusCode));
  }

  onResponse(req: ClientRequest, res: IncomingMessage): void {
    if (this.#done || req !== this.#req) return;
    this.#res = res;
    this.#headersAt = Date.now();
    this.#ctx.onHeaders(res.headers);
    const status = res.statusCode ?? 0;
    if (this.#spec.streamIf?.(status)) return this.#handOver(res, status);
    this.#enter('body');
    const max = this.#spec.maxResponseBytes;
    const truncate = this.#spec.overflow === 'truncate';
    if (truncate && max <= 0) return this.#finishBuffered(false);
    if (Number(res.headers['content-length']) > max) return truncate ? this.#finishBuffered(true) : this.#tooLarge();
    res.on('data', this.onData);
    res.on('end', this.onEnd);
    res.on('error', this.onResponseError);
    res.on('close', this.onResponseClose);
  }

  readonly onData = (chunk: Buffer): void => {
    if (this.#done) return;
    const max = this.#spec.maxResponseBytes;
    if (this.#size + chunk.length > max) {
      if (this.#spec.overflow !== 'truncate') return this.#tooLarge();
      this.#chunks.push(chunk.subarray(0, max - this.#size));
      this.#size = max;
      return this.#finishBuffered(true);
    }
    this.#size += chunk.length;
    this.#chunks.push(chunk);
    this.#enter('body');
  };

  readonly onEnd = (): void => {
    if (this.#done) return;
    this.#settle();
    this.#resolve(this.#buffered(false));
  };

  readonly onResponseError = (err: NodeJS.ErrnoException): void => {
    this.#fail(new SocketError(err, 'body', this.#res?.statusCode));
  };

  /** Closed without 'end' or 'error' (a peer that went away mid-body): fail now rather than at the timer. */
  readonly onResponseClose = (): void => {
    if (this.#done) return;
    const err: NodeJS.ErrnoException = new Error('the connection closed before the response ended');
    err.code = 'ECONNRESET';
    this.#fail(new SocketError(err, 'body', this.#res?.statusCode));
  };

  readonly onTimeout = (): void => {
    const status = this.#res?.statusCode;
    const { timeouts } = this.#spec;
    if (this.#byDeadline) return this.#fail(new DeadlineError(timeouts.deadlineMs!, status));
    if (this.#phase === 'connect') return this.#fail(new ConnectTimeoutError(timeouts.connectMs));
    if (this.#phase === 'headers') return this.#fail(new HeadersTimeoutError(timeouts.headersMs));
    this.#fail(new BodyTimeoutError(timeouts.bodyMs, status ?? 0));
  };

  readonly onAbort = (): void => {
    this.#fail(new RequestAbortedError(this.#spec.signal?.reason));
  };

  #idempotent(): boolean {
    return this.#spec.idempotent ?? IDEMPOTENT_METHODS.has(this.#spec.method);
  }

  #enter(next: HttpPhase): void {
    this.#phase = next;
    const now = performance.now();
    const t = this.#spec.timeouts;
    const ms = next === 'connect' ? t.connectMs : next === 'headers' ? t.headersMs : t.bodyMs;
    if (now + ms > this.#deadlineAt) {
      // The deadline comes first; a timer already set for it stays as it is.
      if (!this.#byDeadline) {
        clearTimeout(this.#timer);
        this.#timer = setTimeout(this.onTimeout, Math.max(0, this.#deadlineAt - now));
        this.#byDeadline = true;
      }
      return;
    }
    // refresh() re-arms the same timer: a chunk costs no new timer.
    if (this.#timer !== undefined && !this.#byDeadline && ms === this.#timerMs) {
      this.#timer.refresh();
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = setTimeout(this.onTimeout, ms);
    this.#timerMs = ms;
    this.#byDeadline = false;
  }

  /** The stream is the caller's from here: the core's timer goes, the socket's inactivity bound (if any) stays. */
  #handOver(res: IncomingMessage, status: number): void {
    this.#settle();
    const req = this.#req!;
    const { signal } = this.#spec;
    const idleMs = this.#spec.streamIdleMs ?? this.#spec.timeouts.bodyMs;
    if (idleMs > 0) {
      req.setTimeout(idleMs, () => res.destroy(new BodyTimeoutError(idleMs, status)));
    } else {
      req.setTimeout(0);
      res.socket.setKeepAlive(true, OPEN_STREAM_KEEPALIVE_MS);
    }
    if (signal) {
      const cut = () => res.destroy(new RequestAbortedError(signal.reason));
      signal.addEventListener('abort', cut, { once: true });
      res.once('close', () => signal.removeEventListener('abort', cut));
    }
    this.#resolve({ streamed: true, status, headers: res.headers, stream: res });
  }

  #buffered(truncated: boolean): BufferedResponse {
    const res = this.#res!;
    const chunks = this.#chunks;
    return {
      streamed: false,
      status: res.statusCode ?? 0,
      statusMessage: res.statusMessage ?? '',
      headers: res.headers,
      body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, this.#size),
      truncated,
      headersAt: this.#headersAt,
    };
  }

  /** Resolves with what was kept and closes the connection: the rest of the body is never read. */
  #finishBuffered(truncated: boolean): void {
    this.#settle();
    this.#req!.destroy();
    this.#resolve(this.#buffered(truncated));
  }

  #tooLarge(): void {
    this.#fail(new ResponseTooLargeError(this.#spec.maxResponseBytes, this.#res?.statusCode ?? 0));
  }

  #fail(err: HttpTransportError): void {
    if (this.#done) return;
    this.#settle();
    // Destroying the request destroys its socket; a no-op on one already gone.
    this.#req?.destroy();
    this.#reject(err);
  }

  #settle(): void {
    this.#done = true;
    clearTimeout(this.#timer);
    this.#spec.signal?.removeEventListener('abort', this.onAbort);
    this.#ctx.onEnd();
  }
}
