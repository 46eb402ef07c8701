import { etagMatches } from '../protocol/etag.js';
import { authorizeWorker, loadWorkerRows } from './auth.js';
import { batchedLoader, DEFAULT_MAX_WAIT_SEC, holdDesiredSet, holdMs, MAX_WAIT_CAP_SEC } from './blocking-query.js';
import { secretKey } from './crypto.js';
import type { Database } from './db.js';
import type { DesiredFeed } from './desired-feed.js';
import { loadDesiredSets } from './desired-set.js';
import { DEFAULT_HEALTH, validateHealthOptions, type HealthOptions } from './health.js';
import { failure, type PanelReply } from './reply.js';
import { handleStatusReport } from './status-reports.js';
import { DEFAULT_PRICES, handleUsage, type UsagePrices } from './usage.js';
import { handleHeartbeat } from './heartbeat.js';
import { DEFAULT_HEARTBEAT_BATCH, HeartbeatBatcher, type HeartbeatBatchOptions } from './heartbeat-batcher.js';
import { handleRegister } from './workers.js';

/**
 * The panel half of protocol calls 1–5 as a framework-free handler: a matched route and a parsed
 * body in, a PanelReply out. The node/Express adapter (http.ts) and the standalone server
 * (server.ts) are thin layers over this.
 */

/** pino-compatible, so SkyPanelV2 can pass its logger or console-like wrappers. */
export interface PanelLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface PanelOptions {
  db: Database;
  /** SkyPanelV2's JWT_SECRET: worker tokens are verified with it. */
  jwtSecret: string;
  /** SkyPanelV2's SSH_CRED_SECRET: container_secrets are decrypted with it (see crypto.ts for its fallback). */
  sshCredSecret?: string;
  health?: Partial<HealthOptions>;
  prices?: Partial<UsagePrices>;
  logger?: PanelLogger;
  /**
   * Change notifications (one LISTEN connection): with it, call 3 honours `?wait=N` and heartbeat
   * answers announce it. Without it (or while it is disconnected) agents poll as before.
   */
  feed?: DesiredFeed;
  /** The longest hold granted to `?wait=N`, in seconds (default 300, at most 600). */
  maxWaitSec?: number;
  /** Heartbeat write batching (default 200 beats / 5 ms; see heartbeat-batcher.ts). */
  heartbeatBatch?: Partial<HeartbeatBatchOptions>;
}

export type PanelRoute =
  | { kind: 'register' }
  | { kind: 'heartbeat'; id: string }
  | { kind: 'deployments'; id: string; head: boolean }
  | { kind: 'status'; id: string; deploymentId: string }
  | { kind: 'usage'; id: string };

// Express 4 matching: case-insensitive, one optional trailing slash.
const ROUTES: { method: 'GET' | 'POST'; re: RegExp; make: (p: string[], head: boolean) => PanelRoute }[] = [
  { method: 'POST', re: /^\/api\/workers\/register\/?$/i, make: () => ({ kind: 'register' }) },
  { method: 'POST', re: /^\/api\/workers\/([^/]+?)\/heartbeat\/?$/i, make: ([id]) => ({ kind: 'heartbeat', id: id! }) },
  { method: 'GET', re: /^\/api\/workers\/([^/]+?)\/deployments\/?$/i, make: ([id], head) => ({ kind: 'deployments', id: id!, head }) },
  {
    method: 'POST',
    re: /^\/api\/workers\/([^/]+?)\/deployments\/([^/]+?)\/status\/?$/i,
    make: ([id, d]) => ({ kind: 'status', id: id!, deploymentId: d! }),
  },
  { method: 'POST', re: /^\/api\/workers\/([^/]+?)\/usage\/?$/i, make: ([id]) => ({ kind: 'usage', id: id! }) },
];

/** The route a request names, or null when the panel does not own it (the caller's next handler does). */
export function matchPanelRoute(method: string | undefined, path: string): PanelRoute | null {
  const head = method === 'HEAD';
  const m = head ? 'GET' : method;
  for (const route of ROUTES) {
    if (route.method !== m) continue;
    const match = route.re.exec(path);
    if (match === null) continue;
    try {
      return route.make(
        match.slice(1).map((p) => decodeURIComponent(p)),
        head,
      );
    } catch {
      return null; // an undecodable parameter: not a worker route this panel serves
    }
  }
  return null;
}

export interface PanelRequest {
  authorization: string | undefined;
  ifNoneMatch: string | undefined;
  body: unknown;
  /** `?wait=N` of call 3, whole seconds. */
  waitSec?: number;
  /** Aborted when the client goes away (ends a held call 3). */
  signal?: AbortSignal;
}

export interface PanelHandler {
  handle(route: PanelRoute, req: PanelRequest): Promise<PanelReply>;
  readonly health: HealthOptions;
}

const INTERNAL = failure(500, 'INTERNAL_ERROR', 'Internal server error');

export function createPanelHandler(opts: PanelOptions): PanelHandler {
  if (typeof opts.jwtSecret !== 'string' || opts.jwtSecret.length === 0)
    throw new RangeError('jwtSecret is required (SkyPanelV2 JWT_SECRET)');
  const health: HealthOptions = { ...DEFAULT_HEALTH, ...opts.health };
  validateHealthOptions(health);
  const prices: UsagePrices = { ...DEFAULT_PRICES, ...opts.prices };
  for (const [name, v] of Object.entries(prices))
    if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`prices.${name} must be a number >= 0`);
  const key = secretKey({ sshCredSecret: opts.sshCredSecret, jwtSecret: opts.jwtSecret });
  const { db, logger, feed } = opts;
  const batcher = new HeartbeatBatcher(db, { ...DEFAULT_HEARTBEAT_BATCH, ...opts.heartbeatBatch });
  // Every database read a worker's call makes goes through a loader that batches one event-loop
  // turn: when a fleet comes back together, thousands of calls share a few queries.
  const lookup = batchedLoader((ids) => loadWorkerRows(db, ids));
  const loadMany = batchedLoader((ids) => loadDesiredSets(db, ids, key));
  /** A worker's set from the database; with a feed its ETag is remembered for the heartbeat's hint. */
  const loadSet = (workerId: string) => (feed ? feed.remember(workerId, () => loadMany(workerId)) : loadMany(workerId));
  const maxWaitSec = opts.maxWaitSec ?? DEFAULT_MAX_WAIT_SEC;
  if (!(Number.isInteger(maxWaitSec) && maxWaitSec >= 1 && maxWaitSec <= MAX_WAIT_CAP_SEC))
    throw new RangeError(`maxWaitSec must be a whole number of seconds in 1..${MAX_WAIT_CAP_SEC}`);

  async function serve(route: PanelRoute, req: PanelRequest): Promise<PanelReply> {
    if (route.kind === 'register') return handleRegister(db, req.authorization, req.body, opts.jwtSecret);
    if (route.kind === 'heartbeat') {
      const result = await handleHeartbeat({ lookup, batcher, jwtSecret: opts.jwtSecret, health }, route.id, req.authorization, req.body);
      if (result.written === undefined) return result.reply;
      const { workerId, status } = result.written;
      // The hint spares the agent its polls; the status carries an admin's drain to it.
      const etag = feed?.etagOf(workerId) ?? (await loadSet(workerId)).etag;
      // deploymentsWait announces the blocking query, only while changes actually reach this process.
      const data = { deploymentsEtag: etag, status, ...(feed?.listening === true ? { deploymentsWait: maxWaitSec } : {}) };
      return { ...result.reply, body: { success: true, message: 'Heartbeat received', data } };
    }
    const auth = await authorizeWorker(lookup, req.authorization, opts.jwtSecret, route.id);
    if (!auth.ok) return auth.reply;
    const workerId = auth.worker.id;
    switch (route.kind) {
      case 'deployments': {
        const hold = !route.head && req.waitSec !== undefined && req.waitSec > 0 && feed?.listening === true;
        const desired = hold
          ? await holdDesiredSet({
              feed,
              workerId,
              signal: req.signal,
              load: () => loadSet(workerId),
              holdMs: holdMs(req.waitSec!, maxWaitSec),
              unchanged: (set) => etagMatches(req.ifNoneMatch, set.etag),
            })
          : await loadSet(workerId);
        const headers = { ETag: desired.etag, 'Cache-Control': 'private, no-cache' };
        if (etagMatches(req.ifNoneMatch, desired.etag)) return { status: 304, headers };
        return { status: 200, headers, rawBody: route.head ? '' : desired.body };
      }
      case 'status':
        return handleStatusReport(db, workerId, route.deploymentId, req.body);
      case 'usage':
        return handleUsage(db, workerId, req.body, prices);
    }
  }

  return {
    health,
    async handle(route, req) {
      try {
        return await serve(route, req);
      } catch (err) {
        // The database's message may quote row data; it goes to the log, never to the caller.
        logger?.error(
          { route: route.kind, err: err instanceof Error ? { message: err.message, code: (err as { code?: unknown }).code } : String(err) },
          'panel route failed',
        );
        return INTERNAL;
      }
    },
  };
}
