// Runs in its own process (started by reconcile.mjs) so process.cpuUsage() sees the reconciler and
// nothing else: no control plane, no agents. The Reconciler, SwarmPort and Engine API client are
// the agent's own; the client's calls are counted with the agent's countDockerCalls.
//
// argv: workerId nodeId organizationPrefix sizes(comma separated, ascending) passes perOrganization
// stdout: one line `RESULT {json}` at the end; progress on stderr.
import { Reconciler } from '../dist/agent/deployments/reconciler.js';
import { parseDesiredSet } from '../dist/protocol/deployment.js';
import { countDockerCalls } from '../dist/swarm/call-counter.js';
import { createDockerClient } from '../dist/swarm/docker-client.js';
import { createSwarmPort } from '../dist/swarm/swarm-port.js';
import { median, sleep, sleeperDeployment } from './lib.mjs';

const [workerId, nodeId, organizationPrefix, sizesArg, passesArg, perOrgArg] = process.argv.slice(2);
const PER_ORGANIZATION = Number(perOrgArg);
const sizes = sizesArg.split(',').map(Number);
const PASSES = Number(passesArg);
const say = (m) => process.stderr.write(`${m}\n`);

const docker = createDockerClient({ timeoutMs: 60_000 });
// Counts every request made through the client, keyed `METHOD /path` (no query string).
const counter = countDockerCalls(docker);
/** The calls counted since the last reset, one entry per call; swarm and container ids folded so calls group by route. */
const countedCalls = () =>
  [...counter.byPath].flatMap(([route, n]) => Array(n).fill(route.replace(/\/(?:[a-z0-9]{25}|[0-9a-f]{64})(?=\/|$)/g, '/{id}')));

const noop = () => {};
const warnings = [];
const logger = {
  trace: noop,
  debug: noop,
  info: noop,
  error: noop,
  fatal: noop,
  warn: (o, m) => warnings.push(m ?? JSON.stringify(o)),
  child: () => logger,
};

let onPass = noop;
const reconciler = new Reconciler({
  port: createSwarmPort(docker, { workerId, nodeId: () => nodeId }),
  workerId,
  nodeId: () => nodeId,
  ipAddress: '127.0.0.1',
  publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
  // No timer-driven pass may land inside a measurement: passes happen only when asked for.
  resyncMs: 3_600_000,
  logger,
  onStatus: noop,
  onPass: (p) => onPass(p),
});

/** One pass, asked for now; CPU and Engine API calls from the trigger to the end of the pass. */
function pass(timeoutMs = 600_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`reconcile pass did not finish in ${timeoutMs / 1000} s`)), timeoutMs);
    counter.reset();
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    onPass = (p) => {
      const c = process.cpuUsage(c0);
      onPass = noop;
      clearTimeout(timer);
      resolve({ cpuMs: (c.user + c.system) / 1000, wallMs: performance.now() - t0, calls: countedCalls(), actions: p.actions });
    };
    reconciler.trigger();
  });
}

function desiredSet(deployments) {
  const parsed = parseDesiredSet({ success: true, data: { deployments } });
  if (!parsed.ok || parsed.rejected.length > 0)
    throw new Error(`bench desired set rejected: ${JSON.stringify(parsed.ok ? parsed.rejected : parsed.error)}`);
  return { deployments: parsed.deployments, rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() };
}

const results = [];
const raw = [];
reconciler.start();
try {
  for (const n of sizes) {
    while (raw.length < n)
      raw.push(sleeperDeployment(`${organizationPrefix}-rc-${Math.floor(raw.length / PER_ORGANIZATION)}`, `rc-${raw.length}`, 'stopped'));
    const t0 = Date.now();
    let first = true;
    // Converge: every deployment has its service and a pass plans nothing.
    for (;;) {
      if (Date.now() - t0 > 480_000) throw new Error(`N=${n} did not converge in 8 min; warnings: ${warnings.slice(-5).join(' | ')}`);
      if (first) {
        onPass = noop;
        const done = new Promise((r) => (onPass = r));
        reconciler.setDesired(desiredSet(raw)); // triggers the pass
        await done;
        first = false;
      } else {
        await pass();
      }
      const views = reconciler.views();
      const last = reconciler.lastPass;
      if (views.length === n && views.every((v) => v.swarmServiceId) && last.actions.length === 0) break;
      if (last.actions.length === 0) await sleep(1_000); // something waits out a retry backoff
    }
    const createSec = (Date.now() - t0) / 1000;
    const nodeTasks = (await docker.request({ method: 'GET', path: '/tasks', query: { filters: { node: [nodeId] } } })).length;
    await pass(); // warm-up: not counted
    const passes = [];
    for (let i = 0; i < PASSES; i++) passes.push(await pass());
    const r = {
      n,
      convergeSec: createSec,
      nodeTasks,
      passes: passes.length,
      callsPerPass: passes.map((p) => p.calls.length),
      callRoutes: [...new Set(passes.flatMap((p) => p.calls))],
      cpuMs: passes.map((p) => Math.round(p.cpuMs * 10) / 10),
      wallMs: passes.map((p) => Math.round(p.wallMs * 10) / 10),
      medianCpuMs: median(passes.map((p) => p.cpuMs)),
      maxCpuMs: Math.max(...passes.map((p) => p.cpuMs)),
      medianWallMs: median(passes.map((p) => p.wallMs)),
      actionsInMeasuredPasses: passes.reduce((s, p) => s + p.actions.length, 0),
    };
    say(`reconcile N=${n}: converged in ${createSec.toFixed(1)} s; calls/pass ${r.callsPerPass.join(',')}; CPU ms ${r.cpuMs.join(', ')}`);
    results.push(r);
  }
} finally {
  await reconciler.stop();
  counter.restore();
  docker.close();
}
process.stdout.write(`RESULT ${JSON.stringify({ results, warnings: warnings.slice(-20) })}\n`);
process.exit(0);
