import type { IncomingMessage, ServerResponse } from 'node:http';
import { readJsonBody, requestPath } from '../skypanel/express.js';
import { parseWait } from './blocking-query.js';
import { createPanelHandler, matchPanelRoute, type PanelHandler, type PanelOptions } from './handler.js';
import type { PanelReply } from './reply.js';

/**
 * The panel as node/Express middleware: `(req, res, next)`. It answers the five worker routes and
 * calls `next()` for everything else, so SkyPanelV2's api/app.ts can mount it ahead of its own
 * worker routes (`app.use(panel)` or `app.use('/api/workers', panel)`: it routes on
 * `req.originalUrl` when Express set it). A body express.json() already parsed is used as is.
 */

/** Status reports carry at most 64 KiB of logs; usage batches at most 80 kB. */
export const PANEL_BODY_LIMIT_BYTES = 1024 * 1024;

export type NextFunction = (err?: unknown) => void;

export interface PanelMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: NextFunction): void;
  readonly handler: PanelHandler;
}

type MaybeExpressRequest = IncomingMessage & { originalUrl?: string; body?: unknown };

function writeReply(res: ServerResponse, reply: PanelReply): void {
  if (res.headersSent || res.destroyed) return;
  res.statusCode = reply.status;
  for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value);
  if (reply.status === 304) {
    res.end();
    return;
  }
  const text = reply.rawBody ?? JSON.stringify(reply.body ?? {});
  const body = Buffer.from(text, 'utf8');
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', body.length);
  res.end(body);
}

function waitParam(url: string | undefined): string | null {
  const q = url?.indexOf('?') ?? -1;
  return q === -1 ? null : new URLSearchParams(url!.slice(q + 1)).get('wait');
}

function bodyError(res: ServerResponse, status: number, message: string): void {
  writeReply(res, { status, body: { success: false, error: { code: 'VALIDATION_ERROR', message } } });
}

export function createPanelMiddleware(opts: PanelOptions): PanelMiddleware {
  const handler = createPanelHandler(opts);
  const middleware = (req: MaybeExpressRequest, res: ServerResponse, next: NextFunction): void => {
    const route = matchPanelRoute(req.method, requestPath(req.originalUrl ?? req.url));
    if (route === null) {
      next();
      return;
    }
    void (async () => {
      let body: unknown = req.body;
      if (body === undefined && req.method !== 'GET' && req.method !== 'HEAD') {
        const read = await readJsonBody(req, PANEL_BODY_LIMIT_BYTES);
        if (read.kind === 'aborted') return;
        if (read.kind === 'too-large') return bodyError(res, 413, 'request body is larger than 1 MiB');
        if (read.kind === 'malformed') return bodyError(res, 400, 'request body is not valid JSON');
        if (read.kind === 'unsupported') return bodyError(res, 415, 'request body must be UTF-8 JSON without content-encoding');
        body = read.kind === 'json' ? read.value : {};
      }
      const ifNoneMatch = req.headers['if-none-match'];
      const wait = route.kind === 'deployments' ? parseWait(waitParam(req.originalUrl ?? req.url)) : null;
      if (wait === 'invalid') return bodyError(res, 400, 'wait must be a whole number of seconds');
      // A held call 3 ends when its client leaves, so a closed connection holds nothing.
      const left = new AbortController();
      const onClose = (): void => left.abort();
      res.once('close', onClose);
      const reply = await handler.handle(route, {
        authorization: req.headers.authorization,
        ifNoneMatch: typeof ifNoneMatch === 'string' ? ifNoneMatch : undefined,
        body: body ?? {},
        ...(wait !== null ? { waitSec: wait } : {}),
        signal: left.signal,
      });
      res.off('close', onClose);
      writeReply(res, reply);
    })().catch(next);
  };
  return Object.assign(middleware, { handler });
}
