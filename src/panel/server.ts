import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sendJson } from '../skypanel/express.js';
import type { Database } from './db.js';
import { DesiredFeed, type ListenConnector } from './desired-feed.js';
import type { PanelLogger, PanelOptions } from './handler.js';
import { HealthMonitor } from './health-monitor.js';
import { createPanelMiddleware } from './http.js';
import { applyPanelMigration } from './schema/panel-migration.js';

/**
 * The standalone panel: the middleware on its own HTTP server, the health monitor beside it, and
 * the additive migration applied first. Operators route /api/workers/* of their SkyPanelV2 to it.
 * Anything else gets SkyPanelV2's 404 body, so the agent's "extension missing" logic reads it right.
 */

export interface PanelServerOptions extends PanelOptions {
  host?: string;
  port?: number;
  /** Apply the additive migration at start (default true). */
  migrate?: boolean;
  /** Run the health monitor (default true). */
  healthMonitor?: boolean;
  /**
   * Opens the LISTEN connection for the blocking desired-set query, e.g.
   * `() => new pg.Client({ connectionString })`. Without it the panel answers call 3 at once.
   */
  listen?: ListenConnector;
}

/**
 * The accept queue asked of the kernel (capped by net.core.somaxconn). Node's default, 511, overflows
 * when a fleet's connections arrive together (every heartbeat is a new connection once the 5 s
 * keep-alive ran out), and a dropped SYN costs that agent a one-second retransmit or more.
 */
export const LISTEN_BACKLOG = 4096;

/** How long close() lets released answers reach their clients before it cuts connections. */
const CLOSE_GRACE_MS = 1000;

export interface PanelServer {
  readonly url: string;
  readonly server: Server;
  readonly monitor: HealthMonitor | undefined;
  readonly feed: DesiredFeed | undefined;
  close(): Promise<void>;
}

export async function startPanelServer(opts: PanelServerOptions): Promise<PanelServer> {
  const db: Database = opts.db;
  if (opts.migrate !== false) await applyPanelMigration(db);
  const feed = opts.feed ?? (opts.listen === undefined ? undefined : new DesiredFeed(opts.listen, opts.logger));
  if (opts.feed === undefined) await feed?.start();
  const middleware = createPanelMiddleware({ ...opts, feed });
  const logger: PanelLogger | undefined = opts.logger;
  const server = createServer({ keepAliveTimeout: 5000 }, (req, res) => {
    middleware(req, res, (err?: unknown) => {
      if (err !== undefined) {
        logger?.error({ err: err instanceof Error ? err.message : String(err) }, 'panel request failed');
        sendJson(res, 500, { success: false, error: { code: 'INTERNAL_ERROR', message: 'Internal server error' } });
        return;
      }
      sendJson(res, 404, { success: false, error: 'API not found' });
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1', backlog: LISTEN_BACKLOG }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const monitor = opts.healthMonitor === false ? undefined : new HealthMonitor(db, middleware.handler.health, logger);
  monitor?.start();
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    server,
    monitor,
    feed,
    async close() {
      // Held calls are answered first (304: re-check), so agents ask again rather than see a reset.
      if (opts.feed === undefined) await feed?.close();
      await monitor?.stop();
      await new Promise<void>((resolve) => {
        const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(cut);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}
