#!/usr/bin/env node
// Soak test (`npm run soak`, not part of the suite): the built agent runs 50 deployments on the local
// swarm against a reference control plane that fails ~20 % of requests (5xx, 429, resets, garbage,
// slow answers), with a little churn (rolling env updates). The agent's RSS (/proc) and V8 heap
// (its /metrics endpoint) are sampled every 2 s; the first and last windows are compared (RSS by
// median; heap by its floor, the lowest sample, i.e. what survives garbage collection, since the
// heap's sawtooth makes any single sample or median swing by a third): "flat within 10 %",
// falling, or GROWING. Exit code 1 when memory grew by more than 10 %, the agent died, a
// deployment was not running at the end, or a secret reached the logs; else 0.
//
//   SOAK_MINUTES      length of the measured soak after convergence (default 30)
//   SOAK_DEPLOYMENTS  number of deployments (default 50)
//   SOAK_FAULT_RATE   fraction of control-plane requests that fail (default 0.2)
//   SOAK_WARMUP_SEC   unmeasured time after convergence, under the same faults (default 60)
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { startReferenceControlPlane } = await import(join(root, 'dist/refcp/index.js'));
const { createDockerClient } = await import(join(root, 'dist/swarm/docker-client.js'));

const MINUTES = Number(process.env.SOAK_MINUTES ?? 30);
const COUNT = Number(process.env.SOAK_DEPLOYMENTS ?? 50);
const FAULT_RATE = Number(process.env.SOAK_FAULT_RATE ?? 0.2);
const WARMUP_MS = Number(process.env.SOAK_WARMUP_SEC ?? 60) * 1000;
const IMAGE = 'skypanel-test/busybox:1';
const SAMPLE_MS = 2_000;
const CHURN_MS = 60_000;
const log = (msg) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

if (!(MINUTES > 0) || !(COUNT > 0) || !(FAULT_RATE >= 0 && FAULT_RATE < 1)) {
  console.error('SOAK_MINUTES and SOAK_DEPLOYMENTS must be positive, SOAK_FAULT_RATE in [0, 1)');
  process.exit(2);
}

log('preparing Docker (scripts/ensure-docker.sh)');
execFileSync('bash', [join(root, 'scripts/ensure-docker.sh')], { stdio: 'inherit' });
const docker = createDockerClient({ timeoutMs: 30_000 });

// ---- a control plane that fails FAULT_RATE of the requests ----
const FAULTS = [
  { kind: 'status', status: 500 },
  { kind: 'status', status: 502, body: '<html>bad gateway</html>' },
  { kind: 'status', status: 503, retryAfter: '2' },
  { kind: 'status', status: 429, retryAfter: '3' },
  { kind: 'reset' },
  { kind: 'garbage' },
  { kind: 'delay', ms: 3_000 },
];
// Assigned once, but `roll` (the control plane's logger) reads it while the control plane starts.
// eslint-disable-next-line prefer-const
let cp;
/** One-shot fault for the next request, re-rolled after every answered request. */
const roll = () => {
  if (!cp) return;
  cp.setFault(Math.random() < FAULT_RATE ? { ...FAULTS[Math.floor(Math.random() * FAULTS.length)], count: 1 } : null);
};
cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, maxRecords: 1_000_000, logger: roll });
roll();

const dir = mkdtempSync(join(tmpdir(), 'skp-soak-'));
const workerId = randomUUID();
const token = cp.mintToken(workerId);
const config = join(dir, 'config.json');
const ORG = `org-soak-${workerId.slice(0, 8)}`;
const secretValues = [];
let rev = 0;
const deployment = (i) => {
  const value = `soak-secret-${i}-${randomUUID()}`;
  secretValues.push(value);
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug: `soak-${i}`,
    imageTag: IMAGE,
    desiredState: 'running',
    environmentVars: { INDEX: String(i), REV: '0' },
    resourceLimits: { cpuCores: 0.02, memoryMb: 8 },
    command: ['sleep', '86400'],
    secrets: [{ name: 'token', value, envVarName: 'TOKEN' }],
  };
};
const desired = Array.from({ length: COUNT }, (_, i) => deployment(i));

const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SKYPANEL_AGENT_')));
const bin = join(root, 'bin/skypanel-agent');
// Asynchronously: the control plane lives in this process and must keep answering. The token goes
// through a 0600 file, never the command line (which an error message would print).
const tokenFile = join(dir, 'worker.token');
writeFileSync(tokenFile, token, { mode: 0o600 });
// Registration is retried through the injected faults like any client would.
for (let attempt = 1; ; attempt++) {
  const r = await new Promise((resolve) =>
    execFile(
      process.execPath,
      [bin, 'register', '--control-plane', cp.url, '--token-file', tokenFile, '--config', config, '--heartbeat-interval', '2'],
      { env: baseEnv, timeout: 60_000 },
      (err, _out, stderr) => resolve({ err, stderr }),
    ),
  );
  if (!r.err) break;
  if (attempt >= 10) {
    console.error(`register kept failing: ${r.stderr}`);
    process.exit(1);
  }
  await sleep(500);
}
cp.setDeployments(workerId, desired);

const logFile = join(dir, 'agent.log');
const logFd = openSync(logFile, 'a');
const agent = spawn(process.execPath, [bin, 'run', '--config', config], {
  env: {
    ...baseEnv,
    SKYPANEL_AGENT_STATE_DIR: join(dir, 'state'),
    SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
    SKYPANEL_AGENT_METRICS_LISTEN: '127.0.0.1:0',
    SKYPANEL_AGENT_POLL_INTERVAL: '2',
    SKYPANEL_AGENT_RESYNC_INTERVAL: '10',
    SKYPANEL_AGENT_BACKOFF_CAP: '10',
  },
  stdio: ['ignore', logFd, logFd],
});
let agentExit = null;
agent.on('exit', (code, signal) => (agentExit = { code, signal }));
log(`agent pid ${agent.pid}, worker ${workerId}, control plane ${cp.url}, log ${logFile}`);

const readLog = () => readFileSync(logFile, 'utf8');
const logLines = () =>
  readLog()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return {};
      }
    });

let statusApi;
for (let i = 0; i < 300 && !statusApi; i++) {
  statusApi = logLines().find((l) => l.msg === 'agent started')?.statusApi;
  if (!statusApi) await sleep(100);
  if (agentExit) break;
}
if (!statusApi) {
  console.error(`agent did not start:\n${readLog().slice(-3000)}`);
  process.exit(1);
}

const running = () => desired.filter((d) => cp.deploymentStatusOf(workerId).get(d.id)?.status === 'running').length;
const services = async () => docker.listServices({ filters: JSON.stringify({ label: [`skypanel.worker.id=${workerId}`] }) });

async function sample() {
  const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
  let heap = NaN;
  // /metrics is the agent's own endpoint (no fault injection there), bearer-protected.
  const res = await fetch(`http://${statusApi}/metrics`, { headers: { authorization: `Bearer ${token}` } }).catch(() => undefined);
  if (res?.ok) heap = Number(/^nodejs_heap_used_bytes(?:\{[^}]*\})? ([0-9.e+]+)$/m.exec(await res.text())?.[1] ?? NaN);
  return { at: Date.now(), rss, heap };
}

let exitCode = 0;
const samples = [];
try {
  log(`waiting for ${COUNT} deployments to run (faults on ${Math.round(FAULT_RATE * 100)} % of requests)`);
  const convergeStart = Date.now();
  while (running() < COUNT) {
    if (agentExit) throw new Error(`agent exited during convergence: ${JSON.stringify(agentExit)}`);
    if (Date.now() - convergeStart > 10 * 60_000) throw new Error(`only ${running()}/${COUNT} running after 10 minutes`);
    await sleep(1_000);
  }
  log(
    `converged: ${COUNT}/${COUNT} running after ${Math.round((Date.now() - convergeStart) / 1000)} s; warming up ${WARMUP_MS / 1000} s, then soaking for ${MINUTES} min`,
  );
  // Convergence inflates memory the allocator hands back later; the baseline is taken once that settled.
  await sleep(WARMUP_MS);

  const start = Date.now();
  const end = start + MINUTES * 60_000;
  let nextChurn = start + CHURN_MS;
  let churns = 0;
  while (Date.now() < end) {
    if (agentExit) throw new Error(`agent exited during the soak: ${JSON.stringify(agentExit)}`);
    samples.push(await sample());
    if (Date.now() >= nextChurn) {
      // A little churn: two deployments get a new env value, i.e. a rolling update each.
      for (let k = 0; k < 2; k++) {
        const d = desired[Math.floor(Math.random() * desired.length)];
        d.environmentVars = { ...d.environmentVars, REV: String(++rev) };
      }
      cp.setDeployments(workerId, desired);
      churns++;
      nextChurn += CHURN_MS;
    }
    const last = samples[samples.length - 1];
    if (samples.length % 30 === 1)
      log(`t+${Math.round((Date.now() - start) / 1000)} s: rss ${mb(last.rss)}, heap ${mb(last.heap)}, running ${running()}/${COUNT}`);
    await sleep(Math.min(SAMPLE_MS, Math.max(0, end - Date.now())));
  }
  samples.push(await sample());

  // First and last fifth of the soak (at least 30 s each).
  const windowMs = Math.max(30_000, (end - start) / 5);
  const first = samples.filter((s) => s.at <= start + windowMs);
  const lastW = samples.filter((s) => s.at >= end - windowMs);
  const floor = (xs) => Math.min(...xs.filter((x) => Number.isFinite(x)));
  const rss0 = median(first.map((s) => s.rss));
  const rss1 = median(lastW.map((s) => s.rss));
  const heap0 = floor(first.map((s) => s.heap));
  const heap1 = floor(lastW.map((s) => s.heap));
  const heapMedian0 = median(first.map((s) => s.heap));
  const heapMedian1 = median(lastW.map((s) => s.heap));
  const drift = (a, b) => (b - a) / a;
  const flat = Math.abs(drift(rss0, rss1)) <= 0.1 && Math.abs(drift(heap0, heap1)) <= 0.1;
  const growing = drift(rss0, rss1) > 0.1 || drift(heap0, heap1) > 0.1;

  // Control-plane side: how much was failed, and what got through.
  const reqs = cp.requests;
  const faulted = reqs.filter((r) => r.fault !== undefined).length;
  const byFault = {};
  for (const r of reqs) if (r.fault) byFault[r.fault] = (byFault[r.fault] ?? 0) + 1;
  const heartbeats = cp.workers.get(workerId)?.heartbeats ?? 0;
  const reports = cp.reportsOf(workerId).length;
  const agentLog = readLog();
  const leaked = [token, ...secretValues].filter((s) => agentLog.includes(s) || JSON.stringify(reqs).includes(s)).length;
  const svcCount = (await services()).length;
  const stillRunning = running();
  if (growing || leaked > 0 || svcCount !== COUNT || stillRunning !== COUNT || agentExit !== null) exitCode = 1;

  console.log('');
  console.log(`soak: ${MINUTES} min after convergence, ${COUNT} deployments, ${churns} churn rounds (2 rolling updates each)`);
  console.log(
    `  control plane: ${reqs.length} requests, ${faulted} failed on purpose (${((100 * faulted) / reqs.length).toFixed(1)} %: ${JSON.stringify(byFault)}); ${heartbeats} heartbeats accepted, ${reports} status reports, ${cp.duplicateReports} duplicates`,
  );
  console.log(
    `  at the end: ${stillRunning}/${COUNT} reported running, ${svcCount} services on the swarm, agent alive: ${agentExit === null}, secret/token values in logs or requests: ${leaked}`,
  );
  console.log(
    `  RSS : median start ${mb(rss0)} → end ${mb(rss1)} (${(100 * drift(rss0, rss1)).toFixed(1)} %), ${first.length}/${lastW.length} samples per window, min/max over the soak ${mb(Math.min(...samples.map((s) => s.rss)))}/${mb(Math.max(...samples.map((s) => s.rss)))}`,
  );
  console.log(
    `  heap: floor start ${mb(heap0)} → end ${mb(heap1)} (${(100 * drift(heap0, heap1)).toFixed(1)} %); median ${mb(heapMedian0)} → ${mb(heapMedian1)} (${(100 * drift(heapMedian0, heapMedian1)).toFixed(1)} %); min/max over the soak ${mb(Math.min(...samples.map((s) => s.heap)))}/${mb(Math.max(...samples.map((s) => s.heap)))}`,
  );
  console.log(`  verdict: ${flat ? 'flat within 10 %' : growing ? 'GROWING by more than 10 %' : 'not flat, but falling (no growth)'}`);
} catch (err) {
  console.error(`soak failed: ${err.message}\n${readLog().slice(-3000)}`);
  exitCode = 1;
} finally {
  if (agentExit === null) {
    agent.kill('SIGTERM');
    await Promise.race([new Promise((r) => agent.once('exit', r)), sleep(10_000)]);
  }
  closeSync(logFd);
  log('cleaning up services, secrets and networks');
  for (const s of await services().catch(() => []))
    await docker
      .getService(s.ID)
      .remove()
      .catch(() => {});
  const filters = JSON.stringify({ label: [`skypanel.worker.id=${workerId}`] });
  for (let attempt = 0; attempt < 15; attempt++) {
    const secrets = await docker.listSecrets({ filters }).catch(() => []);
    const networks = await docker.listNetworks({ filters }).catch(() => []);
    if (secrets.length === 0 && networks.length === 0) break;
    for (const s of secrets)
      await docker
        .getSecret(s.ID)
        .remove()
        .catch(() => {});
    for (const n of networks)
      await docker
        .getNetwork(n.Id)
        .remove()
        .catch(() => {});
    await sleep(1_000);
  }
  await cp.close();
}
process.exit(exitCode);
