import type { EngineClient } from './docker-client.js';
import { AgentError } from '../errors.js';
import { redact, type Secret } from '../secret.js';

export interface JoinOptions {
  joinToken: Secret;
  /** HOST:PORT of a manager. */
  managerAddr: string;
  advertiseAddr?: string;
}

/**
 * Join this engine to a swarm (POST /swarm/join) and return the resulting node id. The join token
 * grants entry to the cluster, so neither it nor Docker's error text (which can quote the request)
 * reaches the caller verbatim.
 */
export async function joinSwarm(docker: EngineClient, opts: JoinOptions): Promise<string> {
  const info = await docker.request<SwarmInfo>({ method: 'GET', path: '/info' });
  if (info.Swarm?.LocalNodeState === 'active' && info.Swarm.NodeID) {
    throw new AgentError(
      'SKP_ERR_SWARM_JOIN',
      `this engine is already part of a swarm (node ${info.Swarm.NodeID}); leave it first or omit --swarm-join-token`,
    );
  }
  try {
    await docker.request({
      method: 'POST',
      path: '/swarm/join',
      body: {
        ListenAddr: '0.0.0.0:2377',
        ...(opts.advertiseAddr ? { AdvertiseAddr: opts.advertiseAddr } : {}),
        RemoteAddrs: [opts.managerAddr],
        JoinToken: opts.joinToken.reveal(),
      },
    });
  } catch (err) {
    const raw = redact(String((err as Error).message ?? err), [opts.joinToken], { maxLength: 300 });
    throw new AgentError('SKP_ERR_SWARM_JOIN', `joining the swarm through ${opts.managerAddr} failed: ${raw}`);
  }
  const after = await docker.request<SwarmInfo>({ method: 'GET', path: '/info' });
  if (!after.Swarm?.NodeID) throw new AgentError('SKP_ERR_SWARM_JOIN', 'joined the swarm but Docker reports no node id');
  return after.Swarm.NodeID;
}

interface SwarmInfo {
  Swarm?: { LocalNodeState?: string; NodeID?: string };
}
