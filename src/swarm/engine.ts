import { AgentError } from '../errors.js';
import type { SwarmRole } from '../protocol/worker.js';
import { describeDockerEndpoint, dockerTimeoutMs, type EngineClient } from './docker-client.js';

/**
 * Docker could not be reached or answered nonsense. The message is one line naming the endpoint;
 * the original error is deliberately not chained as `cause` so logs and the CLI show no
 * client/http internals, only `causeCode` (ENOENT, ECONNREFUSED, EACCES, ETIMEDOUT, HTTP_500...).
 */
export class DockerUnavailableError extends AgentError {
  readonly endpoint: string;
  readonly causeCode: string;

  constructor(endpoint: string, detail: string, causeCode = 'UNKNOWN') {
    super('SKP_ERR_DOCKER_UNAVAILABLE', `Docker Engine at ${endpoint} is unavailable: ${detail}`);
    this.name = 'DockerUnavailableError';
    this.endpoint = endpoint;
    this.causeCode = causeCode;
  }
}

export type SwarmState = 'inactive' | 'pending' | 'active' | 'error' | 'locked';

export interface EngineFacts {
  /** Engine release (`ServerVersion`), e.g. "20.10.24+dfsg1". */
  dockerVersion: string;
  /** `/info` carries no API version and a second request is not worth it; set only if a future engine adds it. */
  apiVersion?: string;
  dockerRootDir: string;
  containersRunning: number;
  ncpu: number;
  memTotalBytes: number;
  swarm: {
    nodeId: string | null;
    state: SwarmState;
    role: SwarmRole;
    nodeAddr: string | null;
    /** Only managers see the cluster's manager count. */
    managers?: number;
  };
}

interface InfoBody {
  ServerVersion?: unknown;
  ApiVersion?: unknown;
  DockerRootDir?: unknown;
  ContainersRunning?: unknown;
  NCPU?: unknown;
  MemTotal?: unknown;
  Swarm?: {
    NodeID?: unknown;
    NodeAddr?: unknown;
    LocalNodeState?: unknown;
    ControlAvailable?: unknown;
    Managers?: unknown;
  } | null;
}

const SWARM_STATES: readonly SwarmState[] = ['inactive', 'pending', 'active', 'error', 'locked'];

function oneLine(s: string, max = 200): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function wrap(docker: EngineClient, err: unknown, timeoutMs: number, elapsedMs: number): DockerUnavailableError {
  const endpoint = describeDockerEndpoint(docker);
  const e = (err ?? {}) as { code?: unknown; statusCode?: unknown; message?: unknown; name?: unknown; json?: unknown };
  const code = typeof e.code === 'string' ? e.code : undefined;
  // The client's inactivity timeout says ETIMEDOUT; our own deadline aborts (AbortError), and a peer
  // that hangs up just then is a reset: near the deadline, all of them mean "no answer in time".
  const hungUp = code === 'ECONNRESET' || e.name === 'AbortError' || code === 'ABORT_ERR';
  if (code === 'ETIMEDOUT' || (hungUp && elapsedMs >= timeoutMs * 0.9))
    return new DockerUnavailableError(endpoint, `no answer within ${timeoutMs} ms`, 'ETIMEDOUT');
  if (typeof e.statusCode === 'number') {
    const body = e.json as { message?: unknown } | undefined;
    const msg = typeof body?.message === 'string' ? body.message : String(e.message ?? '');
    return new DockerUnavailableError(endpoint, `HTTP ${e.statusCode}: ${oneLine(msg)}`, `HTTP_${e.statusCode}`);
  }
  switch (code) {
    case 'ENOENT':
      return new DockerUnavailableError(endpoint, 'the socket does not exist (is dockerd running?)', code);
    case 'ECONNREFUSED':
      return new DockerUnavailableError(endpoint, 'connection refused (is dockerd running?)', code);
    case 'EACCES':
    case 'EPERM':
      return new DockerUnavailableError(endpoint, 'permission denied (run as root or join the docker group)', code);
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new DockerUnavailableError(
    endpoint,
    oneLine(code && !msg.includes(code) ? `${code}: ${msg}` : msg || 'unknown error'),
    code ?? 'UNKNOWN',
  );
}

/**
 * One Engine API call under a hard deadline. The client's timeout only fires on an idle socket;
 * this bounds the whole call, even against a peer that trickles bytes.
 */
async function bounded<T>(docker: EngineClient, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const timeoutMs = dockerTimeoutMs(docker);
  const started = Date.now();
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort();
      reject(new DockerUnavailableError(describeDockerEndpoint(docker), `no answer within ${timeoutMs} ms`, 'ETIMEDOUT'));
    }, timeoutMs);
  });
  try {
    return await Promise.race([fn(ac.signal), deadline]);
  } catch (err) {
    throw err instanceof DockerUnavailableError ? err : wrap(docker, err, timeoutMs, Date.now() - started);
  } finally {
    clearTimeout(timer);
  }
}

async function fetchInfo(docker: EngineClient): Promise<InfoBody> {
  const info = await bounded(docker, (signal) => docker.request<unknown>({ method: 'GET', path: '/info', signal }));
  // Anything that is not a JSON object with a ServerVersion is some other server on the socket.
  if (!info || typeof info !== 'object' || Buffer.isBuffer(info) || typeof (info as InfoBody).ServerVersion !== 'string') {
    throw new DockerUnavailableError(describeDockerEndpoint(docker), 'GET /info did not return Docker engine info', 'EBADRESPONSE');
  }
  return info as InfoBody;
}

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** Everything the agent needs from the engine in one `GET /info` call. */
export async function getEngineFacts(docker: EngineClient): Promise<EngineFacts> {
  const info = await fetchInfo(docker);
  const sw = info.Swarm ?? {};
  const rawState = str(sw.LocalNodeState);
  // An engine without swarm support reports nothing; an unknown new state is not something to act on.
  const state: SwarmState =
    rawState === null ? 'inactive' : SWARM_STATES.includes(rawState as SwarmState) ? (rawState as SwarmState) : 'error';
  const active = state === 'active';
  const role: SwarmRole = !active ? 'none' : sw.ControlAvailable === true ? 'manager' : 'worker';
  const apiVersion = str(info.ApiVersion);
  return {
    dockerVersion: info.ServerVersion as string,
    ...(apiVersion ? { apiVersion } : {}),
    dockerRootDir: str(info.DockerRootDir) ?? '/var/lib/docker',
    containersRunning: num(info.ContainersRunning),
    ncpu: num(info.NCPU),
    memTotalBytes: num(info.MemTotal),
    swarm: {
      nodeId: str(sw.NodeID),
      state,
      role,
      nodeAddr: str(sw.NodeAddr),
      ...(typeof sw.Managers === 'number' && role === 'manager' ? { managers: sw.Managers } : {}),
    },
  };
}
