#!/usr/bin/env node
// `npm run bench`: builds the agent, readies Docker, starts the reference control plane in this
// process and measures footprint, heartbeat cost, start-up, reconcile passes, desired→applied
// latency and body sizes side by side in one run. Prints a table and writes bench/results.json.
// Not part of the test suite. Every wait is bounded; every process and Docker object it makes is
// removed on the way out (also after a failure or Ctrl-C).
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const T0 = Date.now();
const HARD_LIMIT_MS = 25 * 60_000;
/**
 * The footprint window: the 300 s default resync interval, so it holds one whole reconcile cycle,
 * and five meter saves, twenty polls and thirty heartbeats (shorter windows were ±0.5 s/h noisy).
 */
const WINDOW_SEC = Math.max(60, Number(process.env.BENCH_WINDOW_SEC) || 300);
const log = (m) => console.log(`[bench ${String(Math.round((Date.now() - T0) / 1000)).padStart(3)} s] ${m}`);

function must(cmd, args, timeoutMs) {
  log(`${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', timeout: timeoutMs });
  if (r.status !== 0) {
    console.error(`bench: \`${cmd} ${args.join(' ')}\` failed (${r.error?.message ?? r.signal ?? `exit ${r.status}`})`);
    process.exit(1);
  }
}

must('npm', ['run', 'build'], 300_000);
must('bash', ['scripts/ensure-docker.sh'], 20 * 60_000);

// Only now: these import the freshly built dist/.
const { startReferenceControlPlane } = await import('../dist/refcp/index.js');
const { defaultSocketPath } = await import('../dist/swarm/docker-client.js');
// The bench's own look at Docker (cleanup, latency phases, the swarm start baseline) goes through
// dockerode, a dev dependency; the agent's code under measurement uses its own Engine API client.
const { default: Docker } = await import('dockerode');
const { AGENT_VERSION } = await import('../dist/version.js');
const { RESULTS_FILE, TENTH_CPU_CORES, UNIT_ENV, UNIT_NODE_ARGS, killAllChildren } = await import('./lib.mjs');
const { cleanupBench, rememberOrganization } = await import('./cleanup.mjs');
const { measureSwarmStart } = await import('./swarm-start.mjs');
const { measureStartup } = await import('./startup.mjs');
const { startFootprint } = await import('./footprint.mjs');
const { measureCodeRss } = await import('./code-rss.mjs');
const { startHeartbeatAgents, measureHeartbeat } = await import('./heartbeat.mjs');
const { measureApplyLatency } = await import('./latency.mjs');
const { measureReconcile } = await import('./reconcile.mjs');
const { bodySizes, buildRows, printTable } = await import('./report.mjs');

const docker = new Docker({ socketPath: defaultSocketPath(), timeout: 60_000 });
// It announces the blocking desired-set query with the panel half's default wait, as a SkyPanelV2
// running the panel module does: the agents measured here use it, as they would there.
const cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, maxRecords: 500_000, blockingWaitSec: 300 });
const dir = mkdtempSync(join(tmpdir(), 'skp-bench-'));
// One organization (so one overlay network) per phase. An org network is a /24 and every service
// takes a VIP on it plus an address per task: ~250 endpoints fill it, and tasks then stay `new`
// forever. The phases together would exceed that; each stays well below it.
const ORG_PREFIX = `skypanel-bench-${randomUUID().slice(0, 8)}`;
const org = (phase) => {
  const id = `${ORG_PREFIX}-${phase}`;
  rememberOrganization(id);
  return id;
};

let finishing;
/** Stop every process the bench started, remove every bench object from Docker, close the control plane. */
function finish(code, why) {
  finishing ??= (async () => {
    if (why) console.error(`bench: ${why}`);
    killAllChildren();
    try {
      log('cleaning up bench services, secrets and networks');
      const c = await cleanupBench(docker, { log });
      log(
        `cleanup: ${c.services} services, ${c.secrets} secrets, ${c.networks} networks removed${c.leftovers.length ? `; LEFT: ${c.leftovers.join('; ')}` : ''}`,
      );
      if (c.leftovers.length) code ||= 1;
    } catch (e) {
      console.error(`bench: cleanup failed: ${e.message} (bench/.state.json keeps the worker ids; the next run retries)`);
      code ||= 1;
    }
    await cp.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    process.exit(code);
  })();
  return finishing;
}
process.once('SIGINT', () => finish(130, 'interrupted'));
process.once('SIGTERM', () => finish(143, 'terminated'));
setTimeout(() => finish(1, `hard limit of ${HARD_LIMIT_MS / 60_000} min reached`), HARD_LIMIT_MS).unref();

const errors = [];
async function attempt(name, fn) {
  try {
    return await fn();
  } catch (e) {
    errors.push(`${name}: ${e.message}`);
    log(`${name} FAILED: ${e.message.slice(0, 3000)}`);
    return { error: e.message.split('\n')[0] };
  }
}

const results = {
  startedAt: new Date(T0).toISOString(),
  agentNodeArgs: UNIT_NODE_ARGS,
  agentEnvironment: UNIT_ENV,
  machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, kernel: release(), node: process.version, agentVersion: AGENT_VERSION },
};

try {
  // Leftovers of a run that was killed before it could clean up.
  const stale = await cleanupBench(docker, { log });
  if (stale.services + stale.networks + stale.secrets > 0) log(`removed leftovers of an earlier run: ${JSON.stringify(stale)}`);
  const info = await docker.info();
  const nodeId = info.Swarm?.NodeID;
  if (!nodeId || !info.Swarm?.ControlAvailable) throw new Error('this engine is not a swarm manager');
  results.machine.docker = info.ServerVersion;

  log('code RSS: what importing each dependency costs');
  results.codeRss = await attempt('code RSS', () => measureCodeRss());

  log('start-up: 5 × spawn → first heartbeat');
  results.startup = await attempt('start-up', () => measureStartup(cp, dir, { log }));

  // Before the footprint agent exists: a burst of container starts stalls dockerd's GET /info for
  // seconds, and every heartbeat makes one, so heartbeats are measured on a quiet engine.
  log('heartbeat cost: an agent beating every 1 s next to one beating every 600 s');
  const hbAgents = await startHeartbeatAgents(cp, dir);
  try {
    results.heartbeat = await attempt('heartbeat', () => measureHeartbeat(cp, hbAgents, dir, { windowSec: 60, straceSec: 15, log }));
  } finally {
    await Promise.all([hbAgents.beating.agent.stop(), hbAgents.idle.agent.stop()]);
  }

  log('footprint: agent with 100 deployments (10 s heartbeats) + bare node + code-only node');
  const fp = await startFootprint(cp, dir, { organizationId: org('footprint'), count: 100 });

  results.footprint = await attempt('footprint', async () => {
    const convergedSec = await fp.converge({ log });
    log(
      `footprint: converged after ${convergedSec.toFixed(0)} s; measuring ${WINDOW_SEC} s of steady state (desired→applied at the default 30 s poll runs alongside, in another agent)`,
    );
    const [measure, latency] = await Promise.all([
      fp.measure(WINDOW_SEC),
      attempt('desired→applied (30 s poll)', () =>
        measureApplyLatency(cp, dir, docker, { organizationId: org('p30'), samples: 10, spacingMs: 7_000, label: 'p30', log }),
      ),
    ]);
    results.latencyDefault = latency;
    if (measure.stillRunning !== fp.count)
      throw new Error(`only ${measure.stillRunning}/${fp.count} deployments were running at the end of the window`);
    return { count: fp.count, convergedSec, measure };
  });
  results.latencyDefault ??= await attempt('desired→applied (30 s poll)', () =>
    measureApplyLatency(cp, dir, docker, { organizationId: org('p30'), samples: 10, spacingMs: 7_000, label: 'p30', log }),
  );

  log('reconcile: in-process passes at N = 10, 100, 500 (stopped services; the 100 running ones above stay on the node)');
  results.reconcile = await attempt('reconcile', () => measureReconcile({ nodeId, organizationPrefix: ORG_PREFIX, log }));

  results.sizes = bodySizes(cp, fp.workerId);

  // The same footprint agent restarted with usage sampling every 300 s instead of the default: what
  // the steady state costs without most of it (diagnosis, no target).
  log('footprint again, restarted with SKYPANEL_AGENT_USAGE_SAMPLE_INTERVAL=300: 60 s');
  results.footprintSlowUsage = await attempt('footprint, slow usage sampling', async () => {
    if (results.footprint.error) throw new Error('skipped: the footprint did not converge');
    await fp.restart({ SKYPANEL_AGENT_USAGE_SAMPLE_INTERVAL: '300' });
    return { count: fp.count, measure: await fp.measure(60) };
  });
  // The same agent without the unit's node flags and Environment= (V8 and malloc settings): what they are worth.
  log(`footprint again, restarted without the unit's node flags and environment (${JSON.stringify([...UNIT_NODE_ARGS, UNIT_ENV])}): 60 s`);
  results.footprintNoUnitEnv = await attempt('footprint, no unit environment', async () => {
    if (results.footprint.error) throw new Error('skipped: the footprint did not converge');
    await fp.restart({}, { unitEnv: false });
    return { count: fp.count, measure: await fp.measure(60) };
  });
  await fp.stop();

  // The swarm's own start time and the fast-poll latency, back to back on the same engine (the
  // footprint's 100 containers still run, no agent is busy), so the one is a fair bound for the other.
  log('swarm start time: 5 × service create → running (dockerode)');
  results.swarmStart = await attempt('swarm start', () => measureSwarmStart(docker, { nodeId, organizationId: org('start'), log }));
  log('desired→applied with SKYPANEL_AGENT_POLL_INTERVAL=2');
  results.latencyFast = await attempt('desired→applied (2 s poll)', () =>
    measureApplyLatency(cp, dir, docker, { organizationId: org('p2'), pollSec: 2, samples: 10, spacingMs: 3_300, label: 'p2', log }),
  );
  // A second figure, not the target's: the same with a deployment whose CPU limit barely slows its own start.
  log(`swarm start and desired→applied at the default intervals again, with ${TENTH_CPU_CORES}-core deployments`);
  results.swarmStartTenth = await attempt('swarm start, 0.1 cores', () =>
    measureSwarmStart(docker, { nodeId, organizationId: org('start-tenth'), cpuCores: TENTH_CPU_CORES, log }),
  );
  results.latencyDefaultTenth = await attempt('desired→applied (30 s poll, 0.1 cores)', () =>
    measureApplyLatency(cp, dir, docker, {
      organizationId: org('p30-tenth'),
      samples: 10,
      spacingMs: 7_000,
      label: 'p30-tenth',
      cpuCores: TENTH_CPU_CORES,
      log,
    }),
  );
} catch (e) {
  errors.push(e.message);
  log(`FAILED: ${e.message}`);
}

killAllChildren();
results.rows = buildRows(results);
results.errors = errors;
results.wallSec = (Date.now() - T0) / 1000;
writeFileSync(RESULTS_FILE, JSON.stringify(results, null, 2) + '\n');
console.log(`\n${printTable(results.rows)}\n`);
const misses = results.rows.filter((r) => r.verdict === 'MISS').length;
log(
  `done in ${results.wallSec.toFixed(0)} s before cleanup; ${misses} MISS; results in bench/results.json${errors.length ? `; ${errors.length} measurement(s) FAILED` : ''}`,
);
await finish(errors.length ? 1 : 0);
