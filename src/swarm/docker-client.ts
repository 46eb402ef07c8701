import { HttpPool } from '../http/pool.js';
import { HttpTimeoutError, ResponseTooLargeError } from '../http/errors.js';

/**
 * The Docker Engine API client: HTTP/1.1 over node:http, on the unix socket or (remote-manager
 * mode) TCP with TLS. Replaces dockerode, whose import alone cost ~23 MiB of RSS (grpc-js and
 * protobufjs, for features this agent never uses). Everything goes through one function,
 * `request`, so call counting and error shapes live in one place; timeouts, the size cap and the
 * connection pool are the HTTP core's (src/http).
 */

import { DEFAULT_DOCKER_SOCKET, defaultSocketPath } from '../util/docker-host.js';

export { DEFAULT_DOCKER_SOCKET, defaultSocketPath };
export const DEFAULT_DOCKER_TIMEOUT_MS = 10_000;
/** Buffered answers larger than this are refused: a broken daemon must not grow the heap without bound. */
export const MAX_ENGINE_RESPONSE_BYTES = 64 * 1024 * 1024;
// Longer than the gap between the agent's routine calls (`GET /info` every 3 heartbeat intervals: 30 s
// at 10 s beats, 90 s at the default 30 s), so they share one kept connection instead of opening and
// closing one each (≈ 0.7 ms CPU a call under --jitless). dockerd keeps idle connections without a
// timeout; the one socket held open costs a timer, refreshed per call.
const IDLE_SOCKET_MS = 100_000;
// The usage sampler asks for the stats of every container at once; dockerd answers those on its
// shared collector tick, so they are worth running side by side, but not unboundedly.
const DEFAULT_MAX_SOCKETS = 32;

export interface DockerClientOptions {
  /** Unix socket of the Engine API; ignored when `host` is set. */
  socketPath?: string;
  /** TCP host (name, address or `tcp://host:port`); TLS when any of ca/cert/key is given. */
  host?: string;
  port?: number;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Bound on every Engine API call; default 10 s. */
  timeoutMs?: number;
  /** Requests in flight at once; further ones wait for a socket. Default 32. */
  maxSockets?: number;
  /** Rewords a transport failure (never an HTTP answer), given the time the call took. */
  explainTransportError?: (err: Error, elapsedMs: number) => Error;
}

export type QueryValue = string | number | boolean | undefined | Record<string, unknown>;

export interface EngineRequest {
  method: 'GET' | 'POST' | 'DELETE';
  /** Without the API version prefix, e.g. `/services`. */
  path: string;
  /** Objects (filters) are sent as JSON, as the Engine expects; undefined values are left out. */
  query?: Record<string, QueryValue>;
  /**
   * Sent as JSON, never folded into the query (dockerode did that for some routes): the URL is what
   * proxies and dockerd's debug log record, and a body may hold a secret's data or a whole spec.
   */
  body?: unknown;
  /** Sent as X-Registry-Auth, never in the URL or an error. */
  registryAuth?: { serveraddress: string; username: string; password: string };
  /** Resolve with the response stream on 2xx instead of a parsed body. */
  stream?: boolean;
  /**
   * With `stream`: once the headers are in, no inactivity bound (an event stream is silent for as
   * long as nothing happens). The connect and the headers stay bounded; over TCP, keepalive probes
   * notice a peer that vanished.
   */
  openEnded?: boolean;
  signal?: AbortSignal;
}

/** A non-2xx answer. `message` and `json.message` carry the Engine's own text. */
export class EngineError extends Error {
  readonly statusCode: number;
  /** The parsed JSON body (`{"message": ...}`), when the Engine sent JSON. */
  readonly json: unknown;

  constructor(statusCode: number, json: unknown, text: string) {
    super(`HTTP ${statusCode}: ${text}`);
    this.name = 'EngineError';
    this.statusCode = statusCode;
    this.json = json;
  }
}

/** A transport-level failure with a Node-style `code` (ETIMEDOUT, EBADRESPONSE, ...). */
function codedError(code: string, message: string): NodeJS.ErrnoException {
  const err = new Error(message) as NodeJS.ErrnoException;
  err.code = code;
  return err;
}

function queryString(query: Record<string, QueryValue> | undefined): string {
  let out = '';
  if (!query) return out;
  for (const key of Object.keys(query)) {
    const v = query[key];
    if (v === undefined) continue;
    out += `${out ? '&' : '?'}${encodeURIComponent(key)}=${encodeURIComponent(typeof v === 'object' ? JSON.stringify(v) : String(v))}`;
  }
  return out;
}

/**
 * dockerd decodes X-Registry-Auth with Go's base64.URLEncoding, which requires the `=` padding that
 * Node's 'base64url' leaves out; the docker CLI and docker-modem send it padded too.
 */
export function registryAuthHeader(auth: NonNullable<EngineRequest['registryAuth']>): string {
  return Buffer.from(JSON.stringify(auth)).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}

const isJson = (contentType: string | undefined) => contentType !== undefined && /^application\/json\b/i.test(contentType);

export type CallListener = (method: string, path: string) => void;

export class EngineClient {
  /** Where it points, for messages: `unix:///var/run/docker.sock` or `https://host:2376`. */
  readonly endpoint: string;
  /** Inactivity bound of every call: no byte from the Engine for this long fails it. */
  readonly timeoutMs: number;
  readonly #pool: HttpPool;
  readonly #explain: DockerClientOptions['explainTransportError'];
  #listeners: Set<CallListener> | undefined;

  constructor(opts: DockerClientOptions = {}) {
    const timeout = opts.timeoutMs ?? DEFAULT_DOCKER_TIMEOUT_MS;
    if (!(timeout > 0) || !Number.isFinite(timeout)) throw new RangeError(`timeoutMs must be a positive number, got ${timeout}`);
    this.timeoutMs = timeout;
    this.#explain = opts.explainTransportError;
    // dockerd sends no Keep-Alive hint and never closes an idle connection: no Connection: close on sparse calls.
    const pool = { keepAlive: true, maxSockets: opts.maxSockets ?? DEFAULT_MAX_SOCKETS, maxFreeSockets: 4, idleSocketMs: IDLE_SOCKET_MS };
    if (opts.host) {
      let host = opts.host;
      let port = opts.port;
      if (host.includes('://')) {
        const u = new URL(host);
        host = u.hostname.replace(/^\[|\]$/g, '');
        port ??= u.port ? Number(u.port) : undefined;
      }
      const tls = Boolean(opts.ca || opts.cert || opts.key);
      port ??= tls ? 2376 : 2375;
      this.endpoint = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
      // Server verification stays on (rejectUnauthorized defaults to true): the CA given is the only trust root.
      this.#pool = new HttpPool({ tls, host, port }, { ...pool, tls: { ca: opts.ca, cert: opts.cert, key: opts.key } });
    } else {
      // DOCKER_HOST and friends are deliberately not read here: a client configured for a socket talks to that socket.
      const socketPath = opts.socketPath ?? defaultSocketPath();
      this.endpoint = `unix://${socketPath}`;
      this.#pool = new HttpPool({ socketPath }, pool);
    }
  }

  /** Calls `fn` with `METHOD /path` (no query) before every request; returns the way to stop. */
  onCall(fn: CallListener): () => void {
    (this.#listeners ??= new Set()).add(fn);
    return () => void this.#listeners?.delete(fn);
  }

  /** Closes the pooled sockets; calls in flight fail. */
  close(): void {
    this.#pool.close();
  }

  /**
   * One Engine API call. Resolves with the parsed JSON for application/json answers, undefined for
   * empty ones (204 included), the raw bytes otherwise, or the response stream when `stream` is
   * set. Rejects with EngineError for a non-2xx answer, or a transport error carrying `code`:
   * ETIMEDOUT (no byte for timeoutMs), ETOOLARGE, EBADRESPONSE, ABORT_ERR (name AbortError) or the
   * socket's own (ENOENT, ECONNREFUSED, ...). The path is sent without an API version prefix, as
   * dockerode did: the Engine serves its own newest version, and the agent's requests are valid
   * from API 1.41 on.
   */
  async request<T>(req: EngineRequest): Promise<T> {
    if (this.#listeners) for (const fn of this.#listeners) fn(req.method, req.path);
    const headers: Record<string, string> = {};
    let payload: string | undefined;
    if (req.body !== undefined) {
      payload = JSON.stringify(req.body);
      headers['content-type'] = 'application/json';
    }
    if (req.registryAuth) headers['x-registry-auth'] = registryAuthHeader(req.registryAuth);
    const started = this.#explain ? Date.now() : 0;
    const t = this.timeoutMs;
    let res;
    try {
      // Every phase bounded by inactivity, as with dockerode: no hard deadline here, engine.ts adds one where needed.
      res = await this.#pool.send({
        method: req.method,
        path: req.path + queryString(req.query),
        headers,
        body: payload,
        timeouts: { connectMs: t, headersMs: t, bodyMs: t },
        maxResponseBytes: MAX_ENGINE_RESPONSE_BYTES,
        streamIf: req.stream ? (status) => status >= 200 && status < 300 : undefined,
        // An event stream is silent for as long as nothing happens; over TCP, keepalive probes notice a peer that vanished.
        streamIdleMs: req.openEnded ? 0 : t,
        signal: req.signal,
      });
    } catch (err) {
      const e = this.#engineTransportError(err as Error);
      throw this.#explain ? this.#explain(e, Date.now() - started) : e;
    }
    if (res.streamed) return res.stream as T;
    const { status, body } = res;
    let json: unknown;
    if (body.length > 0 && isJson(res.headers['content-type'])) {
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        if (status < 300) {
          const e = codedError('EBADRESPONSE', `${req.method} ${req.path}: the Engine sent malformed JSON`);
          throw this.#explain ? this.#explain(e, Date.now() - started) : e;
        }
      }
    }
    if (status >= 200 && status < 300) return (status === 204 || body.length === 0 ? undefined : json !== undefined ? json : body) as T;
    const m = (json as { message?: unknown } | undefined)?.message;
    const text = typeof m === 'string' ? m : body.length > 0 && json === undefined ? body.toString('utf8', 0, 1000) : res.statusMessage;
    throw new EngineError(status, json, text.trim());
  }

  /**
   * The core's typed errors in the Node-style codes this client has always given (engine.ts, doctor and the
   * manager client read them): every phase bound is "sent nothing for timeoutMs".
   */
  #engineTransportError(err: Error): Error {
    if (err instanceof HttpTimeoutError) return codedError('ETIMEDOUT', `Docker Engine sent nothing for ${this.timeoutMs} ms`);
    if (err instanceof ResponseTooLargeError)
      return codedError('ETOOLARGE', `the Engine's answer exceeds ${MAX_ENGINE_RESPONSE_BYTES} bytes`);
    return err;
  }
}

/**
 * A client whose every request is bounded in time. The bound is an inactivity timeout on the
 * socket, so long-lived streams (events, logs) that go quiet for longer than `timeoutMs` are cut
 * too: create a separate client for those.
 */
export function createDockerClient(opts: DockerClientOptions = {}): EngineClient {
  return new EngineClient(opts);
}

/** Where a client points, for error messages: `unix:///var/run/docker.sock` or `https://host:2376`. */
export function describeDockerEndpoint(docker: EngineClient): string {
  return docker.endpoint;
}

/** The per-request bound a client was built with. */
export function dockerTimeoutMs(docker: EngineClient): number {
  return docker.timeoutMs;
}
