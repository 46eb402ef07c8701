// Simulated workers at the protocol level, a share of the fleet per process: each registers, then
// beats every HB_MS (±5 %, random phase), keeps one blocking desired-set call held (?wait=WAIT_SEC
// with If-None-Match) and re-asks when it returns, reports `running` after its set changed, and
// sends a usage batch at the agent's rate (one per hourly period). Plain node:http, no agent code:
// what is measured is the panel. Like the agent against a server that keeps idle connections 5 s,
// a call that comes long after the previous one (heartbeat, usage) asks for `Connection: close`
// rather than reusing a socket the server may be closing that instant (the agent's keepForMs).
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { signWorkerToken } from '../../dist/skypanel/jwt.js';

const { PANEL_URL, JWT_SECRET } = process.env;
const HB_MS = Number(process.env.HB_MS);
const WAIT_SEC = Number(process.env.WAIT_SEC);
const USAGE_PERIOD_MS = 3_600_000;
const CLOSE = { connection: 'close' };
const u = new URL(PANEL_URL);
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 256 });

function request(method, path, w, body, headers = {}, timeoutMs = 20_000) {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const started = performance.now();
    const req = http.request(
      {
        agent,
        host: u.hostname,
        localAddress: w.addr,
        port: u.port,
        method,
        path,
        headers: {
          authorization: `Bearer ${w.token}`,
          ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode,
            etag: res.headers.etag,
            text: Buffer.concat(chunks).toString(),
            ms: performance.now() - started,
          }),
        );
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, error: e.message, ms: performance.now() - started }));
    req.end(data);
  });
}

// The clients' own event-loop delay is part of every latency they measure: reported beside it.
const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();
let workers = [];
let running = false;
let measuring = false;
let beats = [];
let beatErrors = 0;
/** Failed beats by what failed: an HTTP status or the socket error, so a collapse says what it was. */
let beatErrorKinds = {};
const counts = { heartbeat: 0, held: 0, status: 0, usage: 0, register: 0 };
/** The pending change: when it was committed, and when each affected worker's held call brought it. */
let change;
const timers = new Set();
const later = (ms, fn) => {
  const t = setTimeout(() => {
    timers.delete(t);
    fn();
  }, ms);
  timers.add(t);
};

function heartbeatBody(w) {
  w.seq++;
  return {
    cpuPercent: 12,
    memoryPercent: 40,
    diskPercent: 30,
    containerCount: 1,
    bootId: w.bootId,
    seq: w.seq,
    sentAt: new Date().toISOString(),
    agentVersion: '0.1.0',
    swarmNodeId: null,
    dockerHealthy: true,
    draining: false,
  };
}

async function beat(w) {
  if (!running) return;
  // Only beats sent inside the window count: one sent during the start and answered in the window
  // would carry the start's tail (a SYN dropped then is retried for up to a minute) into it.
  const sentInWindow = measuring;
  const res = await request('POST', `/api/workers/${w.id}/heartbeat`, w, heartbeatBody(w), CLOSE);
  counts.heartbeat++;
  if (sentInWindow && measuring) {
    if (res.status === 200) beats.push(res.ms);
    else {
      beatErrors++;
      const kind = res.status === 0 ? res.error : String(res.status);
      beatErrorKinds[kind] = (beatErrorKinds[kind] ?? 0) + 1;
    }
  }
  later(Math.round(HB_MS * (0.95 + Math.random() * 0.1)), () => void beat(w));
}

async function hold(w) {
  if (!running) return;
  const res = await request(
    'GET',
    `/api/workers/${w.id}/deployments?wait=${WAIT_SEC}`,
    w,
    undefined,
    w.etag ? { 'if-none-match': w.etag } : {},
    ((WAIT_SEC * 17) / 16 + 10) * 1000,
  );
  counts.held++;
  if (res.status === 200) {
    const changedNow = w.etag !== undefined && res.etag !== w.etag;
    w.etag = res.etag;
    if (changedNow && change && change.affected.has(w.id) && !change.got.has(w.id)) {
      change.got.set(w.id, Date.now());
      const dep = JSON.parse(res.text).data.deployments[0];
      if (dep) void report(w, dep.id);
    }
  }
  if (res.status === 200 || res.status === 304) later(0, () => void hold(w));
  else later(5_000, () => void hold(w));
}

async function report(w, deploymentId) {
  w.reportSeq++;
  await request('POST', `/api/workers/${w.id}/deployments/${deploymentId}/status`, w, {
    status: 'running',
    bootId: w.bootId,
    seq: w.reportSeq,
    reportedAt: new Date().toISOString(),
  });
  counts.status++;
}

/** One usage batch for a random worker at the fleet's hourly rate (Poisson). */
function usageLoop() {
  if (!running || workers.length === 0) return;
  const rate = workers.length / USAGE_PERIOD_MS;
  later(Math.round(-Math.log(1 - Math.random()) / rate), async () => {
    const w = workers[Math.floor(Math.random() * workers.length)];
    if (w.deployment) {
      w.period++;
      const start = new Date(Date.UTC(2026, 0, 1) + w.period * USAGE_PERIOD_MS);
      const periodEnd = new Date(start.getTime() + USAGE_PERIOD_MS).toISOString();
      const usage = { cpuHours: 0.1, memoryGbHours: 0.05, storageGbHours: 0.01, networkGb: 0.001, samples: 60, complete: true };
      const rec = { ...w.deployment, periodStart: start.toISOString(), periodEnd, ...usage };
      await request('POST', `/api/workers/${w.id}/usage`, w, { records: [rec] }, CLOSE);
      counts.usage++;
    }
    usageLoop();
  });
}

async function pool(items, n, fn) {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await fn(items[i++]);
    }),
  );
}

/**
 * Each simulated worker calls from its own address in 127/8, as real workers come from their own
 * hosts. From one address, 10,000 workers' connections (one per beat, closed by the panel) would cycle
 * through 28,000 ports while the panel's side of each closed one sits in TIME_WAIT for 60 s, and a
 * new SYN that lands on such a 4-tuple waits a second for its retransmit: a loopback artefact.
 */
function loopbackAddress(id) {
  const b = Buffer.from(id.replace(/-/g, '').slice(0, 6), 'hex');
  return `127.${b[0]}.${b[1]}.${b[2]}`;
}

const REGISTER = {
  hostname: 'fleet',
  ipAddress: '127.0.0.1',
  capacity: { cpuCores: 2, memoryMb: 2048, diskGb: 20 },
  metadata: { agentVersion: '0.1.0', protocolVersion: 1, labels: {} },
};

process.on('message', async (m) => {
  if (m.cmd === 'register') {
    workers = m.ids.map((id) => ({
      id,
      token: signWorkerToken(JWT_SECRET, { workerId: id }),
      addr: loopbackAddress(id),
      bootId: `boot-${id.slice(0, 8)}`,
      seq: 0,
      reportSeq: 0,
      period: 0,
      etag: undefined,
      deployment: undefined,
    }));
    let failed = 0;
    await pool(workers, 16, async (w) => {
      const res = await request('POST', '/api/workers/register', w, REGISTER);
      counts.register++;
      if (res.status !== 201) failed++;
    });
    process.send({ kind: 'registered', failed });
  } else if (m.cmd === 'start') {
    for (const w of workers) w.deployment = m.deployments[w.id];
    running = true;
    for (const w of workers) {
      later(Math.floor(Math.random() * HB_MS), () => void beat(w));
      later(Math.floor(Math.random() * Math.min(HB_MS, 10_000)), () => void hold(w));
    }
    usageLoop();
    process.send({ kind: 'started' });
  } else if (m.cmd === 'measure') {
    measuring = true;
    beats = [];
    beatErrors = 0;
    beatErrorKinds = {};
    lag.reset();
    process.send({ kind: 'measuring' });
  } else if (m.cmd === 'collect') {
    measuring = false;
    process.send({
      kind: 'collected',
      beats,
      beatErrors,
      beatErrorKinds,
      counts,
      lagP99Ms: lag.percentile(99) / 1e6,
      lagMaxMs: lag.max / 1e6,
    });
  } else if (m.cmd === 'change') {
    change = { affected: new Set(m.affected), got: new Map() };
    process.send({ kind: 'change-armed' });
  } else if (m.cmd === 'change-status') {
    process.send({ kind: 'change-status', got: [...(change?.got.values() ?? [])], expected: change?.affected.size ?? 0 });
  } else if (m.cmd === 'stop') {
    running = false;
    for (const t of timers) clearTimeout(t);
    agent.destroy();
    process.exit(0);
  }
});
process.send({ kind: 'ready' });
