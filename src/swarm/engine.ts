import type Docker from 'dockerode';

export class DockerUnavailableError extends Error {
  readonly code = 'SKP_ERR_DOCKER_UNAVAILABLE';
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'DockerUnavailableError';
  }
}

export interface EngineFacts {
  dockerVersion: string;
  dockerRootDir: string;
  containersRunning: number;
  ncpu: number;
  memTotalBytes: number;
  swarm: {
    nodeId: string | null;
    state: 'inactive' | 'pending' | 'active' | 'error' | 'locked';
    role: 'manager' | 'worker' | 'none';
    nodeAddr: string | null;
  };
}

interface InfoBody {
  ServerVersion?: string;
  DockerRootDir?: string;
  ContainersRunning?: number;
  NCPU?: number;
  MemTotal?: number;
  Swarm?: { NodeID?: string; LocalNodeState?: string; ControlAvailable?: boolean; NodeAddr?: string };
}

function describeTarget(docker: Docker): string {
  const m = (docker as unknown as { modem?: { socketPath?: string; host?: string; port?: number } }).modem;
  return m?.socketPath ? `unix://${m.socketPath}` : `${m?.host ?? 'unknown'}:${m?.port ?? ''}`;
}

/** Everything the agent needs from the engine in one `GET /info` call. */
export async function getEngineFacts(docker: Docker): Promise<EngineFacts> {
  let info: InfoBody;
  try {
    info = (await docker.info()) as InfoBody;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw new DockerUnavailableError(`Docker Engine at ${describeTarget(docker)} did not answer (${e.code ?? e.message ?? 'error'})`, { cause: err });
  }
  const state = (info.Swarm?.LocalNodeState || 'inactive') as EngineFacts['swarm']['state'];
  const active = state === 'active';
  return {
    dockerVersion: info.ServerVersion ?? 'unknown',
    dockerRootDir: info.DockerRootDir ?? '/var/lib/docker',
    containersRunning: info.ContainersRunning ?? 0,
    ncpu: info.NCPU ?? 0,
    memTotalBytes: info.MemTotal ?? 0,
    swarm: {
      nodeId: active && info.Swarm?.NodeID ? info.Swarm.NodeID : null,
      state,
      role: !active ? 'none' : info.Swarm?.ControlAvailable ? 'manager' : 'worker',
      nodeAddr: info.Swarm?.NodeAddr || null,
    },
  };
}

export async function countRunningContainers(docker: Docker): Promise<number> {
  return (await getEngineFacts(docker)).containersRunning;
}

export async function pingDocker(docker: Docker): Promise<boolean> {
  try {
    await docker.ping();
    return true;
  } catch {
    return false;
  }
}
