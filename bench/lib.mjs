// Shared helpers of the bench: paths, bounded waits, /proc readers, spawned agents, bench deployments.
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UNIT_TEMPLATE_PATH, unitNodeArgs } from '../dist/cli/unit-file.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'skypanel-agent');
export const IMAGE = 'skypanel-test/busybox:1';
/** Everything the bench makes in Docker carries one of the worker ids listed here (see cleanup.mjs). */
export const STATE_FILE = join(ROOT, 'bench', '.state.json');
export const RESULTS_FILE = join(ROOT, 'bench', 'results.json');
export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll until `probe` returns a value (not undefined/null/false), bounded in time. */
export async function waitFor(probe, timeoutMs, what, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(everyMs);
  }
}

export function median(xs) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const max = (xs) => (xs.length ? Math.max(...xs) : NaN);

// ---- /proc ----

/** Resident set size in KiB (VmRSS). */
export function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** utime + stime of the whole process in seconds (clock-tick resolution, usually 10 ms). */
export function cpuSec(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // comm may contain spaces and parentheses: fields are counted after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

/** On-CPU time of all live threads in seconds, from schedstat (nanosecond resolution). */
export function schedCpuSec(pid) {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // a thread that ended between readdir and read
    }
  }
  return ns / 1e9;
}

/**
 * On-CPU seconds of the main thread (the event loop) and of all other threads together (V8's GC
 * and compiler helpers, the libuv threadpool); Node names them all `node`, so tid is what tells.
 */
export function threadCpuSec(pid) {
  const out = { 'main thread': 0, 'helper threads (GC, JIT, libuv pool)': 0 };
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const sec = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
      out[Number(tid) === pid ? 'main thread' : 'helper threads (GC, JIT, libuv pool)'] += sec;
    } catch {
      // a thread that ended between readdir and read
    }
  }
  return out;
}

/** Both CPU clocks of a process at once. */
export const cpuOf = (pid) => ({ stat: cpuSec(pid), sched: schedCpuSec(pid) });

/** The system-wide count of processes and threads created since boot (/proc/stat `processes`). */
export function forksSinceBoot() {
  return Number(/^processes\s+(\d+)/m.exec(readFileSync('/proc/stat', 'utf8'))[1]);
}

// ---- spawned processes ----

const children = new Set();

/** Every process the bench started and has not seen exit: killed by the bench on the way out. */
export function killAllChildren() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

export function track(child) {
  children.add(child);
  child.on('close', () => children.delete(child));
  return child;
}

/** Runs a command to completion, output captured, bounded in time; throws on a non-zero exit. */
export function runToEnd(cmd, args, { timeoutMs = 120_000, env, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = track(spawn(cmd, args, { cwd: ROOT, env: env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] }));
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else
        reject(
          new Error(
            `${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}${signal === 'SIGKILL' ? `, bound ${timeoutMs / 1000} s` : ''}):\n${out.slice(-3000)}`,
          ),
        );
    });
    child.stdin.end(input ?? '');
  });
}

const UNIT_TEXT = readFileSync(UNIT_TEMPLATE_PATH, 'utf8');

/**
 * The environment the shipped systemd unit gives the agent (its `Environment=` lines: V8 and malloc
 * settings), so the bench measures the agent as installed. One source: the unit file itself.
 */
export function unitEnvironment(unitText = UNIT_TEXT) {
  const env = {};
  for (const line of unitText.split('\n')) {
    const m = /^Environment=(.*)$/.exec(line.trim());
    if (!m) continue;
    // systemd's syntax: space-separated assignments, each optionally in double quotes.
    for (const [, quoted, bare] of m[1].matchAll(/"([^"]*)"|(\S+)/g)) {
      const a = quoted ?? bare;
      const eq = a.indexOf('=');
      if (eq > 0) env[a.slice(0, eq)] = a.slice(eq + 1);
    }
  }
  return env;
}

export const UNIT_ENV = unitEnvironment();
/** The node flags of the unit's ExecStart (`--jitless ...`), read the way `install` renders them. */
export const UNIT_NODE_ARGS = unitNodeArgs(UNIT_TEXT);

/** A tracked `node` child run as the unit runs the agent: its node flags before `args`, its environment. */
export function spawnNodeAsUnit(args, options = {}) {
  return track(spawn(process.execPath, [...UNIT_NODE_ARGS, ...args], { ...options, env: { ...process.env, ...UNIT_ENV } }));
}

/** `unit: false` leaves out the unit's environment and node flags (the diagnosis run that shows what they are worth). */
function agentEnv(extra, { unit = true } = {}) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SKYPANEL_AGENT_')) delete env[k];
  delete env.NODE_OPTIONS;
  return {
    ...env,
    ...(unit ? UNIT_ENV : {}),
    SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
    SKYPANEL_AGENT_METRICS_LISTEN: '127.0.0.1:0',
    ...extra,
  };
}

/** `skypanel-agent register` for a fresh worker id; returns what `run` needs. */
export async function registerWorker(cp, dir, { heartbeatSec }) {
  const workerId = randomUUID();
  const config = join(dir, `${workerId}.json`);
  const args = ['register', '--control-plane', cp.url, '--token', cp.mintToken(workerId), '--config', config];
  if (heartbeatSec !== undefined) args.push('--heartbeat-interval', String(heartbeatSec));
  await runToEnd(process.execPath, [BIN, ...args], { env: agentEnv({}), timeoutMs: 30_000 });
  return { workerId, config };
}

/** A running `skypanel-agent run` (the node process itself, so /proc/PID is the agent). */
export class AgentProc {
  /** `stateDir`: reuse one (a restart of the same agent); by default a fresh one. */
  constructor(config, env = {}, stateDir = undefined, { unitEnv = true } = {}) {
    this.stateDir = stateDir ?? mkdtempSync(join(tmpdir(), 'skp-bench-state-'));
    this.output = '';
    this.spawnedAt = Date.now();
    // BENCH_AGENT_NODE_ARGS: node flags for the agents under measurement,
    // e.g. `--cpu-prof --cpu-prof-dir=/tmp/p` (not allowed in NODE_OPTIONS).
    const nodeArgs = [...(unitEnv ? UNIT_NODE_ARGS : []), ...(process.env.BENCH_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean)];
    this.child = track(
      spawn(process.execPath, [...nodeArgs, BIN, 'run', '--config', config], {
        cwd: ROOT,
        env: agentEnv({ SKYPANEL_AGENT_STATE_DIR: this.stateDir, ...env }, { unit: unitEnv }),
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const keep = (d) => {
      this.output += d;
      if (this.output.length > 2_000_000) this.output = this.output.slice(-1_000_000);
    };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.child.on('close', (code, signal) => resolve({ code, signal })));
  }

  get pid() {
    return this.child.pid;
  }

  alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, SIGKILL after the bound; resolves once it exited. */
  async stop(timeoutMs = 10_000) {
    if (this.alive()) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  tail(chars = 2000) {
    return this.output.slice(-chars);
  }
}

/** A bare Node.js process: the floor every footprint figure is compared with. */
export function spawnBareNode() {
  const child = track(spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' }));
  return {
    child,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.on('close', r)));
    },
  };
}

// ---- bench deployments ----

/**
 * A tiny sleeping service. `sh` traps TERM so removal does not wait out Docker's 10 s stop grace
 * period for a PID 1 that ignores signals; the work is still one `sleep 3600`.
 *
 * 0.01 cores (the schema's minimum) lets 100 of them fit the footprint phase's reservations on 2
 * cores, but the CPU quota also throttles the container's own start (runc's init and the shell run
 * inside it, at 1 ms of CPU per 100 ms): Swarm's create → running takes ~2.3 s instead of ~0.6 s.
 */
export const SLEEPER_CPU_CORES = 0.01;
/** A bench deployment whose CPU limit barely slows its start (0.7–1 s here), as a tenant's smallest paid plan might be. */
export const TENTH_CPU_CORES = 0.1;

export function sleeperDeployment(organizationId, slug, desiredState = 'running', { cpuCores = SLEEPER_CPU_CORES } = {}) {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId,
    slug,
    imageTag: IMAGE,
    desiredState,
    replicas: 1,
    environmentVars: {},
    resourceLimits: { cpuCores, memoryMb: 8 },
    command: ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'],
  };
}

/** Requests the reference control plane recorded for one worker, by path suffix. */
export function requestsOf(cp, workerId, suffix, method) {
  const prefix = `/api/workers/${workerId}/`;
  return cp.requests.filter((r) => r.path.startsWith(prefix) && r.path.endsWith(suffix) && (method === undefined || r.method === method));
}

/** When the control plane first received a `running` report for each deployment id. */
export function firstRunningAt(cp, workerId) {
  const at = new Map();
  for (const r of cp.reportsOf(workerId)) {
    if (r.report.status === 'running' && !at.has(r.deploymentId)) at.set(r.deploymentId, r.receivedAt.getTime());
  }
  return at;
}
