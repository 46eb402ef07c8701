import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerOptions, ServerResponse } from 'node:http';
import type { Server as TlsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { AgentError } from '../../errors.js';
import { redact, redactDeep, type Secret } from '../../secret.js';
import { http, https } from '../../util/node-http.js';
import { limitConnectionsPerAddress } from './connection-limit.js';
import type { Logger } from '../logger.js';
import type { DeploymentView, StatusSource } from './status-model.js';

export interface StatusServerOptions {
  /** 'host:port', '[v6-host]:port'. */
  listen: string;
  token: Secret;
  source: StatusSource;
  metrics: { render(): string };
  tls?: { certFile: string; keyFile: string };
  logger: Logger;
}

export interface StatusServer {
  start(): Promise<{ address: string; port: number }>;
  stop(): Promise<void>;
}

const LOGS_MAX = 1000;
const LOGS_TIMEOUT_MS = 5_000;
/** A request's headers must be in within this of its connection opening (or its TLS handshake). */
const HEADERS_TIMEOUT_MS = 5_000;
const KEEP_ALIVE_MS = 5_000;

const BASE_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'",
} as const;

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(listen) ?? /^([^:[\]\s]+):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new AgentError('SKP_ERR_CONFIG_INVALID', `status listen address ${JSON.stringify(listen)} must be host:port or [ipv6]:port`, {
      field: 'statusListen',
    });
  }
  return { host: m[1]!, port };
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

type Route =
  | { kind: 'healthz' }
  | { kind: 'status' }
  | { kind: 'deployments' }
  | { kind: 'deployment'; id: string }
  | { kind: 'metrics' }
  | { kind: 'usage' };

function route(path: string): Route | undefined {
  if (path === '/healthz') return { kind: 'healthz' };
  if (path === '/v1/status') return { kind: 'status' };
  if (path === '/v1/deployments') return { kind: 'deployments' };
  if (path === '/metrics') return { kind: 'metrics' };
  if (path === '/v1/usage') return { kind: 'usage' };
  const m = /^\/v1\/deployments\/([^/]+)$/.exec(path);
  if (m) {
    try {
      return { kind: 'deployment', id: decodeURIComponent(m[1]!) };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function createStatusServer(opts: StatusServerOptions): StatusServer {
  const { source, logger } = opts;
  const { host, port } = parseListen(opts.listen);
  const tokenDigest = sha256(opts.token.reveal());
  let server: Server | undefined;

  const secrets = (): string[] => {
    let extra: string[] = [];
    try {
      extra = source.secretValues?.() ?? [];
    } catch {
      // A failing source must not turn into an unredacted body: the worker token is still redacted.
    }
    return [opts.token.reveal(), ...extra];
  };

  const send = (res: ServerResponse, status: number, body: string, contentType: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, { ...BASE_HEADERS, 'content-type': contentType, 'content-length': Buffer.byteLength(body), ...extra });
    res.end(body); // node drops the body itself for HEAD
  };

  const sendJson = (res: ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}) => {
    const known = secrets();
    // Inside values first, so the JSON stays valid; the pass over the text is the last defence.
    send(res, status, redact(JSON.stringify(redactDeep(value, known)), known), 'application/json; charset=utf-8', extra);
  };

  const authorized = (req: IncomingMessage): boolean => {
    const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
    // Digests have a fixed length, so neither the comparison time nor an early length check reveals anything about the token.
    const same = timingSafeEqual(sha256(m?.[1] ?? ''), tokenDigest);
    return same && m !== null;
  };

  const findDeployment = (id: string): DeploymentView => {
    const d = source.deployments().find((x) => x.id === id);
    if (!d) throw new HttpError(404, 'deployment not found');
    return d;
  };

  const logsParam = (url: URL): number | undefined => {
    const all = url.searchParams.getAll('logs');
    if (all.length === 0) return undefined;
    const raw = all[0]!;
    if (all.length > 1 || !/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > LOGS_MAX) {
      throw new HttpError(400, `invalid query parameter 'logs': must be an integer from 1 to ${LOGS_MAX}`);
    }
    return Number(raw);
  };

  const readLogs = async (id: string, lines: number): Promise<string[]> => {
    if (!source.deploymentLogs) throw new HttpError(501, 'logs are not available on this agent');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HttpError(504, 'reading logs timed out')), LOGS_TIMEOUT_MS);
    });
    try {
      return await Promise.race([source.deploymentLogs(id, lines), deadline]);
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw new HttpError(502, `could not read logs: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, path: string, url: URL | undefined) => {
    const method = req.method ?? '';
    // These routes take no body; refuse one before anything reads it, and close so node need not drain it.
    const length = Number(req.headers['content-length'] ?? 0); // NaN (garbage) counts as a body too
    if (req.headers['transfer-encoding'] !== undefined || length !== 0) {
      return sendJson(res, 413, { error: 'request body not allowed' }, { connection: 'close' });
    }
    if (!url) return sendJson(res, 400, { error: 'bad request target' });
    const r = route(path);
    if (r?.kind !== 'healthz' && !authorized(req)) {
      // One constant response for a missing and a wrong token, and for unknown routes too: nothing to probe.
      return sendJson(res, 401, { error: 'unauthorized' }, { 'www-authenticate': 'Bearer realm="skypanel-agent"' });
    }
    if (!r) return sendJson(res, 404, { error: 'not found' });
    if (method !== 'GET' && method !== 'HEAD') return sendJson(res, 405, { error: 'method not allowed' }, { allow: 'GET, HEAD' });

    switch (r.kind) {
      case 'healthz': {
        const stalled = source.loopStalledForSec();
        if (stalled >= source.wedgedAfterSec()) {
          return sendJson(res, 503, { status: 'wedged', reason: `no heartbeat attempt or reconcile pass for ${Math.round(stalled)} s` });
        }
        const degraded = source.degradedReason?.() ?? null;
        if (degraded !== null) return sendJson(res, 200, { status: 'degraded', reason: degraded });
        // Alive, but silent toward the panel until `until`: not "ok", since the panel may be marking this worker offline meanwhile.
        const wait = source.controlPlaneWait?.() ?? null;
        return sendJson(res, 200, wait ? { status: 'waiting', ...wait } : { status: 'ok' });
      }
      case 'status':
        return sendJson(res, 200, source.status());
      case 'deployments':
        return sendJson(res, 200, { deployments: source.deployments() });
      case 'deployment': {
        const lines = logsParam(url);
        const d = findDeployment(r.id);
        if (lines === undefined) return sendJson(res, 200, d);
        return sendJson(res, 200, { ...d, logs: await readLogs(r.id, lines) });
      }
      case 'usage':
        if (!source.usage) throw new HttpError(501, 'usage metering is not enabled on this agent');
        return sendJson(res, 200, source.usage());
      case 'metrics':
        // Not redacted: the registry only holds numbers and bounded, agent-chosen label values.
        return send(res, 200, opts.metrics.render(), 'text/plain; version=0.0.4; charset=utf-8');
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    let url: URL | undefined;
    try {
      url = new URL(req.url ?? '', 'http://status.invalid');
    } catch {
      url = undefined;
    }
    // Absolute-form targets ("GET http://x/...") are not ours to serve.
    if (!req.url?.startsWith('/')) url = undefined;
    const path = url?.pathname ?? '-';
    res.on('close', () => {
      // statusCode defaults to 200 before anything is sent; a client that left early must not look served.
      const status = res.headersSent ? res.statusCode : 'aborted';
      logger.debug(
        { method: req.method, path: path.slice(0, 200), status, ms: Math.round(performance.now() - started) },
        'status api request',
      );
    });
    handle(req, res, path, url).catch((err: unknown) => {
      if (res.headersSent) return void res.destroy();
      if (err instanceof HttpError) return sendJson(res, err.status, { error: err.message });
      logger.warn({ path, err: (err as Error).message }, 'status api handler failed');
      sendJson(res, 500, { error: 'internal error' });
    });
  };

  const onClientError = (err: NodeJS.ErrnoException, socket: Duplex) => {
    logger.debug({ code: err.code }, 'status api dropped a malformed or slow request');
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    // Same as node's default, which a listener replaces: answer only if nothing was sent on this socket yet.
    if (err.code !== 'ECONNRESET' && socket.writable && (socket as Duplex & { bytesWritten?: number }).bytesWritten === 0) {
      socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  };

  return {
    async start() {
      if (server) throw new Error('status server already started');
      const limits: ServerOptions = {
        maxHeaderSize: 8 * 1024,
        // Node enforces these two from one server-wide interval that ticks from listen to close,
        // client or not: at the 500 ms a slowloris bound needs, 7,200 wake-ups an hour, most of the
        // idle agent's CPU over a bare node (#7). Off here; trackHeaderDeadlines bounds each
        // connection with its own timer instead, so an idle status API costs nothing.
        headersTimeout: 0,
        requestTimeout: 0,
        connectionsCheckingInterval: 3_600_000,
        keepAliveTimeout: KEEP_ALIVE_MS,
      };
      if (opts.tls) {
        const [cert, key] = await Promise.all([readFile(opts.tls.certFile), readFile(opts.tls.keyFile)]);
        server = https().createServer({ ...limits, cert, key, minVersion: 'TLSv1.2', handshakeTimeout: HEADERS_TIMEOUT_MS }, onRequest);
      } else {
        server = http.createServer(limits, onRequest);
      }
      const s = server;
      trackHeaderDeadlines(s, opts.tls ? 'secureConnection' : 'connection', onClientError);
      s.maxRequestsPerSocket = 100;
      s.maxConnections = 64;
      // One client cannot take all 64: slow sockets from one address would shut the panel out.
      limitConnectionsPerAddress(s, undefined, (client) =>
        logger.debug({ client }, 'status api refused a connection: too many from one address'),
      );
      // Idle bound for a socket whose request was read but whose client stopped reading the answer.
      s.setTimeout(30_000);
      s.on('clientError', onClientError);
      await new Promise<void>((resolve, reject) => {
        const fail = (err: NodeJS.ErrnoException) => {
          server = undefined;
          reject(new Error(`status API cannot listen on ${opts.listen}: ${err.code ?? err.message}`, { cause: err }));
        };
        s.once('error', fail);
        s.listen({ host, port }, () => {
          s.off('error', fail);
          s.on('error', (err) => logger.error({ err: err.message }, 'status api server error'));
          resolve();
        });
      });
      const addr = s.address();
      if (addr === null || typeof addr === 'string') throw new Error('status API has no TCP address');
      logger.info({ address: addr.address, port: addr.port, tls: opts.tls !== undefined }, 'status api listening');
      return { address: addr.address, port: addr.port };
    },

    async stop() {
      const s = server;
      server = undefined;
      if (!s) return;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    },
  };
}

/**
 * Every connection must deliver each request's headers in time: HEADERS_TIMEOUT_MS from opening,
 * and after an answer, the keep-alive window plus HEADERS_TIMEOUT_MS (node's keep-alive timer
 * closes a silent socket; this one closes a socket that trickles bytes to stay open). The status
 * routes take no body, so complete headers are a complete request. A timer exists only while a
 * connection waits for a request.
 */
function trackHeaderDeadlines(
  server: Server | TlsServer,
  event: 'connection' | 'secureConnection',
  expire: (err: NodeJS.ErrnoException, socket: Duplex) => void,
): void {
  const waiting = new WeakMap<Duplex, { timer?: NodeJS.Timeout; inFlight: number }>();
  const arm = (socket: Duplex, ms: number) => {
    const state = waiting.get(socket);
    if (!state || state.inFlight > 0 || socket.destroyed) return;
    clearTimeout(state.timer);
    state.timer = setTimeout(
      () => expire(Object.assign(new Error('request headers timed out'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), socket),
      ms,
    ).unref();
  };
  server.on(event, (socket: Duplex) => {
    waiting.set(socket, { inFlight: 0 });
    arm(socket, HEADERS_TIMEOUT_MS);
    socket.once('close', () => clearTimeout(waiting.get(socket)?.timer));
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const state = waiting.get(socket);
    if (!state) return;
    state.inFlight++;
    clearTimeout(state.timer);
    res.once('close', () => {
      state.inFlight--;
      arm(socket, KEEP_ALIVE_MS + HEADERS_TIMEOUT_MS);
    });
  });
}
