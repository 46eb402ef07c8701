// Desired → applied: from a new deployment appearing at the control plane (setDeployments) to the
// control plane receiving its `running` report. New deployments are added on a fixed spacing that is
// not a divisor of the poll interval, so the samples land at spread-out phases of the poll cycle
// instead of all right after (or right before) a poll.
import { LABEL } from '../dist/domain/labels.js';
import { rememberWorker } from './cleanup.mjs';
import {
  AgentProc,
  SLEEPER_CPU_CORES,
  firstRunningAt,
  max,
  median,
  registerWorker,
  requestsOf,
  sleep,
  sleeperDeployment,
  waitFor,
} from './lib.mjs';

/** For a timeout message: what Swarm says about the tasks of deployments that never ran. */
async function stuckTasks(docker, workerId, ids) {
  try {
    const services = await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) });
    const stuck = services.filter((s) => ids.includes(s.Spec?.Labels?.[LABEL.deploymentId])).map((s) => s.ID);
    if (stuck.length === 0) return 'no services at all';
    const tasks = await docker.listTasks({ filters: JSON.stringify({ service: stuck }) });
    return (
      tasks
        .map((t) => `${t.Status?.State}: ${t.Status?.Err || t.Status?.Message}`)
        .slice(0, 5)
        .join('; ') || `${stuck.length} services without tasks`
    );
  } catch (e) {
    return `tasks not listed: ${e.message}`;
  }
}

/**
 * Splits each sample into: waiting for the call 3 that brought it (added → that GET answered 200;
 * a held call arrived before the change, so its answer time counts, not its arrival),
 * the agent creating the service (poll → service CreatedAt), the swarm starting it (CreatedAt → task
 * running, Docker's own timestamps) and the agent noticing and reporting it (running → report
 * received). Times are ms; all clocks are this machine's.
 */
async function phasesOf(cp, docker, workerId, added, reportedAt) {
  const polls = requestsOf(cp, workerId, '/deployments', 'GET')
    .filter((r) => r.status === 200)
    .map((r) => r.answeredAt ?? r.at)
    .sort((a, b) => a - b);
  const services = await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) });
  const byDeployment = new Map(services.map((s) => [s.Spec?.Labels?.[LABEL.deploymentId], s]));
  const tasks = await docker.listTasks({ filters: JSON.stringify({ service: services.map((s) => s.ID) }) });
  const rows = added.map((a) => {
    const svc = byDeployment.get(a.id);
    const pollAt = polls.find((t) => t >= a.at);
    const createdAt = svc ? Date.parse(svc.CreatedAt) : NaN;
    const runningAt = Math.min(
      ...tasks.filter((t) => t.ServiceID === svc?.ID && t.Status?.State === 'running').map((t) => Date.parse(t.Status.Timestamp)),
    );
    return {
      pollWait: pollAt - a.at,
      agentCreate: createdAt - pollAt,
      swarmStart: runningAt - createdAt,
      agentObserveAndReport: reportedAt.get(a.id) - runningAt,
    };
  });
  const keys = Object.keys(rows[0] ?? {});
  // Everything but the swarm's own create → running: what the agent and the panel add to it.
  const share = rows.map((r) => r.pollWait + r.agentCreate + r.agentObserveAndReport).filter(Number.isFinite);
  return {
    medianMs: Object.fromEntries(keys.map((k) => [k, median(rows.map((r) => r[k]).filter(Number.isFinite))])),
    maxMs: Object.fromEntries(keys.map((k) => [k, max(rows.map((r) => r[k]).filter(Number.isFinite))])),
    agentShareMs: { median: median(share), max: max(share), samples: share.length },
    samples: rows,
  };
}

/** `cpuCores`: the bench deployments' CPU limit (SLEEPER_CPU_CORES unless given); it sets how long Swarm's start takes. */
export async function measureApplyLatency(cp, dir, docker, { organizationId, pollSec, samples = 10, spacingMs, label, cpuCores, log }) {
  const w = await registerWorker(cp, dir, {});
  rememberWorker(w.workerId);
  const agent = new AgentProc(w.config, pollSec === undefined ? {} : { SKYPANEL_AGENT_POLL_INTERVAL: String(pollSec) });
  try {
    // The first poll (an empty set) has been answered: from here on only the interval matters.
    await waitFor(
      () => requestsOf(cp, w.workerId, '/deployments', 'GET').some((r) => r.status === 200),
      20_000,
      () => `first poll\n${agent.tail()}`,
    );
    // With the blocking query the agent holds its next call 3 a second after that poll (calls are
    // spaced ≥ 1 s): a change made before then waits for it, a start-up case, not the steady state
    // measured here. So the first change comes once a held call is in flight (a plain poll is never
    // held: then after 500 ms, as before).
    await waitFor(
      () => requestsOf(cp, w.workerId, '/deployments', 'GET').some((r) => r.status === 0),
      5_000,
      'a held desired-set call',
    ).catch(() => undefined);
    await sleep(500);
    const list = [];
    const added = [];
    const t0 = Date.now();
    for (let k = 0; k < samples; k++) {
      await sleep(Math.max(0, t0 + k * spacingMs - Date.now()));
      const d = sleeperDeployment(organizationId, `lat-${label}-${k}`, 'running', { cpuCores });
      list.push(d);
      cp.setDeployments(w.workerId, [...list]);
      added.push({ id: d.id, at: Date.now() });
    }
    const pollMs = (pollSec ?? 30) * 1000;
    const done = await waitFor(
      () => {
        if (!agent.alive()) throw new Error(`agent exited\n${agent.tail()}`);
        const at = firstRunningAt(cp, w.workerId);
        return added.every((a) => at.has(a.id)) && at;
      },
      pollMs + 120_000,
      `${samples} deployments running (${label})`,
      100,
    ).catch(async (e) => {
      const at = firstRunningAt(cp, w.workerId);
      const missing = added.filter((a) => !at.has(a.id)).map((a) => a.id);
      throw new Error(
        `${e.message}: ${missing.length} never reported running; their tasks: ${await stuckTasks(docker, w.workerId, missing)}\n${agent.tail(1500)}`,
      );
    });
    const ms = added.map((a) => done.get(a.id) - a.at);
    const phases = await phasesOf(cp, docker, w.workerId, added, done);
    log?.(`desired→applied (${label}): ${ms.map((x) => (x / 1000).toFixed(1)).join(', ')} s`);
    return {
      pollSec: pollSec ?? 30,
      cpuCores: cpuCores ?? SLEEPER_CPU_CORES,
      samplesMs: ms,
      medianMs: median(ms),
      maxMs: max(ms),
      phases,
      workerId: w.workerId,
    };
  } finally {
    await agent.stop();
  }
}
