import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createPanelMiddleware } from '../../src/panel/http.js';
import { runCli } from '../helpers/cli.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { call, heartbeatBody, JWT_SECRET, newWorkerToken, pick, REGISTER_BODY } from '../helpers/panel-fixtures.js';

/**
 * The middleware form inside an Express-like chain (SkyPanelV2's app.ts): it answers the worker
 * routes, passes everything else to next(), routes on originalUrl when mounted under a prefix, and
 * takes a body express.json() already parsed. And the standalone CLI's refusals.
 */

let pg: TestPostgres;
let server: Server;
let url: string;
const passedOn: string[] = [];

/** What app.use(json()); app.use('/api/workers', panel); app.use(rest) amounts to. */
function expressLike(panel: ReturnType<typeof createPanelMiddleware>) {
  return (req: IncomingMessage & { originalUrl?: string; body?: unknown }, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      req.body = text === '' ? {} : (JSON.parse(text) as unknown); // express.json() ran first
      const rest = (): void => {
        passedOn.push(`${req.method} ${req.originalUrl ?? req.url}`);
        res.statusCode = 418;
        res.end('SkyPanelV2 route');
      };
      const original = req.url ?? '/';
      if (original.toLowerCase().startsWith('/api/workers')) {
        // Express strips the mount path from req.url and keeps the full one in originalUrl.
        req.originalUrl = original;
        req.url = original.slice('/api/workers'.length) || '/';
        panel(req, res, (err?: unknown) => {
          req.url = original;
          if (err) {
            res.statusCode = 500;
            res.end();
          } else rest();
        });
      } else rest();
    });
  };
}

beforeAll(async () => {
  pg = await startPostgres();
  server = createServer(expressLike(createPanelMiddleware({ db: pg.db, jwtSecret: JWT_SECRET })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await pg?.stop();
});

test('worker routes are answered, the rest (admin routes included) goes to next()', async () => {
  const w = newWorkerToken();
  expect((await call(url, 'POST', '/api/workers/register', w.token, REGISTER_BODY)).status).toBe(201);
  const hb = await call(url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
  expect(hb.status).toBe(200);
  expect(pick(hb.body, 'data', 'status')).toBe('active');
  for (const [method, path] of [
    ['GET', '/api/workers'],
    ['POST', `/api/workers/${w.workerId}/drain`],
    ['GET', `/api/workers/${w.workerId}`],
    ['GET', '/api/health'],
  ] as const) {
    const res = await call(url, method, path, null);
    expect(res.status, path).toBe(418);
  }
  expect(passedOn).toContain(`POST /api/workers/${w.workerId}/drain`);
});

test('skypanel-agent panel refuses to start without JWT_SECRET, a database URL, or a usable --listen', async () => {
  const noSecret = await runCli(['panel', '--database-url', pg.url], { env: { JWT_SECRET: '' } });
  expect(noSecret.code).toBe(64);
  expect(noSecret.stderr).toContain('JWT_SECRET must be set');
  const noDb = await runCli(['panel'], { env: { JWT_SECRET: 'x', DATABASE_URL: '' } });
  expect(noDb.code).toBe(64);
  expect(noDb.stderr).toContain('--database-url');
  const badListen = await runCli(['panel', '--database-url', pg.url, '--listen', 'nowhere'], { env: { JWT_SECRET: 'x' } });
  expect(badListen.code).toBe(64);
  expect(badListen.stderr).toContain('--listen must be HOST:PORT');
  const unreachable = await runCli(
    ['panel', '--database-url', 'postgres://nobody:pw-not-printed@127.0.0.1:1/x', '--listen', '127.0.0.1:0'],
    { env: { JWT_SECRET: 'x' } },
  );
  expect(unreachable.code).toBe(1);
  expect(unreachable.stderr).toContain('panel cannot start');
  expect(unreachable.stderr).not.toContain('pw-not-printed');
});
