import {
  Agent,
  request as httpRequest,
  type ClientRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type RequestOptions,
} from 'node:http';
import { Agent as TlsAgent, request as httpsRequest } from 'node:https';

/**
 * The Docker Engine API client: HTTP/1.1 over node:http, on the unix socket or (remote-manager
 * mode) TCP with TLS. Replaces dockerode, whose import alone cost ~23 MiB of RSS (grpc-js and
 * protobufjs, for features this agent never uses). Everything goes through one function,
 * `request`, so timeouts, size limits, error shapes and call counting live in one place.
 */

import { DEFAULT_DOCKER_SOCKET, defaultSocketPath } from '../util/docker-host.js';

export { DEFAULT_DOCKER_SOCKET, defaultSocketPath };
export const DEFAULT_DOCKER_TIMEOUT_MS = 10_000;
/** Buffered answers larger than this are refused: a broken daemon must not grow the heap without bound. */
export const MAX_ENGINE_RESPONSE_BYTES = 64 * 1024 * 1024;
// Longer than the gap between the agent's routine calls (`GET /info` every 2.5 heartbeats: 25 s at
// 10 s beats, 75 s at the default 30 s), so they share one kept connection instead of opening and
// closing one each (≈ 0.7 ms CPU a call under --jitless). dockerd keeps idle connections without a
// timeout; the one socket held open costs a timer, refreshed per call.
const IDLE_SOCKET_MS = 90_000;
// The usage sampler asks for the stats of every container at once; dockerd answers those on its
// shared collector tick, so they are worth running side by side, but not unboundedly.
const DEFAULT_MAX_SOCKETS = 32;
const OPEN_ENDED_KEEPALIVE_MS = 30_000;

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
  /** Sent as JSON. */
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

/** Shaped like Node's own AbortError (name and code), so callers test one thing whoever aborted. */
function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason }) as NodeJS.ErrnoException;
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
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
  readonly #agent: Agent;
  readonly #send: typeof httpRequest;
  readonly #target: RequestOptions;
  readonly #explain: DockerClientOptions['explainTransportError'];
  #listeners: Set<CallListener> | undefined;

  constructor(opts: DockerClientOptions = {}) {
    const timeout = opts.timeoutMs ?? DEFAULT_DOCKER_TIMEOUT_MS;
    if (!(timeout > 0) || !Number.isFinite(timeout)) throw new RangeError(`timeoutMs must be a positive number, got ${timeout}`);
    this.timeoutMs = timeout;
    this.#explain = opts.explainTransportError;
    // 'lifo' hands out the most recently used socket, so surplus ones go idle and close.
    const pool = {
      keepAlive: true,
      maxSockets: opts.maxSockets ?? DEFAULT_MAX_SOCKETS,
      maxFreeSockets: 4,
      timeout: IDLE_SOCKET_MS,
      scheduling: 'lifo' as const,
    };
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
      this.#target = { host, port };
      this.endpoint = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
      if (tls) {
        // Server verification stays on (rejectUnauthorized defaults to true): the CA given is the only trust root.
        this.#agent = new TlsAgent({ ...pool, ca: opts.ca, cert: opts.cert, key: opts.key });
        this.#send = httpsRequest;
      } else {
        this.#agent = new Agent(pool);
        this.#send = httpRequest;
      }
    } else {
      // DOCKER_HOST and friends are deliberately not read here: a client configured for a socket talks to that socket.
      const socketPath = opts.socketPath ?? defaultSocketPath();
      this.#target = { socketPath };
      this.endpoint = `unix://${socketPath}`;
      this.#agent = new Agent(pool);
      this.#send = httpRequest;
    }
  }

  /** Calls `fn` with `METHOD /path` (no query) before every request; returns the way to stop. */
  onCall(fn: CallListener): () => void {
    (this.#listeners ??= new Set()).add(fn);
    return () => void this.#listeners?.delete(fn);
  }

  /** Closes the pooled sockets; calls in flight fail. */
  close(): void {
    this.#agent.destroy();
  }

  /**
   * One Engine API call. Resolves with the parsed JSON for application/json answers, undefined for
   * empty ones (204 included), the raw bytes otherwise, or the response stream when `stream` is
   * set. Rejects with EngineError for a non-2xx answer, or a transport error carrying `code`.
   * The path is sent without an API version prefix, as dockerode did: the Engine serves its own
   * newest version, and the agent's requests are valid from API 1.41 on.
   */
  request<T>(req: EngineRequest): Promise<T> {
    if (this.#listeners) for (const fn of this.#listeners) fn(req.method, req.path);
    const { signal } = req;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<T>((resolve, reject) => {
      const headers: OutgoingHttpHeaders = {};
      let payload: string | undefined;
      if (req.body !== undefined) {
        payload = JSON.stringify(req.body);
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(payload);
      }
      if (req.registryAuth) headers['x-registry-auth'] = registryAuthHeader(req.registryAuth);
      const started = this.#explain ? Date.now() : 0;
      let settled = false;
      let streaming: IncomingMessage | undefined;

      const done = () => {
        settled = true;
        signal?.removeEventListener('abort', onAbort);
      };
      const fail = (err: Error) => {
        if (settled) return;
        done();
        outgoing.destroy();
        reject(this.#explain && !(err instanceof EngineError) ? this.#explain(err, Date.now() - started) : err);
      };
      // A stream already handed over fails through itself, so its reader sees why.
      const cut = (err: Error) => (streaming ? streaming.destroy(err) : fail(err));
      const onAbort = () => cut(abortError(signal!));

      const outgoing: ClientRequest = this.#send({
        ...this.#target,
        agent: this.#agent,
        method: req.method,
        path: req.path + queryString(req.query),
        headers,
      });
      // Socket inactivity, as with dockerode: a stream that keeps delivering is not cut;
      // engine.ts adds a hard deadline where one is needed.
      outgoing.setTimeout(this.timeoutMs, () => cut(codedError('ETIMEDOUT', `Docker Engine sent nothing for ${this.timeoutMs} ms`)));
      outgoing.on('error', fail);
      signal?.addEventListener('abort', onAbort, { once: true });
      outgoing.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (req.stream && status >= 200 && status < 300) {
          settled = true;
          streaming = res;
          if (req.openEnded) {
            outgoing.setTimeout(0);
            res.socket.setKeepAlive(true, OPEN_ENDED_KEEPALIVE_MS);
          }
          res.once('close', () => signal?.removeEventListener('abort', onAbort));
          return resolve(res as T);
        }
        this.#readBody(res, fail, (body) => {
          if (settled) return;
          const type = res.headers['content-type'];
          let json: unknown;
          if (body.length > 0 && isJson(type)) {
            try {
              json = JSON.parse(body.toString('utf8'));
            } catch {
              if (status < 300) return fail(codedError('EBADRESPONSE', `${req.method} ${req.path}: the Engine sent malformed JSON`));
            }
          }
          done();
          if (status >= 200 && status < 300)
            return resolve((status === 204 || body.length === 0 ? undefined : json !== undefined ? json : body) as T);
          const m = (json as { message?: unknown } | undefined)?.message;
          const text =
            typeof m === 'string' ? m : body.length > 0 && json === undefined ? body.toString('utf8', 0, 1000) : (res.statusMessage ?? '');
          reject(new EngineError(status, json, text.trim()));
        });
      });
      outgoing.end(payload);
    });
  }

  #readBody(res: IncomingMessage, fail: (err: Error) => void, then: (body: Buffer) => void): void {
    const tooLarge = () => fail(codedError('ETOOLARGE', `the Engine's answer exceeds ${MAX_ENGINE_RESPONSE_BYTES} bytes`));
    if (Number(res.headers['content-length']) > MAX_ENGINE_RESPONSE_BYTES) return tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ENGINE_RESPONSE_BYTES) return tooLarge();
      chunks.push(chunk);
    });
    res.on('end', () => then(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    res.on('error', fail);
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
