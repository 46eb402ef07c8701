import { chown, lstat, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import { DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR } from '../agent/config-schema.js';
import { dockerEndpointFor, loadConfig, resolveDockerEndpoint } from '../agent/config.js';
import { DRAIN_FILE, clearDrain, readDrain, writeDrain } from '../agent/drain.js';
import { LABEL } from '../domain/labels.js';
import { createDockerClient, describeDockerEndpoint, type EngineClient } from '../swarm/docker-client.js';
import { getEngineFacts } from '../swarm/engine.js';
import { UNIT_NAME } from './system.js';

type Say = (line: string) => void;
export type Availability = 'active' | 'pause' | 'drain';

const DOCKER_TIMEOUT_MS = 10_000;

interface NodeInfo {
  ID?: string;
  Version?: { Index?: number };
  Spec?: { Availability?: string; Role?: string; Name?: string; Labels?: Record<string, string> };
  Description?: { Hostname?: string };
}

interface TaskInfo {
  ServiceID?: string;
  DesiredState?: string;
  Status?: { State?: string };
}

interface ServiceInfo {
  ID?: string;
  Spec?: { Name?: string; Labels?: Record<string, string>; TaskTemplate?: { Placement?: { Constraints?: string[] } } };
}

export interface DrainOptions {
  dockerSocket?: string;
  /** The agent's state directory, where the drain marker goes. */
  stateDir?: string;
  /** Lift the drain instead (after maintenance): remove the marker, set the node active. */
  undo?: boolean;
  dryRun: boolean;
  say: Say;
}

export interface DrainResult {
  /** What happened to the agent's drain marker. */
  marker: 'written' | 'removed' | 'unchanged' | 'no-state-dir' | 'dry-run';
  /** The swarm node, when this engine is in a swarm. */
  node?: { nodeId: string; hostname: string; before: string; after: string; changed: boolean };
}

/** The node could not be drained from here; deregister may go on with --force. */
export class DrainRefused extends AgentError {}

function dockerFailure(docker: EngineClient, what: string, err: unknown): AgentError {
  const e = err as { statusCode?: number; json?: { message?: unknown }; message?: string; code?: string };
  const aborted = (err as Error)?.name === 'AbortError' || (err as Error)?.name === 'TimeoutError';
  const detail = aborted
    ? `no answer within ${DOCKER_TIMEOUT_MS / 1000} s`
    : typeof e.json?.message === 'string'
      ? e.json.message
      : (e.message ?? String(err));
  const status = typeof e.statusCode === 'number' ? `HTTP ${e.statusCode}: ` : e.code && !aborted ? `${e.code}: ` : '';
  return new AgentError(
    'SKP_ERR_DOCKER_UNAVAILABLE',
    `${what} failed at ${describeDockerEndpoint(docker)} (${status}${detail.replace(/\s+/g, ' ').trim()})`,
  );
}

/** A Docker call under a hard deadline (the client's own timeout only fires on an idle socket). */
async function call<T>(docker: EngineClient, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  try {
    return await fn(AbortSignal.timeout(DOCKER_TIMEOUT_MS));
  } catch (err) {
    throw dockerFailure(docker, what, err);
  }
}

/**
 * The agent's side of a drain: the marker in its state directory (src/agent/drain.ts). The running
 * agent reads it before every heartbeat, starts no new deployments while it is there, and reports
 * `draining: true`. Written first, because it needs neither Docker nor a manager.
 */
async function applyMarker(opts: DrainOptions): Promise<DrainResult['marker']> {
  const { say } = opts;
  const stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
  const path = join(stateDir, DRAIN_FILE);
  let dir;
  try {
    dir = await stat(stateDir);
  } catch {
    say(
      `no agent state directory at ${stateDir}: no drain marker ${opts.undo ? 'to remove' : 'written'} (no agent has run here with that state dir)`,
    );
    return 'no-state-dir';
  }
  const current = await readDrain(stateDir);
  if (opts.undo) {
    if (current === null) {
      say(`no drain marker in ${stateDir}: the agent already accepts new deployments`);
      return 'unchanged';
    }
    if (opts.dryRun) {
      say(`[dry-run] remove the drain marker ${path}`);
      return 'dry-run';
    }
    await clearDrain(stateDir);
    say(`removed the drain marker ${path}: the agent starts new deployments again from its next heartbeat`);
    return 'removed';
  }
  if (current !== null) {
    say(`drain marker already in ${path} (since ${current.since}): the agent starts no new deployments here`);
    return 'unchanged';
  }
  if (opts.dryRun) {
    say(`[dry-run] write the drain marker ${path}: the agent would start no new deployments and report draining=true`);
    return 'dry-run';
  }
  await writeDrain(stateDir, 'skypanel-agent drain');
  // Written as root, the marker would be unreadable for the service user; give it to the directory's owner.
  if (process.getuid?.() === 0) await chown(path, dir.uid, dir.gid);
  say(`wrote the drain marker ${path}: the running agent starts no new deployments here and reports draining=true from its next heartbeat`);
  return 'written';
}

/**
 * `skypanel-agent drain`: write the agent's drain marker, then set this engine's swarm node to
 * availability drain through the Engine API (POST /nodes/{id}/update with the node's current
 * version); `undo` reverses both. Only a manager can update nodes: on a worker the marker is still
 * written, and it says what to run on a manager.
 */
export async function runDrain(opts: DrainOptions): Promise<DrainResult> {
  const { say } = opts;
  const target: Availability = opts.undo ? 'active' : 'drain';
  const marker = await applyMarker(opts);
  const docker = createDockerClient({
    socketPath: opts.dockerSocket ?? resolveDockerEndpoint({}).socketPath,
    timeoutMs: DOCKER_TIMEOUT_MS,
  });
  const facts = await getEngineFacts(docker);
  const sw = facts.swarm;
  if (sw.state !== 'active' || !sw.nodeId) {
    say(`this engine is not part of a swarm (state ${sw.state}): no swarm node to ${opts.undo ? 'activate' : 'drain'}`);
    return { marker };
  }
  if (sw.role !== 'manager') {
    throw new DrainRefused(
      'SKP_ERR_USAGE',
      `this node (${sw.nodeId}) is a swarm worker, and only a manager can change a node's availability: on a manager run docker node update --availability ${target} ${sw.nodeId}`,
    );
  }
  const nodePath = `/nodes/${encodeURIComponent(sw.nodeId)}`;
  const inspect = () =>
    call(docker, `GET /nodes/${sw.nodeId}`, (signal) => docker.request<NodeInfo>({ method: 'GET', path: nodePath, signal }));
  let info = await inspect();
  const hostname = info.Description?.Hostname ?? '?';
  const before = info.Spec?.Availability ?? 'unknown';
  const label = `node ${sw.nodeId} (${hostname})`;
  if (before === target) {
    say(`${label} is already ${target}: nothing to change`);
    return { marker, node: { nodeId: sw.nodeId, hostname, before, after: before, changed: false } };
  }

  const here = await tasksHere(docker, sw.nodeId);
  if (opts.dryRun) {
    say(
      `[dry-run] set ${label} availability ${before} → ${target} (POST /nodes/${sw.nodeId}/update?version=${info.Version?.Index ?? '?'})`,
    );
    if (target === 'drain') describeEviction(here, say, true);
    return { marker, node: { nodeId: sw.nodeId, hostname, before, after: before, changed: false } };
  }

  // Swarm refuses an update against a stale version ("update out of sequence"): read again, retry once.
  for (let attempt = 0; ; attempt++) {
    try {
      const spec = { ...(info.Spec ?? {}), Availability: target };
      await call(docker, `POST /nodes/${sw.nodeId}/update`, (signal) =>
        docker.request({
          method: 'POST',
          path: `${nodePath}/update`,
          query: { version: info.Version?.Index ?? 0 },
          body: spec,
          signal,
        }),
      );
      break;
    } catch (err) {
      if (attempt === 0 && /out of sequence/i.test((err as Error).message)) {
        info = await inspect();
        continue;
      }
      throw err;
    }
  }
  const after = (await inspect()).Spec?.Availability ?? 'unknown';
  if (after !== target)
    throw new AgentError('SKP_ERR_DOCKER_UNAVAILABLE', `${label}: the update was accepted but availability reads ${after}, not ${target}`);
  say(`${label}: availability ${before} → ${after}`);
  if (target === 'drain') {
    describeEviction(here, say, false);
    say(`undo: skypanel-agent drain --undo   (or: docker node update --availability active ${sw.nodeId})`);
  } else {
    say('Swarm schedules tasks on this node again; deployments pinned here start again.');
  }
  return { marker, node: { nodeId: sw.nodeId, hostname, before, after, changed: true } };
}

interface Here {
  tasks: number;
  services: ServiceInfo[];
}

async function tasksHere(docker: EngineClient, nodeId: string): Promise<Here> {
  const tasks = await call(docker, 'GET /tasks', (signal) =>
    docker.request<TaskInfo[]>({
      method: 'GET',
      path: '/tasks',
      query: { filters: { node: [nodeId], 'desired-state': ['running'] } },
      signal,
    }),
  );
  const ids = new Set(tasks.map((t) => t.ServiceID).filter((id): id is string => typeof id === 'string'));
  const services =
    ids.size === 0
      ? []
      : await call(docker, 'GET /services', (signal) =>
          docker.request<ServiceInfo[]>({ method: 'GET', path: '/services', query: { filters: { id: [...ids] } }, signal }),
        );
  return { tasks: tasks.length, services };
}

function describeEviction(here: Here, say: Say, dryRun: boolean): void {
  const verb = dryRun ? 'would stop' : 'stop';
  if (here.tasks === 0) {
    say(`no running tasks on this node: nothing ${dryRun ? 'would move' : 'moves'}`);
    return;
  }
  const managed = here.services.filter((s) => s.Spec?.Labels?.[LABEL.managed] === 'true');
  const pinned = managed.filter((s) => (s.Spec?.TaskTemplate?.Placement?.Constraints ?? []).some((c) => /^node\.id\s*==/.test(c)));
  const names = here.services
    .map((s) => s.Spec?.Name ?? s.ID ?? '?')
    .slice(0, 10)
    .join(', ');
  say(
    `${here.tasks} running task(s) of ${here.services.length} service(s) ${verb} here: ${names}${here.services.length > 10 ? ', …' : ''}`,
  );
  if (pinned.length > 0) {
    say(
      `${pinned.length} of them are SkyPanel deployments pinned to this node (node.id constraint): their tasks cannot move elsewhere and stay pending until the node is active again.`,
    );
  }
}

/**
 * Where drain acts: the flags, else the config file's values (when there is a usable one), else
 * SKYPANEL_AGENT_* from the environment, else the defaults. Drain needs no registration.
 */
export async function drainTargetsFor(
  configPath: string,
  flags: { dockerSocket?: string; stateDir?: string },
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ dockerSocket: string; stateDir: string }> {
  let fromConfig: { stateDir?: string } = {};
  try {
    fromConfig = (await loadConfig({ path: configPath, env })).config;
  } catch {
    // Not registered (or an unusable config): drain still works on the defaults.
  }
  return {
    dockerSocket: (await dockerEndpointFor(configPath, flags.dockerSocket, env)).socketPath,
    stateDir: flags.stateDir ?? fromConfig.stateDir ?? (env.SKYPANEL_AGENT_STATE_DIR || DEFAULT_STATE_DIR),
  };
}

export interface DeregisterOptions {
  configPath?: string;
  dockerSocket?: string;
  /** Remove the config even when this node could not be drained. */
  force: boolean;
  dryRun: boolean;
  env?: NodeJS.ProcessEnv;
  say: Say;
}

/** `skypanel-agent deregister`: drain, then remove the local config file (the state dir stays). */
export async function runDeregister(opts: DeregisterOptions): Promise<void> {
  const { say } = opts;
  const configPath = opts.configPath ?? DEFAULT_CONFIG_PATH;
  try {
    await lstat(configPath);
  } catch {
    throw new AgentError('SKP_ERR_CONFIG_UNREADABLE', `no config at ${configPath}: this host is not registered (nothing to deregister)`);
  }
  // The config names the Docker socket and the worker; a config the agent would refuse is still removed.
  let workerId: string | undefined;
  let dockerSocket = (await dockerEndpointFor(configPath, opts.dockerSocket, opts.env ?? process.env)).socketPath;
  let stateDir = (opts.env ?? process.env).SKYPANEL_AGENT_STATE_DIR || DEFAULT_STATE_DIR;
  try {
    const { config } = await loadConfig({ path: configPath, env: opts.env ?? process.env, flags: { dockerSocket: opts.dockerSocket } });
    workerId = config.workerId;
    dockerSocket = config.dockerSocket;
    stateDir = config.stateDir;
  } catch (err) {
    say(`warning: ${(err as Error).message}; using the Docker socket ${dockerSocket} and the default state directory`);
  }

  let marker: DrainResult['marker'] | undefined;
  try {
    marker = (await runDrain({ dockerSocket, stateDir, dryRun: opts.dryRun, say })).marker;
  } catch (err) {
    if (opts.force) {
      say(`warning: could not drain (${(err as Error).message}); going on because of --force`);
    } else {
      throw new AgentError(
        err instanceof AgentError ? err.code : 'SKP_ERR_DOCKER_UNAVAILABLE',
        `deregister stopped before removing the config: ${(err as Error).message}. Drain the node another way, then run deregister --force`,
      );
    }
  }

  if (opts.dryRun) {
    say(`[dry-run] remove ${configPath}${workerId ? ` (worker ${workerId})` : ''}`);
  } else {
    await unlink(configPath);
    say(`removed ${configPath}${workerId ? ` (worker ${workerId}; it held the worker token)` : ''}`);
  }
  if (marker !== 'no-state-dir') {
    say(
      `kept ${stateDir} (agent state${marker === undefined ? '' : ', with the drain marker: after registering again, skypanel-agent drain --undo lifts it'})`,
    );
  }
  say(
    `the panel still lists ${workerId ? `worker ${workerId}` : 'this worker'}: delete it there (the protocol has no deregister call yet)`,
  );
  say(`a running agent keeps its config in memory: systemctl disable --now ${UNIT_NAME}, or skypanel-agent uninstall`);
}
