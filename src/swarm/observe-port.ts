import { LABEL } from '../domain/labels.js';
import type { TaskObservation } from '../domain/deployment-status.js';
import type { ObservedService } from '../domain/observed-service.js';
import type { SwarmPort } from '../ports.js';
import type { EngineClient } from './docker-client.js';
import { demuxDockerLogs } from './logs.js';
import { SwarmError } from './observed.js';

interface ContainerInfo {
  Id: string;
  Labels?: Record<string, string>;
  State?: string;
  Status?: string;
  Created?: number;
  Ports?: { PrivatePort?: number; PublicPort?: number; Type?: string }[];
}

const SWARM_SERVICE_ID = 'com.docker.swarm.service.id';

/** "Exited (3) 5 seconds ago" → 3. */
function exitCodeOf(status: string | undefined): number | undefined {
  const m = /Exited \((\d+)\)/.exec(status ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * Observe mode: a swarm worker's Engine API refuses /services and /tasks ("This node is not a
 * swarm manager"), so what this node runs is read from its own task containers, one
 * `GET /containers/json` per pass. Deployments are matched by the `skypanel.service.id` label the
 * service spec puts on every task container. Every write is refused: observe mode never writes.
 */
export function createObservePort(docker: EngineClient): SwarmPort {
  let containers: ContainerInfo[] = [];
  const refuse = (what: string) => () =>
    Promise.reject(new SwarmError('not-manager', `observe mode: ${what} refused (this agent has no manager endpoint)`));
  return {
    async listServices(): Promise<ObservedService[]> {
      try {
        containers = await docker.request<ContainerInfo[]>({
          method: 'GET',
          path: '/containers/json',
          // skypanel.service.id, not skypanel.managed: tasks placed by SkyPanelV2's own orchestrator
          // carry the service, deployment and organization ids (and slug) on their containers too.
          query: { all: true, filters: { label: [LABEL.serviceId, SWARM_SERVICE_ID] } },
        });
      } catch (err) {
        throw new SwarmError('unavailable', `listing task containers: ${(err as Error).message}`);
      }
      const byService = new Map<string, ObservedService>();
      for (const c of containers) {
        const labels = c.Labels ?? {};
        const id = labels[SWARM_SERVICE_ID]!;
        const svc = byService.get(id) ?? { id, name: labels['com.docker.swarm.service.name'] ?? id, labels, replicas: 0 };
        if (c.State === 'running') svc.replicas++;
        byService.set(id, svc);
      }
      return [...byService.values()];
    },

    // Observe mode plans nothing, so it never asks.
    listUnmanagedServices: async () => [],

    async listTasks(): Promise<TaskObservation[]> {
      return containers.map((c) => {
        const exitCode = exitCodeOf(c.Status);
        const running = c.State === 'running';
        return {
          serviceId: c.Labels?.[SWARM_SERVICE_ID] ?? '',
          desiredState: running ? 'running' : 'shutdown',
          state: running ? 'running' : c.State === 'exited' ? (exitCode === 0 ? 'complete' : 'failed') : (c.State ?? 'unknown'),
          message: c.Status,
          err: exitCode !== undefined && exitCode !== 0 ? `task: non-zero exit (${exitCode})` : undefined,
          containerId: c.Id,
          exitCode,
          timestamp: new Date((c.Created ?? 0) * 1000).toISOString(),
          hostPorts: (c.Ports ?? [])
            .filter((p) => p.PrivatePort && p.PublicPort)
            .map((p) => ({ target: p.PrivatePort!, published: p.PublicPort! })),
        };
      });
    },

    createService: refuse('create service'),
    updateService: refuse('update service'),
    scaleService: refuse('scale service'),
    removeService: refuse('remove service'),
    ensureNetwork: refuse('create network'),
    ensureSecret: refuse('create secret'),
    listSecrets: refuse('list secrets'),
    removeSecret: refuse('remove secret'),

    async serviceLogs(serviceId: string, tail: number): Promise<string[]> {
      // The newest task container may not have started yet: take the newest (of three) that printed anything.
      const candidates = containers
        .filter((x) => x.Labels?.[SWARM_SERVICE_ID] === serviceId)
        .sort((a, b) => (b.Created ?? 0) - (a.Created ?? 0))
        .slice(0, 3);
      for (const c of candidates) {
        // Not a stream: `tail` bounds the answer, and the client caps what it buffers.
        const raw = await docker.request<Buffer | undefined>({
          method: 'GET',
          path: `/containers/${encodeURIComponent(c.Id)}/logs`,
          query: { stdout: true, stderr: true, tail, follow: false },
        });
        if (!Buffer.isBuffer(raw)) continue;
        const lines = demuxDockerLogs(raw, tail);
        if (lines.length > 0) return lines;
      }
      return [];
    },
  };
}
