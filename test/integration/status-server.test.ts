import { createHook } from 'node:async_hooks';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import http, { type IncomingHttpHeaders } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import tls from 'node:tls';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/agent/logger.js';
import { createAgentMetrics } from '../../src/agent/status/metrics.js';
import { createStatusServer, parseListen } from '../../src/agent/status/status-server.js';
import { redact } from '../../src/secret.js';
import type { DeploymentView } from '../../src/agent/status/status-model.js';
import { Secret } from '../../src/secret.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';
import { FIXTURE, fakeSource } from '../helpers/status-fixture.js';

const { TOKEN, SECRETS } = FIXTURE;

const logLines: string[] = [];
const logger = createLogger({
  level: 'debug',
  pretty: false,
  destination: new Writable({ write: (c, _e, cb) => (logLines.push(String(c)), cb()) }),
});
const source = fakeSource();
const metrics = createAgentMetrics({
  deployments: () => source.status().deployments,
  dockerHealthy: () => true,
  reportQueueDepth: () => 0,
});
const server = createStatusServer({ listen: '127.0.0.1:0', token: new Secret(TOKEN), source, metrics, logger });
let port = 0;

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}
const seen: Res[] = [];

function req(
  path: string,
  opts: { token?: string | null; method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Res> {
  const token = opts.token === undefined ? TOKEN : opts.token;
  const headers: Record<string, string> = { ...opts.headers };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        const out = { status: res.statusCode ?? 0, headers: res.headers, body };
        seen.push(out);
        resolve(out);
      });
    });
    r.on('error', reject);
    r.end(opts.body);
  });
}

/** Raw bytes over TCP, for requests a well-behaved client library would refuse to send. */
function raw(text: string | Buffer): Promise<{ response: string; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const sock = net.connect(port, '127.0.0.1');
    let response = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => (response += d));
    sock.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
    sock.on('close', () => {
      seen.push({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0), headers: {}, body: response });
      resolve({ response, closedAfterMs: Date.now() - started });
    });
    sock.write(text);
  });
}

const json = (r: Res) => JSON.parse(r.body) as Record<string, unknown>;
const withoutDate = (h: IncomingHttpHeaders) => Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'date'));

beforeAll(async () => {
  ({ port } = await server.start());
});

afterAll(async () => {
  await server.stop();
  // Every body of every route (successes, errors, raw responses) and every log line: no secret value anywhere.
  expect(seen.length).toBeGreaterThan(20);
  const everything = [...seen.map((r) => r.body + JSON.stringify(r.headers)), ...logLines].join('\n');
  for (const s of SECRETS) {
    expect(everything).not.toContain(s);
    expect(everything).not.toContain(JSON.stringify(s).slice(1, -1));
  }
  for (const r of seen.filter((x) => x.headers['content-type'])) {
    expect(Object.keys(r.headers).filter((k) => k.startsWith('access-control-'))).toEqual([]);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
  }
});

describe('status API routes', () => {
  it('serves the status view and the deployment list with names but never values', async () => {
    const s = await req('/v1/status');
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toMatch(/^application\/json/);
    expect(json(s)).toMatchObject({ workerId: 'w-7e3', dockerHealthy: true });
    const d = await req('/v1/deployments');
    const list = json(d).deployments as DeploymentView[];
    expect(list.map((x) => x.slug)).toEqual(['shop-frontend', 'billing-worker']);
    expect(list[0]!.environmentVarNames).toEqual(['DATABASE_URL', 'NODE_ENV']);
    expect(list[0]!.secretNames).toEqual(['db-password', 'stripe-key']);
    expect(list[1]!.lastError).toBe('pull failed: unauthorized for user ci with password [redacted]');
  });

  it('serves one deployment, with logs on request, redacting secret values inside log lines', async () => {
    const one = await req('/v1/deployments/6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40');
    expect(one.status).toBe(200);
    expect(json(one).slug).toBe('shop-frontend');
    expect(json(one)).not.toHaveProperty('logs');
    const withLogs = await req('/v1/deployments/6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40?logs=3');
    expect(withLogs.status).toBe(200);
    expect(json(withLogs).logs).toEqual(['DATABASE_URL=[redacted]', 'loaded secret [redacted]', 'listening on :3000']);
    expect((await req('/v1/deployments/nope')).status).toBe(404);
    expect((await req('/v1/deployments/nope?logs=5')).status).toBe(404);
  });

  it.each(['0', '1001', 'abc', '1.5', '-1', ''])('refuses logs=%s with 400 naming the parameter', async (v) => {
    const r = await req(`/v1/deployments/6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40?logs=${v}`);
    expect(r.status).toBe(400);
    expect(json(r).error).toMatch(/'logs'/);
  });

  it('serves Prometheus text that parses', async () => {
    metrics.recordHeartbeat({ at: Date.now(), outcome: 'accepted', status: 200, rttMs: 30, nextInMs: 1 });
    const r = await req('/metrics');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const fams = parsePrometheusText(r.body);
    expect(sampleValue(fams, 'skypanel_agent_heartbeats_total', { result: 'accepted' })).toBe(1);
    expect(sampleValue(fams, 'skypanel_agent_deployments', { status: 'failed' })).toBe(1);
    expect(fams.has('process_resident_memory_bytes')).toBe(true);
  });

  it('answers HEAD like GET without a body', async () => {
    const get = await req('/v1/status');
    const head = await req('/v1/status', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers['content-length']).toBe(get.headers['content-length']);
  });

  it('reports healthz 200 while the loop moves and 503 once it is wedged, without auth', async () => {
    const ok = await req('/healthz', { token: null });
    expect([ok.status, json(ok)]).toEqual([200, { status: 'ok' }]);
    source.state.stalled = 181.4;
    try {
      const bad = await req('/healthz', { token: null });
      expect(bad.status).toBe(503);
      expect(json(bad)).toEqual({ status: 'wedged', reason: 'no heartbeat attempt or reconcile pass for 181 s' });
    } finally {
      source.state.stalled = 3;
    }
  });

  it('answers 404 for unknown routes and 405 with Allow for a wrong method', async () => {
    const nf = await req('/v1/nothing');
    expect([nf.status, json(nf)]).toEqual([404, { error: 'not found' }]);
    expect((await req('/v1/status/')).status).toBe(404);
    for (const method of ['DELETE', 'PUT', 'OPTIONS']) {
      const r = await req('/v1/status', { method });
      expect(r.status, method).toBe(405);
      expect(r.headers.allow).toBe('GET, HEAD');
      expect(json(r)).toEqual({ error: 'method not allowed' });
    }
    expect((await req('/healthz', { method: 'DELETE', token: null })).status).toBe(405);
  });
});

describe('status API auth', () => {
  const protectedPaths = [
    '/v1/status',
    '/v1/deployments',
    '/v1/deployments/6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40?logs=2',
    '/metrics',
    '/v1/unknown',
  ];

  it.each(protectedPaths)('%s: missing and wrong same-length token get the identical 401', async (path) => {
    const missing = await req(path, { token: null });
    const wrong = await req(path, { token: `${TOKEN.slice(0, -1)}${TOKEN.endsWith('x') ? 'y' : 'x'}` });
    const otherScheme = await req(path, { token: null, headers: { authorization: `Basic ${TOKEN}` } });
    for (const r of [missing, wrong, otherScheme]) {
      expect(r.status).toBe(401);
      expect(r.body).toBe('{"error":"unauthorized"}');
    }
    expect(withoutDate(wrong.headers)).toEqual(withoutDate(missing.headers));
    expect(withoutDate(otherScheme.headers)).toEqual(withoutDate(missing.headers));
    expect((await req(path)).status).not.toBe(401);
  });

  it('logs one debug line per request without the query or the Authorization header', async () => {
    await req('/v1/deployments/6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40?logs=1');
    const line = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .reverse()
      .find((l) => l.msg === 'status api request');
    expect(line).toMatchObject({ method: 'GET', path: '/v1/deployments/6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40', status: 200 });
    expect(typeof line!.ms).toBe('number');
    expect(logLines.join('')).not.toMatch(/authorization|Bearer/i);
  });
});

describe('status API limits', () => {
  it('answers 431 to a 16 KiB header', async () => {
    const { response } = await raw(
      `GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nX-Big: ${'a'.repeat(16 * 1024)}\r\n\r\n`,
    );
    expect(response).toMatch(/^HTTP\/1\.1 431 /);
  });

  it('refuses a request body on GET without waiting for it', async () => {
    // The declared body is never sent: a server that tried to read it would hang until requestTimeout.
    const started = Date.now();
    const { response } = await raw(
      `GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 100000\r\n\r\nabc`,
    );
    expect(response).toMatch(/^HTTP\/1\.1 413 /);
    expect(Date.now() - started).toBeLessThan(3000);
    const chunked = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
    expect(chunked.response).toMatch(/^HTTP\/1\.1 413 /);
    const viaClient = await req('/v1/status', { method: 'POST', body: 'x'.repeat(10) });
    expect(viaClient.status).toBe(413);
  });

  it('drops a client that never finishes its headers within the headers timeout', async () => {
    const { closedAfterMs, response } = await raw(`GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bear`);
    expect(closedAfterMs).toBeGreaterThanOrEqual(4500);
    expect(closedAfterMs).toBeLessThan(6500);
    expect(response === '' || /^HTTP\/1\.1 408 /.test(response)).toBe(true);
  }, 15_000);

  it('drops a kept connection that trickles its next request: keep-alive window plus the headers timeout after the answer', async () => {
    const sock = net.connect(port, '127.0.0.1');
    let response = '';
    let answeredAt = 0;
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      response += d;
      if (!answeredAt && response.includes('"status":"ok"')) answeredAt = Date.now();
    });
    const closed = new Promise<number>((resolve) => sock.on('close', () => resolve(Date.now())));
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    // One byte a second keeps node's keep-alive (idle) timer from ever firing.
    const next = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(64);
    let i = 0;
    const drip = setInterval(() => (i < next.length && !sock.destroyed ? sock.write(next[i++]!) : undefined), 1_000);
    try {
      const closedAt = await closed;
      expect(response).toMatch(/^HTTP\/1\.1 200 /);
      expect(closedAt - answeredAt).toBeGreaterThanOrEqual(9_500);
      expect(closedAt - answeredAt).toBeLessThan(12_000);
      expect(i).toBeGreaterThanOrEqual(8);
    } finally {
      clearInterval(drip);
      sock.destroy();
    }
  }, 20_000);

  it('keeps serving authorised clients while another address holds 500 slow sockets (per-address connection cap)', async () => {
    // The attacker (127.0.0.2) keeps 500 sockets open that never finish their headers, reopening
    // each one that is closed; before the per-address cap they held all 64 slots.
    const ATTACKER = '127.0.0.2';
    let stopped = false;
    const socks = new Set<net.Socket>();
    let accepted = 0;
    const open = () => {
      if (stopped) return;
      const sock = net.connect({ port, host: '127.0.0.1', localAddress: ATTACKER });
      socks.add(sock);
      sock.on('connect', () => sock.write('GET /v1/status HTTP/1.1\r\nHost: x\r\n'));
      sock.on('data', () => accepted++);
      sock.on('error', () => {});
      // Reopened after a short pause, so a refused socket is not a hot loop in the test itself.
      sock.on('close', () => (socks.delete(sock), setTimeout(open, 200)));
    };
    for (let i = 0; i < 500; i++) open();
    await new Promise((r) => setTimeout(r, 500));
    try {
      let ok = 0;
      let failed = 0;
      const started = Date.now();
      while (Date.now() - started < 6_000) {
        const r = await req('/v1/status').catch(() => undefined);
        if (r?.status === 200) ok++;
        else failed++;
        await new Promise((res) => setTimeout(res, 20));
      }
      console.log(`status API under 500 slow sockets from one address: ${ok} served, ${failed} failed in 6 s`);
      expect(failed).toBe(0);
      expect(ok).toBeGreaterThan(20);
      // The attacker's few admitted sockets were still bounded by the headers deadline (408 or a close), not served.
      expect(accepted).toBeLessThan(500);
    } finally {
      stopped = true;
      for (const sock of socks) sock.destroy();
    }
  }, 20_000);

  it("an idle status API keeps no repeating timer (node's server-wide timeout check would wake the agent twice a second)", async () => {
    const repeats: number[] = [];
    const hook = createHook({
      init(_id, type, _trigger, resource) {
        const repeat = (resource as { _repeat?: number | null })._repeat;
        if (type === 'Timeout' && typeof repeat === 'number') repeats.push(repeat);
      },
    }).enable();
    const idle = createStatusServer({ listen: '127.0.0.1:0', token: new Secret(TOKEN), source, metrics, logger });
    try {
      await idle.start();
      await new Promise((r) => setTimeout(r, 1_200));
    } finally {
      hook.disable();
      await idle.stop();
    }
    expect(repeats.filter((ms) => ms < 60_000)).toEqual([]);
  });
});

describe('redaction and listen parsing', () => {
  it('redact replaces raw and JSON-escaped forms, longest first, and skips trivially short values', () => {
    const body = JSON.stringify({ a: `x${FIXTURE.SECRET_VALUE}y`, b: 'abcdefgh-longer' });
    const out = redact(body, [FIXTURE.SECRET_VALUE, 'abcdefgh', 'abcdefgh-longer', 'true']);
    expect(out).toBe('{"a":"x[redacted]y","b":"[redacted]"}');
  });

  it('parses host:port and [v6]:port and refuses the rest', () => {
    expect(parseListen('0.0.0.0:9740')).toEqual({ host: '0.0.0.0', port: 9740 });
    expect(parseListen('[::]:9740')).toEqual({ host: '::', port: 9740 });
    for (const bad of ['9740', 'host:', ':::1', 'h:70000', '[::]']) expect(() => parseListen(bad), bad).toThrow(/host:port/);
  });
});

const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasOpenssl)('status API over TLS', () => {
  it('serves over https with the given certificate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'skp-tls-'));
    const certFile = join(dir, 'cert.pem');
    const keyFile = join(dir, 'key.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', keyFile, '-out', certFile],
      { stdio: 'ignore' },
    );
    expect(existsSync(certFile)).toBe(true);
    const tlsServer = createStatusServer({
      listen: '127.0.0.1:0',
      token: new Secret(TOKEN),
      source,
      metrics,
      logger,
      tls: { certFile, keyFile },
    });
    const { port: p } = await tlsServer.start();
    try {
      const body = await new Promise<string>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: p, path: '/healthz', rejectUnauthorized: false, agent: false }, (res) => {
            let b = '';
            res.on('data', (d: Buffer) => (b += d));
            res.on('end', () => resolve(b));
          })
          .on('error', reject);
      });
      expect(JSON.parse(body)).toEqual({ status: 'ok' });
      // The headers deadline starts after the handshake, on the TLS connection.
      const closedAfterMs = await new Promise<number>((resolve, reject) => {
        const sock = tls.connect({ host: '127.0.0.1', port: p, rejectUnauthorized: false }, () => {
          const started = Date.now();
          sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ab');
          sock.on('close', () => resolve(Date.now() - started));
        });
        sock.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
        sock.resume();
      });
      expect(closedAfterMs).toBeGreaterThanOrEqual(4_000);
      expect(closedAfterMs).toBeLessThan(6_500);
    } finally {
      await tlsServer.stop();
    }
  }, 15_000);
});
