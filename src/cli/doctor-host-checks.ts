import { readFile, stat, statfs } from 'node:fs/promises';
import { createServer } from 'node:net';
import { AgentError } from '../errors.js';
import { DEFAULT_CONFIG_PATH, type AgentConfig } from '../agent/config-schema.js';
import { describeEndpoint, loadConfig, type DockerEndpoint } from '../agent/config.js';
import { reconcileModeFor } from '../controlplane/registration.js';
import { boundListen, readStatusAddress } from '../agent/status/status-address.js';
import { parseListen } from '../agent/status/status-server.js';
import { diskPathFor } from '../collectors/host-metrics.js';
import { createDockerClient, type EngineClient } from '../swarm/docker-client.js';
import { getEngineFacts, type EngineFacts } from '../swarm/engine.js';
import { boundedGet, statusUrlFromListen } from './status.js';
import { UNIT_DIR, UNIT_NAME, lookupUser, unitUser } from './system.js';
import { errCode, fail, pass, skip, warn, type Outcome } from './doctor-check.js';
import type { DoctorOptions } from './doctor.js';

/** The doctor's checks of this host: the config, Docker and the swarm, free disk, the status port. */

/** Free space on Docker's data root: fail below, warn below (SkyPanelV2 marks a worker unhealthy above 90 % used). */
export const DISK_FAIL_FREE_PERCENT = 5;
export const DISK_WARN_FREE_PERCENT = 10;

// --- config ----------------------------------------------------------------------------------------

export interface ConfigState {
  config?: AgentConfig & { workerId: string };
  /** Usable for Docker and the status port even when not registered. */
  partial?: AgentConfig;
}

export async function checkConfig(opts: DoctorOptions, state: ConfigState): Promise<Outcome> {
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

export interface DockerState {
  docker?: EngineClient;
  facts?: EngineFacts;
}

export async function checkDocker(where: DockerEndpoint, timeoutMs: number, state: DockerState): Promise<Outcome> {
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
      (await docker.request<typeof version | undefined>({ method: 'GET', path: '/version', signal: AbortSignal.timeout(timeoutMs) })) ?? {};
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

export async function checkSwarm(state: DockerState): Promise<Outcome> {
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

export async function checkDisk(state: DockerState): Promise<Outcome> {
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

// --- status port -----------------------------------------------------------------------------------

function tryBind(host: string, port: number): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', (err) => resolve(err as NodeJS.ErrnoException));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(undefined)));
  });
}

export async function checkStatusPort(config: AgentConfig | undefined, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Outcome> {
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
