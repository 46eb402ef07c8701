import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ControlPlaneClient } from '../../src/controlplane/control-plane-client.js';
import { DesiredStatePoller, type DesiredSet } from '../../src/agent/deployments/desired-state-poller.js';
import { createLogger } from '../../src/agent/logger.js';
import { StateStore } from '../../src/agent/state/state-store.js';
import { startPanelServer, type PanelServer } from '../../src/panel/server.js';
import { deploymentsEtagHint, deploymentsWaitHint } from '../../src/protocol/worker.js';
import { Secret } from '../../src/secret.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import {
  call,
  heartbeatBody,
  insertDeployment,
  insertOrg,
  insertService,
  JWT_SECRET,
  newWorkerToken,
  pick,
  REGISTER_BODY,
  SSH_CRED_SECRET,
} from '../helpers/panel-fixtures.js';

/**
 * The blocking desired-set query on a real PostgreSQL: a change wakes a held call 3 (also one made
 * by plain SQL, as SkyPanelV2's own code would), the wait ends in 304, writes that do not change
 * the set wake nobody, a lost LISTEN connection releases held calls and comes back, and shutdown
 * answers hundreds of held calls at once.
 */

let db: TestPostgres;
let panel: PanelServer;

const listen = () => new pg.Client({ connectionString: db.url });

beforeAll(async () => {
  db = await startPostgres();
  panel = await startPanelServer({
    db: db.db,
    jwtSecret: JWT_SECRET,
    sshCredSecret: SSH_CRED_SECRET,
    healthMonitor: false,
    listen,
    maxWaitSec: 30,
  });
});

afterAll(async () => {
  await panel?.close();
  await db?.stop();
});

type Worker = { workerId: string; token: string };

async function registered(url = panel.url): Promise<Worker> {
  const w = newWorkerToken();
  expect((await call(url, 'POST', '/api/workers/register', w.token, REGISTER_BODY)).status).toBe(201);
  return w;
}

async function etagOf(w: Worker, url = panel.url): Promise<string> {
  const res = await call(url, 'GET', `/api/workers/${w.workerId}/deployments`, w.token);
  expect(res.status).toBe(200);
  return res.headers.get('etag')!;
}

/** A held call 3; resolves with its status, new ETag and how long it was held. */
async function held(
  w: Worker,
  etag: string,
  waitSec: number,
  url = panel.url,
): Promise<{ status: number; etag: string | null; ms: number }> {
  const started = performance.now();
  const res = await call(url, 'GET', `/api/workers/${w.workerId}/deployments?wait=${waitSec}`, w.token, undefined, {
    'if-none-match': etag,
  });
  return { status: res.status, etag: res.headers.get('etag'), ms: performance.now() - started };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('blocking desired-set query', () => {
  test('the heartbeat answer announces it; a panel without a change feed does not', async () => {
    const w = await registered();
    const hb = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
    expect(pick(hb.body, 'data', 'deploymentsWait')).toBe(30);
    const plain = await startPanelServer({ db: db.db, jwtSecret: JWT_SECRET, healthMonitor: false, migrate: false });
    try {
      const hb2 = await call(plain.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
      expect(hb2.status).toBe(200);
      expect(pick(hb2.body, 'data', 'deploymentsWait')).toBeUndefined();
      // ?wait= on a panel that cannot hold: answered at once.
      const res = await held(w, await etagOf(w, plain.url), 20, plain.url);
      expect(res.status).toBe(304);
      expect(res.ms).toBeLessThan(1_000);
    } finally {
      await plain.close();
    }
  });

  test('a change made by plain SQL wakes the held call within a second, with the new set', async () => {
    const w = await registered();
    const etag = await etagOf(w);
    const pending = held(w, etag, 25);
    await sleep(300);
    const { orgId } = await insertOrg(db.pool);
    const svc = await insertService(db.pool, { orgId, status: 'running' });
    const changedAt = performance.now();
    await insertDeployment(db.pool, { serviceId: svc, workerId: w.workerId });
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.etag).not.toBe(etag);
    expect(performance.now() - changedAt).toBeLessThan(1_000);
    // A service update SkyPanelV2 makes (environment) wakes it too.
    const next = held(w, res.etag!, 25);
    await sleep(300);
    const t = performance.now();
    await db.pool.query(`UPDATE container_services SET environment_vars = '{"A":"1"}' WHERE id = $1`, [svc]);
    const woke = await next;
    expect(woke.status).toBe(200);
    expect(performance.now() - t).toBeLessThan(1_000);
  });

  test('the wait ends in 304; writes that do not change the set (status reports, other workers) wake nobody', async () => {
    const w = await registered();
    const other = await registered();
    const { orgId } = await insertOrg(db.pool);
    const svc = await insertService(db.pool, { orgId, status: 'deploying' });
    const dep = await insertDeployment(db.pool, { serviceId: svc, workerId: w.workerId });
    const etag = await etagOf(w);
    const pending = held(w, etag, 2);
    await sleep(300);
    await db.pool.query(`UPDATE container_deployments SET status = 'running', deployed_at = NOW() WHERE id = $1`, [dep]);
    await db.pool.query(`UPDATE container_services SET status = 'running', public_url = 'http://x' WHERE id = $1`, [svc]);
    const svc2 = await insertService(db.pool, { orgId, status: 'running' });
    await insertDeployment(db.pool, { serviceId: svc2, workerId: other.workerId });
    const res = await pending;
    expect(res.status).toBe(304);
    expect(res.ms).toBeGreaterThanOrEqual(1_950);
    expect(res.ms).toBeLessThan(2_000 + 2_000 / 16 + 500);
  });

  test("the heartbeat's hint follows a change made by SQL (the panel remembers hints only until a notification)", async () => {
    const w = await registered();
    const beatEtag = async () =>
      pick(
        (await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody())).body,
        'data',
        'deploymentsEtag',
      );
    const first = await beatEtag();
    expect(await beatEtag()).toBe(first);
    const { orgId } = await insertOrg(db.pool);
    await insertDeployment(db.pool, { serviceId: await insertService(db.pool, { orgId }), workerId: w.workerId });
    await sleep(300);
    const after = await beatEtag();
    expect(after).not.toBe(first);
    expect(after).toBe(await etagOf(w));
  });

  test('one UPDATE over the services of 50 workers wakes all their held calls within a second or two', async () => {
    const { orgId } = await insertOrg(db.pool);
    const workers = await Promise.all(Array.from({ length: 50 }, () => registered()));
    const services: string[] = [];
    for (const w of workers) {
      const svc = await insertService(db.pool, { orgId, status: 'running' });
      await insertDeployment(db.pool, { serviceId: svc, workerId: w.workerId });
      services.push(svc);
    }
    const etags = await Promise.all(workers.map((w) => etagOf(w)));
    const pending = workers.map((w, i) => held(w, etags[i]!, 25));
    await sleep(500);
    const t = performance.now();
    await db.pool.query(`UPDATE container_services SET environment_vars = '{"ROTATED":"1"}' WHERE id = ANY($1::uuid[])`, [services]);
    const answers = await Promise.all(pending);
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    expect(performance.now() - t).toBeLessThan(2_000);
  });

  test('a stale If-None-Match is answered at once; a bad wait is a 400', async () => {
    const w = await registered();
    const res = await held(w, '"stale"', 25);
    expect(res.status).toBe(200);
    expect(res.ms).toBeLessThan(1_000);
    const bad = await call(panel.url, 'GET', `/api/workers/${w.workerId}/deployments?wait=soon`, w.token);
    expect(bad.status).toBe(400);
  });

  test('a lost LISTEN connection releases held calls, stops the announcement, and comes back', async () => {
    const w = await registered();
    const etag = await etagOf(w);
    const pending = held(w, etag, 25);
    await sleep(300);
    const t = performance.now();
    await db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN skypanel_agent_desired'`);
    const res = await pending;
    expect(res.status).toBe(304);
    expect(performance.now() - t).toBeLessThan(1_000);
    await until('the feed to reconnect', async () => {
      const hb = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
      return pick(hb.body, 'data', 'deploymentsWait') === 30;
    });
    // Held again, and woken again.
    const again = held(w, etag, 25);
    await sleep(300);
    const { orgId } = await insertOrg(db.pool);
    await insertDeployment(db.pool, { serviceId: await insertService(db.pool, { orgId }), workerId: w.workerId });
    expect((await again).status).toBe(200);
  });

  test('shutdown answers 200 held calls promptly (304: ask again)', async () => {
    const own = await startPanelServer({ db: db.db, jwtSecret: JWT_SECRET, healthMonitor: false, migrate: false, listen, maxWaitSec: 60 });
    const workers = await Promise.all(Array.from({ length: 20 }, () => registered(own.url)));
    const etags = await Promise.all(workers.map((w) => etagOf(w, own.url)));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1000 });
    const u = new URL(own.url);
    const statuses: Promise<number>[] = [];
    for (let i = 0; i < 200; i++) {
      const w = workers[i % 20]!;
      statuses.push(
        new Promise((resolve, reject) => {
          const req = http.get(
            {
              agent,
              host: u.hostname,
              port: u.port,
              path: `/api/workers/${w.workerId}/deployments?wait=60`,
              headers: { authorization: `Bearer ${w.token}`, 'if-none-match': etags[i % 20]! },
            },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          req.on('error', reject);
        }),
      );
    }
    await until('200 held calls', async () => own.feed!.held === 200);
    const t = performance.now();
    await own.close();
    const answered = await Promise.all(statuses);
    expect(performance.now() - t).toBeLessThan(2_000);
    expect(answered.every((s) => s === 304)).toBe(true);
    agent.destroy();
  });

  test("the agent's poller gets a change made by SQL in under 2 s, with no poll due for a minute", async () => {
    const w = await registered();
    const client = new ControlPlaneClient({ baseUrl: panel.url, token: new Secret(w.token), timeoutMs: 5_000 });
    const dir = await mkdtemp(join(tmpdir(), 'skp-panel-held-'));
    const sets: DesiredSet[] = [];
    const logger = createLogger({ level: 'silent', pretty: false, destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const poller = new DesiredStatePoller({
      client,
      workerId: () => w.workerId,
      intervalMs: 60_000,
      store: new StateStore(dir),
      logger,
      onDesired: (s) => sets.push(s),
    });
    try {
      poller.start();
      const firstPoll = async () => sets.length === 1;
      await until('the first poll', firstPoll);
      const hb = await client.postJson(`/api/workers/${w.workerId}/heartbeat`, heartbeatBody());
      expect(hb.ok).toBe(true);
      if (hb.ok) {
        poller.noteBlockingWait(deploymentsWaitHint(hb.body));
        poller.noteEtagHint(deploymentsEtagHint(hb.body)!);
      }
      await until('a held call', async () => panel.feed!.held === 1);
      const { orgId } = await insertOrg(db.pool);
      const svc = await insertService(db.pool, { orgId, status: 'running' });
      const t = performance.now();
      await insertDeployment(db.pool, { serviceId: svc, workerId: w.workerId, imageTag: 'registry.example.com/app:held' });
      await until('the change', async () => sets.length === 2, 2_000);
      expect(performance.now() - t).toBeLessThan(2_000);
      expect(sets[1]!.deployments.map((d) => d.imageTag)).toEqual(['registry.example.com/app:held']);
    } finally {
      await poller.stop();
      await client.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
