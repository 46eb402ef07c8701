/*
 * The transport failures of the HTTP core, one class each with a stable `code`, as undici's
 * lib/core/errors.js: callers branch on the class (or `code`), never on message text. An HTTP
 * answer, whatever its status, is not one of these: the core hands it back and the client decides.
 */

/** Where a call was when it failed: waiting for a connection, for the response headers, or reading the body. */
export type HttpPhase = 'connect' | 'headers' | 'body';

export abstract class HttpTransportError extends Error {
  abstract readonly code: string;
  /** The answer's status when the failure came after its headers. */
  readonly status: number | undefined;

  constructor(message: string, status?: number, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

/** Any of the four time bounds: one phase took too long, or the whole call passed its deadline. */
export abstract class HttpTimeoutError extends HttpTransportError {
  /** The bound that fired, in ms. */
  readonly timeoutMs: number;

  constructor(message: string, timeoutMs: number, status?: number) {
    super(message, status);
    this.timeoutMs = timeoutMs;
  }
}

export class ConnectTimeoutError extends HttpTimeoutError {
  readonly code = 'HTTP_CONNECT_TIMEOUT';
  override readonly name = 'ConnectTimeoutError';
  constructor(timeoutMs: number) {
    super(`no connection within ${timeoutMs} ms`, timeoutMs);
  }
}

export class HeadersTimeoutError extends HttpTimeoutError {
  readonly code = 'HTTP_HEADERS_TIMEOUT';
  override readonly name = 'HeadersTimeoutError';
  constructor(timeoutMs: number) {
    super(`no response headers within ${timeoutMs} ms`, timeoutMs);
  }
}

/** No body byte for the bound: on a buffered answer, or on a handed-over stream's socket. */
export class BodyTimeoutError extends HttpTimeoutError {
  readonly code = 'HTTP_BODY_TIMEOUT';
  override readonly name = 'BodyTimeoutError';
  constructor(timeoutMs: number, status: number) {
    super(`the response body stalled for ${timeoutMs} ms`, timeoutMs, status);
  }
}

/** The whole call, retry included, took longer than its deadline (a peer that trickles bytes). */
export class DeadlineError extends HttpTimeoutError {
  readonly code = 'HTTP_DEADLINE';
  override readonly name = 'DeadlineError';
  constructor(timeoutMs: number, status?: number) {
    super(`the call took longer than ${timeoutMs} ms`, timeoutMs, status);
  }
}

/** Announced (Content-Length) or read past the cap; the connection is destroyed, the rest never read. */
export class ResponseTooLargeError extends HttpTransportError {
  readonly code = 'HTTP_RESPONSE_TOO_LARGE';
  override readonly name = 'ResponseTooLargeError';
  readonly maxBytes: number;
  constructor(maxBytes: number, status: number) {
    super(`the response exceeds ${maxBytes} bytes`, status);
    this.maxBytes = maxBytes;
  }
}

/**
 * The connection failed: refused, reset, no such socket, a TLS verification error. `code` is the
 * socket's own (ECONNREFUSED, ENOENT, ERR_TLS_CERT_ALTNAME_INVALID...) because that is what callers
 * explain to people; `message` is the socket's own text, `cause` the original error.
 */
export class SocketError extends HttpTransportError {
  readonly code: string;
  override readonly name = 'SocketError';
  readonly phase: HttpPhase;

  constructor(err: NodeJS.ErrnoException, phase: HttpPhase, status?: number) {
    // Node's happy-eyeballs AggregateError has an empty message and code of its own: the first attempt's say why.
    const first = (err as { errors?: unknown[] }).errors?.[0] as NodeJS.ErrnoException | undefined;
    super(err.message || first?.message || err.name, status, { cause: err });
    this.code = err.code ?? first?.code ?? 'HTTP_SOCKET';
    this.phase = phase;
  }
}

/** Shaped like Node's own AbortError (name and code), so callers test one thing whoever aborted. */
export class RequestAbortedError extends HttpTransportError {
  readonly code = 'ABORT_ERR';
  override readonly name = 'AbortError';
  constructor(reason?: unknown) {
    super('The operation was aborted', undefined, reason === undefined ? undefined : { cause: reason });
  }
}

/** Node refused to send the request: a header value HTTP cannot carry (CR/LF, characters above U+00FF). */
export class InvalidRequestError extends HttpTransportError {
  readonly code = 'HTTP_INVALID_REQUEST';
  override readonly name = 'InvalidRequestError';
  constructor(err: Error) {
    // Node's text names the header, never its value (which may be a token).
    super(err.message, undefined, { cause: err });
  }
}
