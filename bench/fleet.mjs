#!/usr/bin/env node
// `npm run bench:fleet`: how many workers one panel process and one PostgreSQL carry. Starts its
// own throwaway PostgreSQL (SkyPanelV2's tables + the panel migration), the panel module in a
// separate process (bench/fleet/panel-child.mjs, as `skypanel-agent panel` runs it) and simulated
// workers in a few client processes (bench/fleet/workers-child.mjs). For each fleet size it
// reports heartbeat latency, panel and PostgreSQL CPU per heartbeat, panel RSS, held connections
// and how long a change takes to reach every affected worker; then what one heartbeat write costs
// PostgreSQL, alone and batched. A benchmark, not a test. Time is NOT compressed: heartbeats every
// 30 s per worker (FLEET_HB_SEC), so the panel sees the real rate of a fleet of that size.
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startPostgres } from './fleet/postgres.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SIZES = (process.env.FLEET_SIZES ?? '1000,5000,10000').split(',').map(Number);
const HB_SEC = Number(process.env.FLEET_HB_SEC ?? 30);
const MEASURE_SEC = Number(process.env.FLEET_MEASURE_SEC ?? 30);
const WAIT_SEC = 300;
const WARM_CAP_SEC = 180;
const CLIENTS = 4;
const JWT_SECRET = 'fleet-bench-jwt-secret-0123456789abcdef';
const TICK = 100; // USER_HZ on Linux
const T0 = Date.now();
const log = (m) => console.log(`[fleet ${String(Math.round((Date.now() - T0) / 1000)).padStart(3)} s] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** The 1-minute load average: other work on the machine moves every figure here, so each is printed with it. */
const load1 = () => Number(loadavg()[0].toFixed(1));

const { SKYPANEL_BASE_SQL, CONTAINER_PLATFORM_SQL, applyPanelMigration, pgPoolDatabase } = await import('../dist/panel/index.js');

function cpuSec(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / TICK;
  } catch {
    return 0;
  }
}
function ppidOf(pid) {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
  } catch {
    return -1;
  }
}
/** The postmaster and every backend of it (their CPU summed). */
function pgCpuSec(postmaster) {
  let sum = cpuSec(postmaster);
  for (const d of readdirSync('/proc')) if (/^\d+$/.test(d) && ppidOf(Number(d)) === postmaster) sum += cpuSec(Number(d));
  return sum;
}
function rssMb(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

/** A forked child with request/answer over IPC by message kind. */
function child(script, env) {
  const proc = fork(new URL(script, import.meta.url), { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  proc.on('message', (m) => {
    const w = waiting.get(m.kind);
    if (w) {
      waiting.delete(m.kind);
      w(m);
    }
  });
  const next = (kind, ms = 600_000) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${script}: no ${kind} within ${ms} ms`)), ms);
      waiting.set(kind, (m) => {
        clearTimeout(t);
        resolve(m);
      });
    });
  return {
    proc,
    next,
    ask: (msg, kind, ms) => {
      const p = next(kind, ms);
      proc.send(msg);
      return p;
    },
  };
}

const children = [];
// Assigned once below, but cleanup (installed on signals before it is) reads it.
// eslint-disable-next-line prefer-const
let pgc;
async function cleanup() {
  for (const c of children) c.proc.kill('SIGKILL');
  await pgc?.stop();
}
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

log('starting PostgreSQL');
pgc = await startPostgres();
const pool = new pg.Pool({ connectionString: pgc.url, max: 3 });
await pool.query(SKYPANEL_BASE_SQL);
await pool.query(CONTAINER_PLATFORM_SQL);
await applyPanelMigration(pgPoolDatabase(pool));
const user = await pool.query(`INSERT INTO users (email, name) VALUES ('fleet@example.com', 'Fleet') RETURNING id`);
const org = (
  await pool.query(`INSERT INTO organizations (name, slug, owner_id) VALUES ('Fleet', 'fleet', $1) RETURNING id`, [user.rows[0].id])
).rows[0].id;

const results = { hbSec: HB_SEC, measureSec: MEASURE_SEC, waitSec: WAIT_SEC, steps: [] };
try {
  for (const n of SIZES) {
    log(`--- ${n} workers ---`);
    const panel = child('./fleet/panel-child.mjs', { DATABASE_URL: pgc.url, JWT_SECRET });
    children.push(panel);
    const { url } = await panel.next('ready', 60_000);
    const ids = Array.from({ length: n }, () => randomUUID());
    const share = (i) => ids.filter((_, k) => k % CLIENTS === i);
    const clients = [];
    for (let i = 0; i < CLIENTS; i++) {
      const c = child('./fleet/workers-child.mjs', {
        PANEL_URL: url,
        JWT_SECRET,
        HB_MS: String(HB_SEC * 1000),
        WAIT_SEC: String(WAIT_SEC),
      });
      children.push(c);
      await c.next('ready', 60_000);
      clients.push(c);
    }
    let t = Date.now();
    const regs = await Promise.all(clients.map((c, i) => c.ask({ cmd: 'register', ids: share(i) }, 'registered')));
    const registerSec = (Date.now() - t) / 1000;
    log(`registered ${n} in ${registerSec.toFixed(1)} s (${regs.reduce((a, r) => a + r.failed, 0)} failed)`);
    // One service and current deployment per worker, inserted as SkyPanelV2 would (plain SQL).
    await pool.query(
      `WITH s AS (INSERT INTO container_services (organization_id, name, slug, status, environment_vars, resource_limits)
         SELECT $1, 'f-' || x, 'f-' || x, 'stopped', '{}', '{"cpu_cores":0.5,"memory_mb":64}' FROM unnest($2::text[]) AS x RETURNING id, slug)
       INSERT INTO container_deployments (service_id, worker_id, image_tag, status)
         SELECT s.id, substr(s.slug, 3)::uuid, 'registry.example.com/app:1', 'running' FROM s`,
      [org, ids],
    );
    await pool.query(
      `UPDATE container_services s SET current_deployment_id = d.id FROM container_deployments d
      WHERE d.service_id = s.id AND s.organization_id = $1 AND s.current_deployment_id IS NULL`,
      [org],
    );
    const deps = (
      await pool.query(`SELECT d.id, d.service_id, d.worker_id FROM container_deployments d WHERE d.worker_id = ANY($1::uuid[])`, [ids])
    ).rows;
    const deployments = Object.fromEntries(
      deps.map((d) => [d.worker_id, { deploymentId: d.id, serviceId: d.service_id, organizationId: org }]),
    );
    await Promise.all(clients.map((c) => c.ask({ cmd: 'start', deployments }, 'started')));
    // Warm-up: every worker has beaten once and (nearly) every one holds its call, so the window
    // measures the steady state rather than the tail of the start: a fleet that starts together
    // overruns the accept queue on a loaded machine, and a dropped SYN is retried 1, 3, 7, 15 s later.
    // Waits at most WARM_CAP_SEC past the interval; how long it took is reported.
    const warmStart = Date.now();
    const warmEnd = warmStart + HB_SEC * 1000 + 5_000;
    const warmCap = warmEnd + WARM_CAP_SEC * 1000;
    let probe;
    while (Date.now() < warmEnd || (probe.held < 0.99 * n && Date.now() < warmCap)) {
      await sleep(2_000);
      probe = await panel.ask({ cmd: 'probe' }, 'probe', 30_000);
    }
    const warmSec = (Date.now() - warmStart) / 1000;
    log(`warm after ${warmSec.toFixed(0)} s: ${probe.held} calls held, ${probe.connections} connections`);
    const probeDb = new pg.Client({ connectionString: pgc.url });
    await probeDb.connect();
    const xacts = async () =>
      Number((await probeDb.query(`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = 'skypanel'`)).rows[0].n);
    await Promise.all(clients.map((c) => c.ask({ cmd: 'measure' }, 'measuring')));
    panel.proc.send({ cmd: 'lag-reset' });
    const loadAtStart = load1();
    const xact0 = await xacts();
    const cpu0 = { panel: cpuSec(panel.proc.pid), pg: pgCpuSec(pgc.postmasterPid), at: performance.now() };
    const samples = [];
    const end = Date.now() + MEASURE_SEC * 1000;
    while (Date.now() < end) {
      await sleep(2_000);
      const p = await panel.ask({ cmd: 'probe' }, 'probe', 30_000);
      const locks = (await probeDb.query(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted`)).rows[0].n;
      const active = (
        await probeDb.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND datname = 'skypanel'`)
      ).rows[0].n;
      samples.push({ ...p, locks, active, rssMb: rssMb(panel.proc.pid) });
    }
    const cpu1 = { panel: cpuSec(panel.proc.pid), pg: pgCpuSec(pgc.postmasterPid), at: performance.now() };
    // Statements the database ran in the window (each of the panel's queries is its own transaction,
    // bar register and status reports), the bench's own probes included: round trips per beat, roughly.
    const xactCount = (await xacts()) - xact0;
    const loadAtEnd = load1();
    const got = await Promise.all(clients.map((c) => c.ask({ cmd: 'collect' }, 'collected')));
    const beats = got.flatMap((g) => g.beats);
    const wallSec = (cpu1.at - cpu0.at) / 1000;
    const hb = beats.length;
    // A change to every worker's set in one statement: the worst fan-out.
    await Promise.all(clients.map((c, i) => c.ask({ cmd: 'change', affected: share(i) }, 'change-armed')));
    t = Date.now();
    await pool.query(`UPDATE container_services SET environment_vars = '{"V":"2"}' WHERE organization_id = $1 AND slug = ANY($2::text[])`, [
      org,
      ids.map((x) => `f-${x}`),
    ]);
    const committedAt = Date.now();
    let delivered = [];
    const changeEnd = Date.now() + 60_000;
    while (Date.now() < changeEnd) {
      await sleep(250);
      const st = await Promise.all(clients.map((c) => c.ask({ cmd: 'change-status' }, 'change-status')));
      delivered = st.flatMap((s) => s.got).map((x) => x - committedAt);
      if (delivered.length >= n) break;
    }
    const step = {
      workers: n,
      registerSec,
      warmSec,
      heartbeats: hb,
      heartbeatsPerSec: hb / wallSec,
      heartbeatErrors: got.reduce((a, g) => a + g.beatErrors, 0),
      heartbeatErrorKinds: got.reduce((a, g) => {
        for (const [k, v] of Object.entries(g.beatErrorKinds)) a[k] = (a[k] ?? 0) + v;
        return a;
      }, {}),
      loadAverage: [loadAtStart, loadAtEnd],
      // Event-loop delay over the window (ms): the panel's, and the worst of the client processes'.
      panelLagP99Ms: samples.at(-1).lagP99Ms,
      panelLagMaxMs: samples.at(-1).lagMaxMs,
      clientLagP99Ms: Math.max(...got.map((g) => g.lagP99Ms)),
      clientLagMaxMs: Math.max(...got.map((g) => g.lagMaxMs)),
      dbTransactionsPerHeartbeat: xactCount / hb,
      hbP50Ms: pct(beats, 50),
      hbP99Ms: pct(beats, 99),
      panelCpuPct: (100 * (cpu1.panel - cpu0.panel)) / wallSec,
      pgCpuPct: (100 * (cpu1.pg - cpu0.pg)) / wallSec,
      panelCpuMsPerHeartbeat: (1000 * (cpu1.panel - cpu0.panel)) / hb,
      pgCpuMsPerHeartbeat: (1000 * (cpu1.pg - cpu0.pg)) / hb,
      panelRssMb: Math.max(...samples.map((s) => s.rssMb)),
      held: Math.min(...samples.map((s) => s.held)),
      connections: Math.max(...samples.map((s) => s.connections)),
      maxLockWaits: Math.max(...samples.map((s) => s.locks)),
      maxActiveQueries: Math.max(...samples.map((s) => s.active)),
      maxPoolWaiting: Math.max(...samples.map((s) => s.poolWaiting)),
      changeUpdateMs: committedAt - t,
      changeDelivered: delivered.length,
      changeP50Ms: pct(delivered, 50),
      changeMaxMs: Math.max(...delivered),
      counts: got.reduce((a, g) => {
        for (const [k, v] of Object.entries(g.counts)) a[k] = (a[k] ?? 0) + v;
        return a;
      }, {}),
    };
    results.steps.push(step);
    log(JSON.stringify(step));
    await probeDb.end();
    for (const c of clients) c.proc.send({ cmd: 'stop' });
    panel.proc.send({ cmd: 'stop' });
    await sleep(2_000);
    for (const c of [...clients, panel]) c.proc.kill('SIGKILL');
  }

  // What one heartbeat's write costs PostgreSQL: the panel's own transaction, alone, then batched.
  const c = new pg.Client({ connectionString: pgc.url });
  await c.connect();
  const ids = (await c.query('SELECT id FROM container_workers LIMIT 2000')).rows.map((r) => r.id);
  // This connection's own backend: other backends may come and go meanwhile.
  const backend = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  const wal = async () => (await c.query('SELECT pg_current_wal_lsn() AS l')).rows[0].l;
  const walBytes = async (a, b) => Number((await c.query('SELECT pg_wal_lsn_diff($2, $1)::bigint AS d', [a, b])).rows[0].d);
  let cpu = cpuSec(backend);
  let w0 = await wal();
  for (const id of ids) {
    await c.query('BEGIN');
    await c.query('SELECT id, status, auth_token_hash, current_load FROM container_workers WHERE id = $1 FOR UPDATE', [id]);
    await c.query(`UPDATE container_workers SET current_load = $2, last_heartbeat_at = NOW(), status = $3 WHERE id = $1`, [
      id,
      '{"cpuPercent":12,"memoryPercent":40,"diskPercent":30,"containerCount":1,"seq":2}',
      'active',
    ]);
    await c.query('COMMIT');
  }
  const single = { cpuMs: (1000 * (cpuSec(backend) - cpu)) / ids.length, walBytes: (await walBytes(w0, await wal())) / ids.length };
  cpu = cpuSec(backend);
  w0 = await wal();
  for (let round = 0; round < 10; round++)
    for (let i = 0; i < ids.length; i += 100) {
      await c.query(
        `UPDATE container_workers w SET last_heartbeat_at = NOW(), current_load = $2 FROM unnest($1::uuid[]) AS x(id) WHERE w.id = x.id`,
        [ids.slice(i, i + 100), '{"cpuPercent":12,"memoryPercent":40,"diskPercent":30,"containerCount":1,"seq":3}'],
      );
    }
  const batched = {
    cpuMs: (1000 * (cpuSec(backend) - cpu)) / (10 * ids.length),
    walBytes: (await walBytes(w0, await wal())) / (10 * ids.length),
  };
  await c.end();
  results.heartbeatWrite = { single, batched100: batched };
} finally {
  await pool.end().catch(() => undefined);
  await cleanup();
}

// Report.
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
console.log(
  `\nFleet bench on ${availableParallelism()} CPUs, 1-minute load average ${results.steps.map((s) => s.loadAverage.join('→')).join(', ')} during the windows (other work on the machine moves every figure)`,
);
console.log(
  `Heartbeats every ${HB_SEC} s (±5 %) per worker, real rate; one held call per worker (wait=${WAIT_SEC}); ${MEASURE_SEC} s window after a warm-up of at least ${HB_SEC + 5} s that waits (≤ ${WARM_CAP_SEC} s more) until 99 % of calls are held (${results.steps.map((s) => `${s.warmSec.toFixed(0)} s`).join(', ')}); usage at one batch per worker-hour; ${CLIENTS} client processes; panel pool of 10`,
);
console.log(
  'workers | load | beats/s | hb p50 / p99 ms | panel CPU % (ms/beat) | PG CPU % (ms/beat) | DB xacts/beat | loop delay p99 / max ms (panel; clients) | panel RSS MB | held | conns | lock waits | pool queue | change → all (p50 / max ms)',
);
for (const s of results.steps) {
  console.log(
    `${s.workers} | ${s.loadAverage.join('→')} | ${f(s.heartbeatsPerSec)} | ${f(s.hbP50Ms)} / ${f(s.hbP99Ms)} | ${f(s.panelCpuPct, 0)} (${f(s.panelCpuMsPerHeartbeat, 2)}) | ${f(s.pgCpuPct, 0)} (${f(s.pgCpuMsPerHeartbeat, 2)}) | ${f(s.dbTransactionsPerHeartbeat, 2)} | ${f(s.panelLagP99Ms, 0)} / ${f(s.panelLagMaxMs, 0)}; ${f(s.clientLagP99Ms, 0)} / ${f(s.clientLagMaxMs, 0)} | ${f(s.panelRssMb, 0)} | ${s.held} | ${s.connections} | ${s.maxLockWaits} | ${s.maxPoolWaiting} | ${s.changeDelivered}/${s.workers}: ${f(s.changeP50Ms, 0)} / ${f(s.changeMaxMs, 0)}`,
  );
}
const hw = results.heartbeatWrite;
console.log(
  `heartbeat write in PostgreSQL (SELECT … FOR UPDATE + UPDATE, one transaction): ${f(hw.single.cpuMs, 3)} ms CPU, ${f(hw.single.walBytes, 0)} B WAL; batched 100 per UPDATE: ${f(hw.batched100.cpuMs, 3)} ms CPU, ${f(hw.batched100.walBytes, 0)} B WAL per heartbeat`,
);
const last = results.steps.find((s) => s.workers === 10_000) ?? results.steps.at(-1);
if (last) {
  // The first limit: whichever resource is nearest its ceiling at the largest fleet.
  const use = {
    'panel CPU (one node thread)': last.panelCpuPct / 100,
    'PostgreSQL CPU (2 cores)': last.pgCpuPct / 200,
    'connections (fd limit 20000)': last.connections / 20000,
    'DB locks (waits seen)': last.maxLockWaits > 0 ? 1 : 0,
    // Queries queued for one of the pool's 10 connections: round trips, not CPU, are the ceiling.
    "the panel's database pool (queries queued)": last.maxPoolWaiting > 100 ? 1 : last.maxPoolWaiting / 100,
  };
  const [name, u] = Object.entries(use).sort((a, b) => b[1] - a[1])[0];
  console.log(`first limit at ${last.workers} workers: ${name} (${f(100 * u, 0)} % used)`);
  const ok = last.workers === 10_000 && last.hbP99Ms <= 100 && last.heartbeatErrors === 0;
  console.log(
    `TARGET 10,000 workers on one panel process, heartbeat p99 ≤ 100 ms: ${ok ? 'PASS' : 'MISS'} (p99 ${f(last.hbP99Ms)} ms at ${last.workers} workers, ${last.heartbeatErrors} errors ${JSON.stringify(last.heartbeatErrorKinds)}, load average ${last.loadAverage.join('→')} on ${availableParallelism()} CPUs)`,
  );
}
writeFileSync(new URL('./fleet-results.json', import.meta.url), JSON.stringify(results, null, 2));
process.exit(0);
