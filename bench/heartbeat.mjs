// Heartbeat cost: two agents side by side, neither with deployments and both with polls and resyncs
// pushed out to an hour. One beats every second, the other every 600 s (so not once in the window).
// CPU per heartbeat = (CPU of the beating one − CPU of the idle one) / heartbeats sent. Child
// processes per heartbeat are counted with strace (every fork/clone/exec of every thread).
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { rememberWorker } from './cleanup.mjs';
import { AgentProc, cpuOf, forksSinceBoot, registerWorker, requestsOf, sleep, track, waitFor } from './lib.mjs';

const QUIET = { SKYPANEL_AGENT_POLL_INTERVAL: '3600', SKYPANEL_AGENT_RESYNC_INTERVAL: '3600', SKYPANEL_AGENT_LOG_LEVEL: 'warn' };

export async function startHeartbeatAgents(cp, dir) {
  const beating = await registerWorker(cp, dir, { heartbeatSec: 1 });
  const idle = await registerWorker(cp, dir, { heartbeatSec: 600 });
  rememberWorker(beating.workerId);
  rememberWorker(idle.workerId);
  return {
    beating: { ...beating, agent: new AgentProc(beating.config, QUIET) },
    idle: { ...idle, agent: new AgentProc(idle.config, QUIET) },
  };
}

function haveStrace() {
  return spawnSync('strace', ['-V'], { stdio: 'ignore' }).status === 0;
}

/**
 * Attach strace to every thread of `pid` for `seconds`; returns processes and threads created.
 * Threads are clones with CLONE_THREAD; anything else that clones, forks or execs is a child process.
 */
async function traceProcessCreation(pid, seconds, dir) {
  const out = join(dir, `strace-${pid}.txt`);
  const tracer = track(
    spawn('strace', ['-f', '-qq', '-e', 'trace=fork,vfork,clone,clone3,execve', '-o', out, '-p', String(pid)], { stdio: 'ignore' }),
  );
  await sleep(seconds * 1000);
  tracer.kill('SIGINT'); // detaches from the agent and exits
  await new Promise((r) => (tracer.exitCode !== null ? r() : tracer.on('close', r)));
  let lines = [];
  try {
    lines = readFileSync(out, 'utf8')
      .split('\n')
      .filter((l) => /\b(fork|vfork|clone3?|execve)\(/.test(l) && !l.includes('resumed>'));
  } finally {
    rmSync(out, { force: true });
  }
  const threads = lines.filter((l) => /\bclone3?\(/.test(l) && l.includes('CLONE_THREAD')).length;
  const processes = lines.filter((l) => /\b(fork|vfork|execve)\(/.test(l) || (/\bclone3?\(/.test(l) && !l.includes('CLONE_THREAD'))).length;
  return { processes, threads, sample: lines.slice(0, 5) };
}

export async function measureHeartbeat(cp, agents, dir, { windowSec = 60, straceSec = 15, log }) {
  const { beating, idle } = agents;
  const beats = () => requestsOf(cp, beating.workerId, '/heartbeat', 'POST').length;
  for (const a of [beating, idle]) {
    await waitFor(
      () => requestsOf(cp, a.workerId, '/heartbeat', 'POST').length > 0,
      15_000,
      () => `first heartbeat\n${a.agent.tail()}`,
    );
  }
  await sleep(10_000); // start-up work (imports, JIT, first poll and pass, its garbage) out of the window

  const b0 = cpuOf(beating.agent.pid);
  const i0 = cpuOf(idle.agent.pid);
  const n0 = beats();
  const idleBeats0 = requestsOf(cp, idle.workerId, '/heartbeat', 'POST').length;
  const forks0 = forksSinceBoot();
  const t0 = performance.now();
  await sleep(windowSec * 1000);
  const sec = (performance.now() - t0) / 1000;
  const b1 = cpuOf(beating.agent.pid);
  const i1 = cpuOf(idle.agent.pid);
  const n = beats() - n0;
  const idleBeats = requestsOf(cp, idle.workerId, '/heartbeat', 'POST').length - idleBeats0;
  const systemForks = forksSinceBoot() - forks0;

  const per = (key) => ((b1[key] - b0[key] - (i1[key] - i0[key])) * 1000) / n;
  const result = {
    windowSec: sec,
    heartbeats: n,
    idleAgentHeartbeats: idleBeats,
    beatingCpuMs: { stat: (b1.stat - b0.stat) * 1000, sched: (b1.sched - b0.sched) * 1000 },
    idleCpuMs: { stat: (i1.stat - i0.stat) * 1000, sched: (i1.sched - i0.sched) * 1000 },
    cpuMsPerHeartbeat: per('sched'),
    cpuMsPerHeartbeatStat: per('stat'),
    systemWideProcessesCreated: systemForks,
  };

  if (haveStrace()) {
    const nb = beats();
    const traced = await traceProcessCreation(beating.agent.pid, straceSec, dir);
    const tracedBeats = beats() - nb;
    result.strace = { seconds: straceSec, heartbeats: tracedBeats, ...traced };
    result.childProcessesPerHeartbeat = tracedBeats > 0 ? traced.processes / tracedBeats : NaN;
  } else {
    result.strace = null;
    result.childProcessesPerHeartbeat = NaN;
  }
  log?.(
    `heartbeat: ${n} beats in ${sec.toFixed(1)} s, ${result.cpuMsPerHeartbeat.toFixed(2)} ms CPU each; ${result.strace ? `${result.strace.processes} processes / ${result.strace.heartbeats} beats under strace` : 'no strace'}`,
  );
  return result;
}
