import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Secret } from '../../secret.js';
import { http } from '../../util/node-http.js';
import type { Logger } from '../logger.js';
import { parseListen } from './status-server.js';

/**
 * `/metrics` for Prometheus on a listener of its own (`metricsListen`, loopback by default), so a
 * scraper never holds the worker token: that token also fetches deployments with their secret
 * values. Numbers only, nothing secret; `metricsToken` adds a bearer check of its own for a
 * listener on a routable address.
 */
export interface MetricsServerOptions {
  listen: string;
  token?: Secret;
  render: () => string;
  logger: Logger;
}

export interface MetricsServer {
  start(): Promise<{ address: string; port: number }>;
  stop(): Promise<void>;
}

/** A connection lives at most this long: Prometheus reconnects between scrapes, a trickling client is cut. */
const CONNECTION_DEADLINE_MS = 30_000;
const MAX_CONNECTIONS = 16;

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export function createMetricsServer(opts: MetricsServerOptions): MetricsServer {
  const { host, port } = parseListen(opts.listen);
  const digest = opts.token ? sha256(opts.token.reveal()) : undefined;
  let server: Server | undefined;

  const answer = (res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
      ...extra,
    });
    res.end(body);
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (digest) {
      const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
      if (!timingSafeEqual(sha256(m?.[1] ?? ''), digest) || !m)
        return answer(res, 401, 'unauthorized\n', { 'www-authenticate': 'Bearer realm="skypanel-agent metrics"' });
    }
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return answer(res, 404, 'not found: GET /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return answer(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
    let text: string;
    try {
      text = opts.render();
    } catch (err) {
      opts.logger.warn({ err: (err as Error).message }, 'metrics render failed');
      return answer(res, 500, 'internal error\n');
    }
    res.writeHead(200, {
      'content-type': 'text/plain; version=0.0.4; charset=utf-8',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };

  return {
    async start() {
      if (server) throw new Error('metrics server already started');
      // Node's own header and request timeouts run one server-wide interval timer for as long as
      // the server exists; the per-connection deadline below costs a timer only while a client is connected.
      const s = http.createServer(
        { maxHeaderSize: 8 * 1024, headersTimeout: 0, requestTimeout: 0, connectionsCheckingInterval: 3_600_000, keepAliveTimeout: 5_000 },
        onRequest,
      );
      s.maxConnections = MAX_CONNECTIONS;
      s.on('connection', (socket: Socket) => {
        const deadline = setTimeout(() => socket.destroy(), CONNECTION_DEADLINE_MS).unref();
        socket.once('close', () => clearTimeout(deadline));
      });
      s.on('clientError', (_err, socket) => socket.destroy());
      await new Promise<void>((resolve, reject) => {
        s.once('error', (err: NodeJS.ErrnoException) =>
          reject(new Error(`metrics listener cannot listen on ${opts.listen}: ${err.code ?? err.message}`, { cause: err })),
        );
        s.listen({ host, port }, () => {
          s.removeAllListeners('error');
          s.on('error', (err) => opts.logger.error({ err: err.message }, 'metrics server error'));
          resolve();
        });
      });
      server = s;
      const addr = s.address();
      if (addr === null || typeof addr === 'string') throw new Error('metrics listener has no TCP address');
      opts.logger.info({ address: addr.address, port: addr.port, token: digest !== undefined }, 'metrics listening');
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
 * The agent's metrics listener as configured: undefined when `metricsListen` is off. Metrics are a
 * side channel: a port that cannot be bound is logged, and heartbeats and deployments carry on.
 */
export async function startMetricsListener(
  config: { metricsListen: string; metricsToken?: string },
  render: () => string,
  logger: Logger,
): Promise<{ server: MetricsServer; port: number } | undefined> {
  if (config.metricsListen === 'off') return undefined;
  const token = config.metricsToken === undefined ? undefined : new Secret(config.metricsToken);
  const server = createMetricsServer({ listen: config.metricsListen, token, render, logger });
  try {
    return { server, port: (await server.start()).port };
  } catch (err) {
    logger.error({ err: (err as Error).message }, 'metrics listener not started; /metrics stays on the status API');
    return undefined;
  }
}
