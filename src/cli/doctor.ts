import { randomUUID } from 'node:crypto';
import { readFile, stat, statfs } from 'node:fs/promises';
import { createServer } from 'node:net';
import { AgentError } from '../errors.js';
import { Secret } from '../secret.js';
import { AGENT_VERSION } from '../version.js';
import { DEFAULT_CONFIG_PATH, type AgentConfig } from '../agent/config-schema.js';
import { describeEndpoint, dockerEndpointFor, loadConfig, type DockerEndpoint } from '../agent/config.js';
import { ControlPlaneClient } from '../controlplane/control-plane-client.js';
import { reconcileModeFor } from '../controlplane/registration.js';
import { boundListen, readStatusAddress } from '../agent/status/status-address.js';
import { parseListen } from '../agent/status/status-server.js';
import { HostLoadCollector, diskPathFor } from '../collectors/host-metrics.js';
import { CpuSampler } from '../collectors/cpu.js';
import type { HeartbeatRequest } from '../protocol/worker.js';
import { createDockerClient, type EngineClient } from '../swarm/docker-client.js';
import { getEngineFacts, type EngineFacts } from '../swarm/engine.js';
import { engineCall } from '../swarm/swarm-reader.js';
import { boundedGet, statusUrlFromListen, transportMessage } from './status.js';
import { HttpTimeoutError } from '../http/errors.js';
import { UNIT_DIR, UNIT_NAME, lookupUser, unitUser } from './system.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  id: 'config' | 'docker' | 'swarm' | 'disk' | 'control-plane' | 'token' | 'clock' | 'status-port';
  status: CheckStatus;
  /** One line: what was found. */
  message: string;
  /** One line: what to do about it (fail and warn only). */
  fix?: string;
  ms: number;
}

export interface DoctorReport {
  ok: boolean;
  checks: CheckResult[];
}

export interface DoctorOptions {
  configPath: string;
  env?: NodeJS.ProcessEnv;
  /** Bound on each check; 5 s by default. */
  checkTimeoutMs?: number;
  /** The installed unit, read for its User= (is the config readable by the service?). */
  unitPath?: string;
}

/** Clock skew against the control plane: warn above, fail above. */
export const SKEW_WARN_SEC = 5;
export const SKEW_FAIL_SEC = 60;
/** Free space on Docker's data root: fail below, warn below (SkyPanelV2 marks a worker unhealthy above 90 % used). */
export const DISK_FAIL_FREE_PERCENT = 5;
export const DISK_WARN_FREE_PERCENT = 10;

type Outcome = Omit<CheckResult, 'id' | 'ms'>;

const pass = (message: string): Outcome => ({ status: 'pass', message });
const warn = (message: string, fix?: string): Outcome => ({ status: 'warn', message, ...(fix ? { fix } : {}) });
const fail = (message: string, fix?: string): Outcome => ({ status: 'fail', message, ...(fix ? { fix } : {}) });
const skip = (message: string): Outcome => ({ status: 'skip', message });

class DeadlineExceeded extends Error {}

/** Run one check under a hard deadline; a throw or a timeout is a failed check, never a crash. */
async function timed(id: CheckResult['id'], timeoutMs: number, fn: () => Promise<Outcome>): Promise<CheckResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineExceeded()), timeoutMs);
  });
  let outcome: Outcome;
  try {
    outcome = await Promise.race([fn(), deadline]);
  } catch (err) {
    outcome =
      err instanceof DeadlineExceeded
        ? fail(`no answer within ${timeoutMs / 1000} s`)
        : fail(oneLine((err as Error)?.message ?? String(err)));
  } finally {
    clearTimeout(timer);
  }
  return { id, ...outcome, ms: Math.round(performance.now() - started) };
}

function oneLine(s: string, max = 240): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function errCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown }; name?: string; message?: string };
  const code = typeof e.code === 'string' ? e.code : typeof e.cause?.code === 'string' ? e.cause.code : undefined;
  return code ?? e.name ?? 'error';
}

// --- config ----------------------------------------------------------------------------------------

interface ConfigState {
  config?: AgentConfig & { workerId: string };
  /** Usable for Docker and the status port even when not registered. */
  partial?: AgentConfig;
}

async function checkConfig(opts: DoctorOptions, state: ConfigState): Promise<Outcome> {
  const path = opts.configPath;
  try {
    await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return fail(
        `${path} does not exist`,
        'register this host: skypanel-agent register --control-plane URL --token-file FILE (or skypanel-agent install ...)',
      );
    }
  }
  let config: AgentConfig;
  try {
    ({ config } = await loadConfig({ path, env: opts.env ?? process.env }));
  } catch (err) {
    if (!(err instanceof AgentError)) throw err;
    const fix =
      err.code === 'SKP_ERR_CONFIG_INSECURE'
        ? `chmod 600 ${path}`
        : err.code === 'SKP_ERR_CONFIG_UNREADABLE'
          ? `run doctor as root (or as the service user), and check that ${path} is a readable file`
          : 'correct the key named above (or run skypanel-agent register again)';
    return fail(err.message, fix);
  }
  state.partial = config;
  if (!config.workerId)
    return fail(`${path} has no workerId`, 'register this host: skypanel-agent register --control-plane URL --token-file FILE');
  state.config = config as AgentConfig & { workerId: string };
  const mode = ((await stat(path)).mode & 0o777).toString(8).padStart(4, '0');
  const owner = await serviceOwnerProblem(path, opts.unitPath ?? `${UNIT_DIR}/${UNIT_NAME}`);
  if (owner) return fail(`${path}: ${owner.message}`, owner.fix);
  return pass(`${path} readable, mode ${mode}, worker ${config.workerId}, control plane ${config.controlPlaneUrl}`);
}

/**
 * The installed service runs as its own user: a config written by root (`register` run by hand)
 * would be unreadable for it. Only checked for the path the unit uses.
 */
async function serviceOwnerProblem(path: string, unitPath: string): Promise<{ message: string; fix: string } | undefined> {
  if (path !== DEFAULT_CONFIG_PATH) return undefined;
  let unit: string;
  try {
    unit = await readFile(unitPath, 'utf8');
  } catch {
    return undefined;
  }
  const user = unitUser(unit);
  if (!user || user === 'root') return undefined;
  const entry = await lookupUser(user);
  if (!entry)
    return { message: `the installed service runs as ${user}, and that user does not exist`, fix: 'run skypanel-agent install again' };
  const st = await stat(path);
  if (st.uid !== entry.uid) {
    return {
      message: `owned by uid ${st.uid}, but the service runs as ${user} (uid ${entry.uid}) and cannot read it`,
      fix: `chown ${user}: ${path} && systemctl restart ${UNIT_NAME}`,
    };
  }
  return undefined;
}

// --- docker, swarm, disk ---------------------------------------------------------------------------

interface DockerState {
  docker?: EngineClient;
  facts?: EngineFacts;
}

async function checkDocker(where: DockerEndpoint, timeoutMs: number, state: DockerState): Promise<Outcome> {
  const docker = createDockerClient({ socketPath: where.socketPath, timeoutMs });
  const endpoint = describeEndpoint(where);
  const hint = (code: string) =>
    code === 'EACCES' || code === 'EPERM'
      ? 'run doctor as root (the service gets the docker group through SupplementaryGroups=)'
      : code === 'ENOENT' || code === 'ECONNREFUSED'
        ? `start Docker (systemctl start docker) or point dockerSocket at its socket`
        : 'check dockerd (journalctl -u docker) and the dockerSocket setting';
  let version: { Version?: unknown; ApiVersion?: unknown };
  try {
    version =
      (await engineCall<typeof version | undefined>(docker, { method: 'GET', path: '/version', signal: AbortSignal.timeout(timeoutMs) })) ??
      {};
  } catch (err) {
    const code = errCode(err);
    const e = err as { statusCode?: number; message?: string };
    const late = code === 'ABORT_ERR' || code === 'ETIMEDOUT' || code === 'AbortError' || code === 'TimeoutError';
    const detail = typeof e.statusCode === 'number' ? `HTTP ${e.statusCode}` : late ? `no answer within ${timeoutMs / 1000} s` : code;
    return fail(`Docker Engine at ${endpoint} is unreachable (${detail})`, hint(code));
  }
  if (typeof version.Version !== 'string')
    return fail(
      `${endpoint} answered GET /version without an engine version: not Docker?`,
      'point dockerSocket at the Docker Engine API socket',
    );
  state.docker = docker;
  return pass(`Docker ${version.Version} (API ${typeof version.ApiVersion === 'string' ? version.ApiVersion : '?'}) at ${endpoint}`);
}

async function checkSwarm(state: DockerState): Promise<Outcome> {
  if (!state.docker) return skip('skipped: Docker is unreachable');
  const facts = await getEngineFacts(state.docker);
  state.facts = facts;
  const sw = facts.swarm;
  const node = sw.nodeId ? ` (node ${sw.nodeId})` : '';
  switch (sw.state) {
    case 'active': {
      const mode = reconcileModeFor(sw.role);
      if (sw.role === 'manager')
        return pass(`swarm active, this node is a manager${node}: reconcile mode ${mode} (services are written through this engine)`);
      return warn(
        `swarm active, this node is a worker${node}: reconcile mode ${mode} (deployments are reported, not applied)`,
        'to apply deployments here, run the agent on a manager (docker node promote NODE from a manager)',
      );
    }
    case 'inactive':
      return fail(
        'this engine is not part of a swarm: reconcile mode none (heartbeats only, no deployments)',
        'join the swarm: skypanel-agent register ... --swarm-join-token-file FILE --swarm-manager HOST:2377 (or docker swarm init on a first node)',
      );
    case 'locked':
      return fail(`swarm is locked${node}`, 'docker swarm unlock');
    default:
      return fail(`swarm state is ${sw.state}${node}`, 'wait for a join to settle, or check docker info / journalctl -u docker');
  }
}

async function checkDisk(state: DockerState): Promise<Outcome> {
  const path = diskPathFor(state.facts?.dockerRootDir);
  const s = await statfs(path);
  const used = (s.blocks - s.bfree) * s.bsize;
  const avail = s.bavail * s.bsize;
  const freePct = used + avail > 0 ? (avail / (used + avail)) * 100 : 0;
  const gib = (avail / 2 ** 30).toFixed(1);
  const what = `${gib} GiB free (${freePct.toFixed(1)} %) on ${path}${state.facts ? " (Docker's data root)" : ''}`;
  const fix = 'free space: docker system prune (images, stopped containers), or grow the filesystem';
  if (freePct < DISK_FAIL_FREE_PERCENT) return fail(what, fix);
  if (freePct < DISK_WARN_FREE_PERCENT) return warn(`${what}: the panel marks a worker unhealthy above 90 % used`, fix);
  return pass(what);
}

// --- control plane, token, clock -------------------------------------------------------------------

interface PanelState {
  reached?: boolean;
  /** Local clock minus the control plane's, in seconds, from its Date header. */
  skewSec?: number;
  skewMarginSec?: number;
  dateSeen?: boolean;
}

/** Any HTTP answer from the panel's origin counts: this checks the network path, not the API. */
async function checkControlPlane(config: AgentConfig | undefined, timeoutMs: number, state: PanelState): Promise<Outcome> {
  if (!config) return skip('skipped: no usable config');
  // Not ControlPlaneClient: this GET carries no token, and any answer counts, an HTML page included
  // (the client refuses a 2xx that is not JSON, and keeps no headers then: the Date is needed here).
  const url = `${config.controlPlaneUrl}/`;
  try {
    const sent = Date.now();
    // The body is not read: the connection is closed as soon as the headers are in.
    const res = await boundedGet(url, {
      headers: { 'user-agent': `skypanel-agent/${AGENT_VERSION} doctor`, accept: 'application/json' },
      timeoutMs,
      maxBodyBytes: 0,
    });
    const received = res.headersAt;
    state.reached = true;
    const date = res.headers.date;
    const serverMs = typeof date === 'string' ? Date.parse(date) : NaN;
    if (!Number.isNaN(serverMs)) {
      // Date has a resolution of one second: the panel's clock read somewhere in [Date, Date + 1 s).
      const localMid = (sent + received) / 2;
      state.skewSec = (localMid - (serverMs + 500)) / 1000;
      state.skewMarginSec = 0.5 + (received - sent) / 2000;
      state.dateSeen = true;
    }
    return pass(`${config.controlPlaneUrl} answered HTTP ${res.statusCode} in ${received - sent} ms`);
  } catch (err) {
    const code = errCode(err);
    const detail =
      err instanceof HttpTimeoutError || code === 'ABORT_ERR'
        ? `no answer within ${timeoutMs / 1000} s`
        : `${code}: ${oneLine(transportMessage(err as Error), 120)}`;
    return fail(
      `${config.controlPlaneUrl} is unreachable (${detail})`,
      'check controlPlaneUrl, DNS, and firewalls between this host and the panel',
    );
  }
}

const TOKEN_PROOF =
  "the panel verified the token's signature and worker id; this does not prove the worker still exists in the panel (a stock SkyPanelV2 accepts the token of a deleted worker too): check its Workers page";

/** One real heartbeat with the current metrics: 200 means the panel accepts this worker's token. */
async function checkToken(cfg: ConfigState, panel: PanelState, dockerState: DockerState, timeoutMs: number): Promise<Outcome> {
  const config = cfg.config;
  if (!config) return skip('skipped: no usable config');
  if (!panel.reached) return skip('skipped: the control plane is unreachable');
  // Two /proc/stat samples a quarter of a second apart (the sampler waits) give a real utilisation figure, not 0.
  const load = new HostLoadCollector(new CpuSampler(undefined, { minWindowMs: 250 }));
  await load.prime();
  const metrics = await load.read(dockerState.facts?.dockerRootDir);
  const body: HeartbeatRequest = {
    ...metrics,
    containerCount: dockerState.facts?.containersRunning ?? 0,
    bootId: randomUUID(),
    seq: 1,
    sentAt: new Date().toISOString(),
    agentVersion: AGENT_VERSION,
    swarmNodeId: dockerState.facts?.swarm.nodeId ?? null,
    dockerHealthy: dockerState.facts !== undefined,
  };
  // The client doubles its per-phase timeout for the whole call: halve it to stay within the bound.
  const client = new ControlPlaneClient({
    baseUrl: config.controlPlaneUrl,
    token: new Secret(config.token),
    timeoutMs: Math.max(500, Math.floor(timeoutMs / 2) - 100),
  });
  try {
    const res = await client.postJson(`/api/workers/${encodeURIComponent(config.workerId)}/heartbeat`, body);
    const renew = 'get a new worker token from the panel, then: skypanel-agent register --control-plane URL --token-file FILE';
    if (res.ok) {
      // Stock SkyPanelV2 checks the token's signature and worker id, not that the worker row still exists: say so, not more.
      if (res.status === 200) return pass(`heartbeat for worker ${config.workerId} accepted (HTTP 200, ${res.rttMs} ms): ${TOKEN_PROOF}`);
      return warn(`heartbeat answered HTTP ${res.status}, not 200`, 'check that controlPlaneUrl is the panel itself, not a proxy page');
    }
    if (res.kind !== 'http') return fail(`heartbeat failed: ${res.message}`, 'check the control plane and the network');
    const what = `HTTP ${res.status}${res.code ? ` ${res.code}` : ''}: ${res.message}`;
    switch (res.status) {
      case 401:
        return fail(`the control plane refused the worker token (${what})`, renew);
      case 403:
        return fail(`the token does not belong to worker ${config.workerId} (${what})`, renew);
      case 404:
        if (res.code === 'WORKER_NOT_FOUND')
          return warn(
            `token accepted, but the panel has no worker ${config.workerId} (${what})`,
            'the running agent registers again by itself; or run skypanel-agent register',
          );
        return fail(
          `the heartbeat route does not exist there (${what})`,
          'controlPlaneUrl must be the panel origin (https://panel.example.com), with any path prefix it is served under',
        );
      case 429:
        return fail(
          `rate limited (${what})`,
          'too many workers behind one IP for the panel limiter: raise heartbeatIntervalSec (docs/PROTOCOL.md, request budget)',
        );
      default:
        return fail(`heartbeat not accepted (${what})`, 'check the panel logs');
    }
  } finally {
    await client.close();
  }
}

async function checkClock(panel: PanelState): Promise<Outcome> {
  if (!panel.reached) return skip('skipped: the control plane is unreachable');
  if (!panel.dateSeen || panel.skewSec === undefined)
    return warn('the control plane sent no Date header: skew not measured', 'make sure NTP runs here: timedatectl');
  const skew = panel.skewSec;
  const abs = Math.abs(skew);
  const margin = panel.skewMarginSec ?? 0.5;
  const what = `local clock is ${abs < margin ? `within ${margin.toFixed(1)} s of` : `${abs.toFixed(1)} s ${skew > 0 ? 'ahead of' : 'behind'}`} the control plane's (±${margin.toFixed(1)} s)`;
  const fix = 'synchronise the clock (timedatectl set-ntp true, or chrony/systemd-timesyncd)';
  if (abs - margin > SKEW_FAIL_SEC) return fail(what, fix);
  if (abs - margin > SKEW_WARN_SEC) return warn(what, fix);
  return pass(what);
}

// --- status port -----------------------------------------------------------------------------------

function tryBind(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', (err) => resolve(err as NodeJS.ErrnoException));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(undefined)));
  });
}

async function checkStatusPort(config: AgentConfig | undefined, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Outcome> {
  // Where the agent last listened (run --status-listen, an environment drop-in, port 0) wins over the config.
  const remembered = config ? await readStatusAddress(config.stateDir) : undefined;
  const listen = remembered ? boundListen(remembered) : (config?.statusListen ?? env.SKYPANEL_AGENT_STATUS_LISTEN ?? '0.0.0.0:9740');
  const { host, port } = parseListen(listen);
  if (port === 0) return pass(`statusListen ${listen}: the agent takes any free port`);
  const err = await tryBind(host, port);
  if (!err) return pass(`${listen} is free for the status API`);
  if (err.code === 'EACCES')
    return fail(`binding ${listen} needs privileges the service does not have`, 'use a port above 1023 for statusListen');
  if (err.code === 'EADDRNOTAVAIL')
    return fail(`${host} is not an address of this host`, 'set statusListen to an address of this host, or 0.0.0.0:PORT');
  if (err.code !== 'EADDRINUSE') return fail(`cannot bind ${listen} (${err.code ?? err.message})`);
  // Taken: fine if it is the running agent itself, which answers /healthz with its own shape.
  const tls = remembered?.tls ?? config?.statusTlsCert !== undefined;
  const base = statusUrlFromListen(listen, { tls });
  try {
    // Whatever holds the port may use a self-signed certificate: only its answer matters here.
    const res = await boundedGet(`${base}/healthz`, {
      timeoutMs: Math.min(2_000, timeoutMs),
      maxBodyBytes: 4096,
      rejectUnauthorized: false,
    });
    const text = res.body.toString('utf8');
    let body: { status?: unknown; reason?: unknown } | undefined;
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      body = undefined;
    }
    if (res.statusCode === 200 && body?.status === 'ok') return pass(`${listen} is held by the running skypanel-agent (healthz ok)`);
    if (res.statusCode === 200 && body?.status === 'degraded') {
      return fail(
        `${listen} is held by the running skypanel-agent, which reports itself degraded: ${String(body.reason ?? '')}`,
        'see the reason (e.g. free space in the state directory); the agent recovers by itself',
      );
    }
    if (res.statusCode === 200 && body?.status === 'waiting')
      return pass(`${listen} is held by the running skypanel-agent (healthz: ${String(body.reason ?? 'waiting')})`);
    if (res.statusCode === 503 && body?.status === 'wedged') {
      return fail(
        `${listen} is held by a skypanel-agent that reports itself wedged: ${String(body.reason ?? '')}`,
        `systemctl restart ${UNIT_NAME}; see journalctl -u ${UNIT_NAME}`,
      );
    }
    return fail(
      `${listen} is in use by another program (GET /healthz answered HTTP ${res.statusCode})`,
      'free the port, or set statusListen to another one',
    );
  } catch {
    return fail(
      `${listen} is in use by another program (it does not answer GET /healthz)`,
      'free the port (ss -ltnp), or set statusListen to another one',
    );
  }
}

// --- report ------------------------------------------------------------------------------------------

/** Every check, in a fixed order; independent ones run concurrently, each bounded. */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const timeoutMs = opts.checkTimeoutMs ?? 5_000;
  const env = opts.env ?? process.env;
  const cfg: ConfigState = {};
  const dockerState: DockerState = {};
  const panel: PanelState = {};

  const config = await timed('config', timeoutMs, () => checkConfig(opts, cfg));
  const endpoint = await dockerEndpointFor(opts.configPath, undefined, env);

  const dockerChain = (async () => {
    const docker = await timed('docker', timeoutMs, () => checkDocker(endpoint, timeoutMs, dockerState));
    const swarm = await timed('swarm', timeoutMs, () => checkSwarm(dockerState));
    const disk = await timed('disk', timeoutMs, () => checkDisk(dockerState));
    return [docker, swarm, disk];
  })();
  const reach = timed('control-plane', timeoutMs, () => checkControlPlane(cfg.partial, timeoutMs, panel));
  const port = timed('status-port', timeoutMs, () => checkStatusPort(cfg.partial, env, timeoutMs));
  const [dockerChecks, controlPlane] = await Promise.all([dockerChain, reach]);
  // The heartbeat carries the real container count and node id, so it waits for the Docker checks.
  const token = await timed('token', timeoutMs, () => checkToken(cfg, panel, dockerState, timeoutMs));
  const clock = await timed('clock', timeoutMs, () => checkClock(panel));

  const checks = [config, ...dockerChecks, controlPlane, token, clock, await port];
  return { ok: checks.every((c) => c.status === 'pass' || c.status === 'warn'), checks };
}

const SYMBOL: Record<CheckStatus, string> = { pass: '✓', warn: '!', fail: '✗', skip: '-' };

export function renderReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.id.length));
  const lines = report.checks.map(
    (c) => `${SYMBOL[c.status]} ${c.id.padEnd(width)}  ${c.message}${c.fix && c.status !== 'pass' ? ` — fix: ${c.fix}` : ''}`,
  );
  const failed = report.checks.filter((c) => c.status === 'fail').length;
  const warned = report.checks.filter((c) => c.status === 'warn').length;
  lines.push(
    report.ok
      ? `all checks passed${warned ? ` (${warned} warning${warned > 1 ? 's' : ''})` : ''}`
      : `${failed} check${failed > 1 ? 's' : ''} failed`,
  );
  return lines.join('\n');
}
