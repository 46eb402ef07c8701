import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Database } from '../../src/panel/db.js';
import { beatVerdict, DEFAULT_HEALTH } from '../../src/panel/health.js';
import { HeartbeatBatcher, type BeatWrite } from '../../src/panel/heartbeat-batcher.js';
import { hashToken } from '../../src/panel/auth.js';
import { LISTEN_BACKLOG, startPanelServer, type PanelServer } from '../../src/panel/server.js';
import { call, heartbeatBody, JWT_SECRET, newWorkerToken, pick, REGISTER_BODY, SSH_CRED_SECRET } from '../helpers/panel-fixtures.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';

/**
 * Heartbeats batched into one statement on a real PostgreSQL: every beat gets the answer it would
 * get alone and leaves the same row, a refused beat inside a batch gets its own 401/403/404/500
 * while the others are written, and the batch bounds hold.
 */

let pg: TestPostgres;
let panel: PanelServer;
/** Statement texts the panel sent, so a test can count the heartbeat writes. */
const sent: string[] = [];
const isBeatWrite = (text: string): boolean => text.startsWith('UPDATE container_workers') && text.includes('unnest(');

function counting(db: Database): Database {
  return {
    query: (text, params) => {
      sent.push(text);
      return db.query(text, params);
    },
    transaction: (fn) => db.transaction(fn),
  };
}

beforeAll(async () => {
  pg = await startPostgres();
  // The widest window, so beats sent together from this process share statements even on a busy machine.
  panel = await startPanelServer({
    db: counting(pg.db),
    jwtSecret: JWT_SECRET,
    sshCredSecret: SSH_CRED_SECRET,
    healthMonitor: false,
    heartbeatBatch: { maxWaitMs: 50 },
  });
});
afterAll(async () => {
  await panel?.close();
  await pg?.stop();
});

async function registered(): Promise<{ workerId: string; token: string }> {
  const w = newWorkerToken();
  expect((await call(panel.url, 'POST', '/api/workers/register', w.token, REGISTER_BODY)).status).toBe(201);
  return w;
}

const hb = (w: { workerId: string; token: string }, body: Record<string, unknown>) =>
  call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, body);

/** Varied starting rows and beats: admin and agent drains, hysteresis, Docker down, node ids, offline. */
function scenario(i: number): { status: string; load: Record<string, unknown>; beat: Record<string, unknown> } {
  return {
    status: ['active', 'draining', 'unhealthy', 'offline', 'pending'][i % 5]!,
    load: { cpuPercent: 1, draining: i % 3 === 0 },
    beat: heartbeatBody({
      cpuPercent: [10, 95, 87, 50][i % 4],
      diskPercent: [30, 86, 85][i % 3],
      draining: i % 7 === 0,
      dockerHealthy: i % 6 !== 0,
      seq: i,
      sentAt: 'fixed',
      swarmNodeId: i % 2 === 0 ? `node-batch-${i}` : null,
    }),
  };
}

describe('batched heartbeats', () => {
  test('beats sent together get the answers and leave the rows that the same beats sent one at a time do', async () => {
    const workers = await Promise.all(Array.from({ length: 40 }, registered));
    const ids = workers.map((w) => w.workerId);
    const reset = async (): Promise<void> => {
      for (const [i, w] of workers.entries()) {
        const s = scenario(i);
        await pg.pool.query('UPDATE container_workers SET status = $2, current_load = $3, swarm_node_id = NULL WHERE id = $1', [
          w.workerId,
          s.status,
          JSON.stringify(s.load),
        ]);
      }
    };
    const rows = async () =>
      (
        await pg.pool.query(
          'SELECT id, status, current_load, swarm_node_id FROM container_workers WHERE id = ANY($1::uuid[]) ORDER BY id',
          [ids],
        )
      ).rows;

    await reset();
    const before = sent.filter(isBeatWrite).length;
    const together = await Promise.all(workers.map((w, i) => hb(w, scenario(i).beat)));
    const statements = sent.filter(isBeatWrite).length - before;
    const rowsTogether = await rows();

    await reset();
    const alone = [];
    for (const [i, w] of workers.entries()) alone.push(await hb(w, scenario(i).beat));
    expect(together.map((r) => [r.status, pick(r.body, 'data', 'status')])).toEqual(
      alone.map((r) => [r.status, pick(r.body, 'data', 'status')]),
    );
    expect(rowsTogether).toEqual(await rows());
    // The statuses cover every branch of the rule, so the comparison above means something.
    expect(new Set(alone.map((r) => pick(r.body, 'data', 'status')))).toEqual(new Set(['active', 'draining', 'unhealthy']));
    expect(statements).toBeLessThan(workers.length);
  });

  test('a revoked, an unknown, a deleted, a wrong-worker and a bad beat among good ones each get their own answer', async () => {
    const good = await Promise.all(Array.from({ length: 12 }, registered));
    const [revoked, deleted, bad] = await Promise.all([registered(), registered(), registered()]);
    await pg.pool.query(`UPDATE container_workers SET auth_token_hash = repeat('0', 64) WHERE id = $1`, [revoked.workerId]);
    await pg.pool.query('DELETE FROM container_workers WHERE id = $1', [deleted.workerId]);
    const unknown = newWorkerToken();
    const answers = await Promise.all([
      ...good.map((w) => hb(w, heartbeatBody({ seq: 7 }))),
      hb(revoked, heartbeatBody()),
      hb(unknown, heartbeatBody()),
      hb(deleted, heartbeatBody()),
      call(panel.url, 'POST', `/api/workers/${good[0]!.workerId}/heartbeat`, unknown.token, heartbeatBody()),
      // jsonb refuses \u0000: this beat's write fails in PostgreSQL, and only this beat's.
      hb(bad, heartbeatBody({ bootId: 'boot\u0000x' })),
    ]);
    expect(answers.map((a) => a.status)).toEqual([...good.map(() => 200), 401, 404, 404, 403, 500]);
    expect(answers[good.length]!.body).toEqual({ error: 'Unauthorized', message: 'Worker token has been revoked' });
    expect(pick(answers[good.length + 1]!.body, 'error', 'code')).toBe('WORKER_NOT_FOUND');
    const { rows } = await pg.pool.query<{ id: string; seq: number }>(
      `SELECT id, (current_load ->> 'seq')::int AS seq FROM container_workers WHERE id = ANY($1::uuid[])`,
      [[...good, revoked, bad].map((w) => w.workerId)],
    );
    const seq = new Map(rows.map((r) => [r.id, r.seq]));
    for (const w of good) expect(seq.get(w.workerId)).toBe(7);
    expect(seq.get(revoked.workerId)).not.toBe(1); // not written
    expect(seq.get(bad.workerId)).not.toBe(1);
    // The deleted worker stays deleted, and register still refuses it.
    const again = await call(panel.url, 'POST', '/api/workers/register', deleted.token, REGISTER_BODY);
    expect(again.status).toBe(403);
  });

  test('an invalid body still hears 401/404 before its 400, as on every route', async () => {
    const w = await registered();
    await pg.pool.query(`UPDATE container_workers SET auth_token_hash = repeat('0', 64) WHERE id = $1`, [w.workerId]);
    expect((await hb(w, { cpuPercent: 'x' })).status).toBe(401);
    expect((await hb(newWorkerToken(), { cpuPercent: 'x' })).status).toBe(404);
    const ok = await registered();
    const res = await hb(ok, { cpuPercent: 'x' });
    expect(res.status).toBe(400);
    expect(pick(res.body, 'error', 'code')).toBe('VALIDATION_ERROR');
  });

  test('two workers claiming one swarm node id together: both written, one holds the id, as one after the other', async () => {
    const [a, b] = await Promise.all([registered(), registered()]);
    const body = heartbeatBody({ swarmNodeId: 'node-claimed-twice' });
    const answers = await Promise.all([hb(a, body), hb(b, body)]);
    expect(answers.map((r) => r.status)).toEqual([200, 200]);
    const { rows } = await pg.pool.query(`SELECT id FROM container_workers WHERE swarm_node_id = 'node-claimed-twice'`);
    expect(rows).toHaveLength(1);
  });
});

describe('batched reads of the other calls', () => {
  test('calls of many workers in one turn share the auth lookup and the set load; each still gets its own answer', async () => {
    const workers = await Promise.all(Array.from({ length: 30 }, registered));
    const revoked = await registered();
    await pg.pool.query(`UPDATE container_workers SET auth_token_hash = repeat('0', 64) WHERE id = $1`, [revoked.workerId]);
    const unknown = newWorkerToken();
    const before = sent.length;
    const answers = await Promise.all(
      [...workers, revoked, unknown].map((w) => call(panel.url, 'GET', `/api/workers/${w.workerId}/deployments`, w.token)),
    );
    const texts = sent.slice(before);
    expect(answers.map((a) => a.status)).toEqual([...workers.map(() => 200), 401, 404]);
    expect(pick(answers[0]!.body, 'data', 'deployments')).toEqual([]);
    const lookups = texts.filter((t) => t.includes('FROM container_workers')).length;
    const loads = texts.filter((t) => t.includes('FROM container_deployments')).length;
    expect(lookups).toBeGreaterThan(0);
    expect(lookups).toBeLessThan(workers.length);
    expect(loads).toBeLessThan(workers.length);
  });
});

describe("a fleet's connections", () => {
  test('the panel listens with a deep accept queue, so a burst of connections is not dropped', () => {
    const port = new URL(panel.url).port;
    // For a listening socket ss shows the accept queue's size (the backlog, capped by somaxconn) as Send-Q.
    const [, , sendQ] = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' })
      .trim()
      .split(/\s+/);
    const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
    expect(Number(sendQ)).toBe(Math.min(LISTEN_BACKLOG, somaxconn));
    expect(Number(sendQ)).toBeGreaterThan(511);
  });
});

describe('batch bounds', () => {
  const beatOf = (w: { workerId: string; token: string }, seq: number): BeatWrite => ({
    workerId: w.workerId,
    tokenHash: hashToken(w.token),
    load: JSON.stringify({ cpuPercent: 1, memoryPercent: 1, diskPercent: 1, containerCount: 0, seq }),
    swarmNodeId: null,
    verdict: beatVerdict({ cpuPercent: 1, memoryPercent: 1, diskPercent: 1, dockerHealthy: true, draining: false }, DEFAULT_HEALTH),
  });

  test('at most maxBatch beats per statement; a worker twice in one burst has both beats written', async () => {
    const workers = await Promise.all(Array.from({ length: 45 }, registered));
    const sizes: number[] = [];
    const batcher = new HeartbeatBatcher(
      {
        query: (text, params) => {
          if (isBeatWrite(text)) sizes.push((params![0] as unknown[]).length);
          return pg.db.query(text, params);
        },
      },
      { maxBatch: 20, maxWaitMs: 5 },
    );
    const [first, ...rest] = workers;
    // The agent asks to drain, then lifts it: in either order the first beat leaves `draining`, the
    // second `active`. In one statement only one of the two would be written and both told its status.
    const drain = beatOf(first!, 1);
    const outcomes = await Promise.all([
      batcher.write({
        ...drain,
        load: JSON.stringify({ cpuPercent: 1, draining: true }),
        verdict: { ...drain.verdict, agentDraining: true },
      }),
      batcher.write(beatOf(first!, 2)),
      ...rest.map((w) => batcher.write(beatOf(w, 1))),
    ]);
    expect(outcomes.slice(0, 2)).toEqual([
      { kind: 'written', status: 'draining' },
      { kind: 'written', status: 'active' },
    ]);
    expect(outcomes.map((o) => o.kind)).toEqual(outcomes.map(() => 'written'));
    // 46 beats, at most 20 per statement: the first statement full (less the duplicate it left for later).
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(46);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(20);
    expect(sizes.length).toBeLessThanOrEqual(4);
    expect(batcher.statements).toBe(sizes.length);
  });

  test('a beat goes at once when none is being written; beats that arrive meanwhile wait for it, at most maxWaitMs', async () => {
    const workers = await Promise.all(Array.from({ length: 7 }, registered));
    const started: { at: number; size: number }[] = [];
    let hold = 0; // ms each statement is held back before it reaches the database
    const batcher = new HeartbeatBatcher(
      {
        query: async (text, params) => {
          if (isBeatWrite(text)) started.push({ at: performance.now(), size: (params![0] as unknown[]).length });
          await new Promise((r) => setTimeout(r, hold));
          return pg.db.query(text, params);
        },
      },
      { maxBatch: 200, maxWaitMs: 50 },
    );
    // A slow statement: the beats behind it go when their wait is over, not when it finishes.
    hold = 400;
    let t0 = performance.now();
    const first = batcher.write(beatOf(workers[0]!, 5));
    await new Promise((r) => setTimeout(r, 5));
    const waiting = [1, 2, 3].map((i) => batcher.write(beatOf(workers[i]!, 5)));
    await Promise.all([first, ...waiting]);
    expect(started.map((s) => s.size)).toEqual([1, 3]);
    expect(started[0]!.at - t0).toBeLessThan(40);
    expect(started[1]!.at - t0).toBeGreaterThanOrEqual(50);
    expect(started[1]!.at - t0).toBeLessThan(400);
    // A quick one: the beats behind it go as soon as it is done.
    started.length = 0;
    hold = 0;
    t0 = performance.now();
    const again = batcher.write(beatOf(workers[4]!, 6));
    const behind = [5, 6].map((i) => batcher.write(beatOf(workers[i]!, 6)));
    expect((await Promise.all([again, ...behind])).map((o) => o.kind)).toEqual(['written', 'written', 'written']);
    expect(started.map((s) => s.size)).toEqual([3]); // same turn: one statement
    expect(started[0]!.at - t0).toBeLessThan(50);
  });

  test('a batch with misses costs one read more; bounds outside their limits are refused', async () => {
    const w = await registered();
    const batcher = new HeartbeatBatcher(pg.db, { maxBatch: 10, maxWaitMs: 1 });
    const stranger = newWorkerToken();
    const [mine, theirs] = await Promise.all([batcher.write(beatOf(w, 4)), batcher.write(beatOf(stranger, 1))]);
    expect([mine.kind, theirs.kind]).toEqual(['written', 'not-found']);
    expect(batcher.statements).toBe(2);
    expect(() => new HeartbeatBatcher(pg.db, { maxBatch: 0, maxWaitMs: 5 })).toThrow(/maxBatch/);
    expect(() => new HeartbeatBatcher(pg.db, { maxBatch: 10, maxWaitMs: 51 })).toThrow(/maxWaitMs/);
  });
});
