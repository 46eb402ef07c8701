// Footprint: `skypanel-agent run` with 10 s heartbeats and 100 converged deployments, measured over
// the same window as a bare Node.js (`setInterval(()=>{},1000)`) and as a Node.js that has only
// loaded the agent's code (`import('dist/cli/main.js')`, nothing run): that third figure splits the
// agent's RSS into "code loaded" and "state and work".
//
// The agent and the code-only node run with the shipped systemd unit's node flags and Environment=
// (V8 and malloc settings, see lib.mjs); the bare node runs as `node` does by default.
//
// The agent talks to Docker through a counting pass-through socket (docker-proxy.mjs), and its CPU
// is sampled every 200 ms, so the window's CPU can be attributed to what the agent was doing then
// (heartbeat, poll, reconcile pass, usage sampling, ...) from the calls it made.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { rememberWorker } from './cleanup.mjs';
import { startDockerProxy } from './docker-proxy.mjs';
import { DEFAULT_USAGE_SAMPLE_INTERVAL_SEC } from '../dist/agent/config-schema.js';
import {
  AgentProc,
  ROOT,
  cpuOf,
  median,
  registerWorker,
  requestsOf,
  rssKiB,
  schedCpuSec,
  sleep,
  sleeperDeployment,
  spawnBareNode,
  spawnNodeAsUnit,
  threadCpuSec,
  waitFor,
} from './lib.mjs';

const SAMPLE_MS = 200;

function dockerdPid() {
  try {
    const pid = Number(readFileSync('/var/run/docker.pid', 'utf8').trim());
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'dockerd' ? pid : undefined;
  } catch {
    return undefined;
  }
}

function spawnCodeOnlyNode() {
  // main.js loads each command's module lazily: `run` is what the agent loads.
  const main = join(ROOT, 'dist', 'cli', 'main.js');
  const run = join(ROOT, 'dist', 'cli', 'run.js');
  const code = `import(${JSON.stringify(main)}).then(()=>import(${JSON.stringify(run)})).then(()=>setInterval(()=>{},1000))`;
  const child = spawnNodeAsUnit(['-e', code], { stdio: 'ignore' });
  return {
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.on('close', r)));
    },
  };
}

/** What an Engine API route or control-plane request says the agent was doing. */
function activityOfDockerRoute(route) {
  if (route === 'GET /info') return 'heartbeat';
  if (route === 'GET /services' || route === 'GET /tasks') return 'reconcile pass';
  if (route.startsWith('GET /containers')) return 'usage sampling';
  return `other Engine API (${route})`;
}

function activityOfCpRequest(r) {
  if (r.path.endsWith('/heartbeat')) return 'heartbeat';
  if (r.path.endsWith('/deployments')) return 'desired-state poll';
  if (r.path.endsWith('/status')) return 'status reports';
  if (r.path.endsWith('/usage')) return 'usage delivery';
  return `other control-plane request (${r.path.split('/').pop()})`;
}

/**
 * CPU samples → seconds per hour by activity. An interval is charged to the activities whose calls
 * fall in it (shared evenly); an interval without calls right after one with calls is the tail of
 * that work (parsing the answers); any other is background: timers, GC, the status server.
 */
function attribute(samples, events, windowSec) {
  const out = {};
  let previous = [];
  for (let i = 1; i < samples.length; i++) {
    const [t0, c0] = samples[i - 1];
    const [t1, c1] = samples[i];
    const inside = [...new Set(events.filter(([t]) => t > t0 - 50 && t <= t1).map(([, a]) => a))];
    const classes = inside.length > 0 ? inside : previous.length > 0 ? previous : ['background (timers, GC, status server)'];
    for (const c of classes) out[c] = (out[c] ?? 0) + (c1 - c0) / classes.length;
    previous = inside;
  }
  return Object.fromEntries(
    Object.entries(out)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => [k, (v / windowSec) * 3600]),
  );
}

export async function startFootprint(cp, dir, { organizationId, count = 100 }) {
  const w = await registerWorker(cp, dir, { heartbeatSec: 10 });
  rememberWorker(w.workerId);
  const deployments = Array.from({ length: count }, (_, i) => sleeperDeployment(organizationId, `fp-${i}`));
  // Assigned before the agent starts: its first poll gets all of them and it creates them itself.
  cp.setDeployments(w.workerId, deployments);
  const proxy = await startDockerProxy(join(dir, 'docker-proxy.sock'));
  const baseEnv = { SKYPANEL_AGENT_DOCKER_SOCKET: proxy.socketPath };
  let agent = new AgentProc(w.config, baseEnv);
  const bare = spawnBareNode();
  const codeOnly = spawnCodeOnlyNode();
  const startedAt = Date.now();
  const running = () => [...cp.deploymentStatusOf(w.workerId).values()].filter((r) => r.status === 'running').length;
  return {
    workerId: w.workerId,
    get agent() {
      return agent;
    },
    count,
    running,
    /**
     * The same agent (same config and state directory) restarted with extra environment; resolves
     * once it has polled and its status reports have been quiet for `quietMs`.
     */
    async restart(env, { quietMs = 25_000, unitEnv = true } = {}) {
      await agent.stop();
      const polls = requestsOf(cp, w.workerId, '/deployments', 'GET').length;
      agent = new AgentProc(w.config, { ...baseEnv, ...env }, agent.stateDir, { unitEnv });
      await waitFor(
        () => requestsOf(cp, w.workerId, '/deployments', 'GET').length > polls,
        30_000,
        () => `a poll after the restart\n${agent.tail()}`,
      );
      let reports = cp.reportsOf(w.workerId).length;
      let quietSince = Date.now();
      await waitFor(
        () => {
          if (!agent.alive()) throw new Error(`restarted agent exited\n${agent.tail()}`);
          const now = cp.reportsOf(w.workerId).length;
          if (now !== reports) {
            reports = now;
            quietSince = Date.now();
          }
          return Date.now() - quietSince >= quietMs;
        },
        120_000,
        'status reports to go quiet after the restart',
        250,
      );
    },
    /** Until the control plane holds `running` for all, then until reports have been quiet for `quietMs`. */
    async converge({ timeoutMs = 300_000, quietMs = 10_000, log } = {}) {
      let lastLogged = -1;
      await waitFor(
        () => {
          const n = running();
          if (n !== lastLogged && (n === count || n - lastLogged >= 25)) {
            log?.(`footprint: ${n}/${count} running at the control plane after ${Math.round((Date.now() - startedAt) / 1000)} s`);
            lastLogged = n;
          }
          if (!agent.alive()) throw new Error(`footprint agent exited\n${agent.tail()}`);
          return n === count;
        },
        timeoutMs,
        () => `${count} deployments running (have ${running()})\n${agent.tail()}`,
        250,
      );
      const convergedSec = (Date.now() - startedAt) / 1000;
      let reports = cp.reportsOf(w.workerId).length;
      let quietSince = Date.now();
      await waitFor(
        () => {
          const now = cp.reportsOf(w.workerId).length;
          if (now !== reports) {
            reports = now;
            quietSince = Date.now();
          }
          return Date.now() - quietSince >= quietMs;
        },
        120_000,
        'status reports to go quiet',
        250,
      );
      // The usage sampler meets the new containers at its first sample after they start (once a
      // sample interval): one list and one inspect each. That is start-up work, not steady state:
      // wait until a whole interval has passed without an inspect.
      const inspectQuietMs = (DEFAULT_USAGE_SAMPLE_INTERVAL_SEC + 5) * 1000;
      const quietFrom = Date.now();
      await waitFor(
        () => {
          const last = proxy.calls.findLast(([, route]) => route === 'GET /containers/{id}/json')?.[0] ?? 0;
          return Date.now() - Math.max(quietFrom, last) >= inspectQuietMs;
        },
        300_000,
        "the usage sampler's discovery of the new containers to finish",
        500,
      );
      return convergedSec;
    },
    /** CPU and RSS of the agent, the bare node and the code-only node over the same window. */
    async measure(windowSec) {
      const procs = { agent: agent.pid, bare: bare.pid, codeOnly: codeOnly.pid };
      const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuOf(pid)]));
      const dockerd = dockerdPid();
      const dockerd0 = dockerd ? cpuOf(dockerd).stat : NaN;
      const threads0 = threadCpuSec(agent.pid);
      const rss = { agent: [], bare: [], codeOnly: [] };
      const cpSince = cp.requests.length;
      const from = Date.now();
      const samples = [[from, schedCpuSec(agent.pid)]];
      const end = from + windowSec * 1000;
      let nextRss = from;
      while (Date.now() < end) {
        if (Date.now() >= nextRss) {
          for (const [k, pid] of Object.entries(procs)) rss[k].push(rssKiB(pid));
          nextRss += 5_000;
        }
        await sleep(Math.min(SAMPLE_MS, Math.max(0, end - Date.now())));
        samples.push([Date.now(), schedCpuSec(agent.pid)]);
      }
      const to = Date.now();
      const sec = (to - from) / 1000;
      const cpu1 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuOf(pid)]));
      for (const [k, pid] of Object.entries(procs)) rss[k].push(rssKiB(pid));
      const perHour = (k, clock) => ((cpu1[k][clock] - cpu0[k][clock]) / sec) * 3600;
      // Machine-wide: includes Docker work for anything else running on this host.
      const out = { windowSec: sec, dockerdCpuSecPerHour: dockerd ? ((cpuOf(dockerd).stat - dockerd0) / sec) * 3600 : null };
      for (const k of Object.keys(procs)) {
        out[k] = {
          rssMiB: median(rss[k]) / 1024,
          rssMaxMiB: Math.max(...rss[k]) / 1024,
          cpuSecPerHour: perHour(k, 'stat'),
          cpuSecPerHourSched: perHour(k, 'sched'),
        };
      }
      const prefix = `/api/workers/${w.workerId}/`;
      const cpEvents = cp.requests.slice(cpSince).filter((r) => r.path.startsWith(prefix) && r.at >= from && r.at <= to);
      const dockerEvents = proxy.calls.filter(([t]) => t >= from && t <= to);
      const events = [
        ...cpEvents.map((r) => [r.at, activityOfCpRequest(r)]),
        ...dockerEvents.map(([t, route]) => [t, activityOfDockerRoute(route)]),
      ];
      const perHourCount = (n) => Math.round((n / sec) * 3600);
      out.inWindow = {
        heartbeats: cpEvents.filter((r) => r.path.endsWith('/heartbeat')).length,
        polls: cpEvents.filter((r) => r.path.endsWith('/deployments')).length,
        statusReports: cpEvents.filter((r) => r.path.endsWith('/status')).length,
        engineApiCalls: dockerEvents.length,
        engineApiCallsPerHourByRoute: Object.fromEntries(
          Object.entries(proxy.countBetween(from, to))
            .sort((a, b) => b[1] - a[1])
            .map(([k, v]) => [k, perHourCount(v)]),
        ),
      };
      out.agentCpuSecPerHourByActivity = attribute(samples, events, sec);
      const threads1 = threadCpuSec(agent.pid);
      out.agentCpuSecPerHourByThread = Object.fromEntries(
        Object.entries(threads1)
          .map(([k, v]) => [k, ((v - (threads0[k] ?? 0)) / sec) * 3600])
          .sort((a, b) => b[1] - a[1]),
      );
      out.stillRunning = running();
      return out;
    },
    async stop() {
      await Promise.all([agent.stop(), bare.stop(), codeOnly.stop()]);
      await proxy.close();
    },
  };
}
