import type { EngineProbe, EngineSnapshot } from '../ports.js';
import { createDockerClient, type EngineClient } from './docker-client.js';
import { getEngineFacts } from './engine.js';

export interface EngineProbeOptions {
  socketPath?: string;
  timeoutMs?: number;
}

/** The agent's view of the local engine: one GET /info per snapshot. */
export function createEngineProbe(opts: EngineProbeOptions = {}): EngineProbe & { docker: EngineClient; close(): void } {
  const docker = createDockerClient({ socketPath: opts.socketPath, timeoutMs: opts.timeoutMs ?? 10_000 });
  return {
    docker,
    async snapshot(): Promise<EngineSnapshot> {
      const f = await getEngineFacts(docker);
      return {
        dockerVersion: f.dockerVersion,
        dockerRootDir: f.dockerRootDir,
        containersRunning: f.containersRunning,
        ncpu: f.ncpu,
        swarmNodeId: f.swarm.nodeId,
        swarmRole: f.swarm.role,
      };
    },
    close() {
      docker.close();
    },
  };
}
