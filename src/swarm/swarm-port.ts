import { LABEL, ownershipFilter } from '../domain/labels.js';
import { DEFAULT_ORG_NETWORK_POOL, DEFAULT_ORG_NETWORK_PREFIX, parseCidr } from '../domain/subnets.js';
import type { ServiceSpec } from '../domain/service-spec.js';
import type { TaskObservation } from '../domain/deployment-status.js';
import type { RegistryAuth } from '../protocol/deployment.js';
import type { Secret } from '../secret.js';
import type { ObservedService } from '../domain/observed-service.js';
import type { Logger, SwarmPort } from '../ports.js';
import type { EngineClient } from './docker-client.js';
import { toSwarmError } from './observed.js';
import { listTasks, serviceLogs, toObservedService } from './swarm-reader.js';
import { createService, ensureSecret, listSecrets, removeSecret, removeService, scaleService, updateService } from './swarm-writer.js';
import { ensureOrgNetwork, type OrgNetworkPool } from './org-network.js';

export { SwarmError } from './observed.js';

const LOG_TIMEOUT_MS = 5_000;

/**
 * The reconciler's Swarm port over the Engine API, writing through a manager (the local engine,
 * or a remote manager over mutual TLS). A steady-state pass costs two calls: services and tasks,
 * both filtered by this worker's ownership labels (task label filters match the labels the service
 * had when the task was made; ownership labels never change, so that is exact).
 */
export function createSwarmPort(
  docker: EngineClient,
  opts: { workerId: string; nodeId: () => string | null; networks?: OrgNetworkPool; logger?: Logger },
): SwarmPort {
  const networks = opts.networks ?? { pool: parseCidr(DEFAULT_ORG_NETWORK_POOL)!, prefix: DEFAULT_ORG_NETWORK_PREFIX };
  const owned = ownershipFilter(opts.workerId);
  const networksInFlight = new Map<string, Promise<void>>();
  const warnedNetworks = new Set<string>();
  return {
    async listServices(): Promise<ObservedService[]> {
      // The raw list (not swarm-reader's listServices) because drift detection needs each live Spec.
      let raw: Parameters<typeof toObservedService>[0][];
      try {
        raw = await docker.request({ method: 'GET', path: '/services', query: { filters: JSON.stringify({ label: owned }) } });
      } catch (err) {
        throw toSwarmError('listing services', err);
      }
      return raw.map(toObservedService);
    },

    async listUnmanagedServices(): Promise<ObservedService[]> {
      // Services placed by SkyPanelV2's own orchestrator carry the deployment labels but not
      // skypanel.managed; Docker cannot filter on a missing label, so that is checked here.
      let raw: Parameters<typeof toObservedService>[0][];
      try {
        raw = await docker.request({
          method: 'GET',
          path: '/services',
          query: { filters: JSON.stringify({ label: [LABEL.deploymentId] }) },
        });
      } catch (err) {
        throw toSwarmError('listing services', err);
      }
      return raw
        .map(toObservedService)
        .filter((s) => s.labels[LABEL.managed] !== 'true')
        .map(({ id, name, labels, replicas }) => ({ id, name, labels, replicas }));
    },

    async listTasks(): Promise<TaskObservation[]> {
      const tasks = await listTasks(docker, { labelFilters: owned });
      return tasks.map((t) => ({
        serviceId: t.serviceId,
        desiredState: t.desiredState,
        state: t.state,
        message: t.message,
        err: t.err,
        containerId: t.containerId,
        exitCode: t.exitCode,
        timestamp: t.timestamp,
        createdAt: t.createdAt,
        hostPorts: t.hostPorts,
        secretNames: t.secretNames,
      }));
    },

    async createService(spec: ServiceSpec, auth?: RegistryAuth): Promise<string> {
      return (await createService(docker, spec, { registryAuth: auth })).id;
    },

    async updateService(id: string, spec: ServiceSpec, auth?: RegistryAuth): Promise<void> {
      const current = await docker
        .request<{ Version?: { Index?: number } }>({
          method: 'GET',
          path: `/services/${encodeURIComponent(id)}`,
        })
        .catch((err) => {
          throw toSwarmError(`reading service ${id}`, err);
        });
      await updateService(docker, id, current.Version?.Index ?? 0, spec, { registryAuth: auth });
    },

    scaleService: (id, replicas) => scaleService(docker, id, replicas),

    async removeService(id: string): Promise<void> {
      await removeService(docker, id);
    },

    ensureNetwork(spec): Promise<void> {
      // Creates for one organization run concurrently within a pass: share one attempt per name.
      let pending = networksInFlight.get(spec.Name);
      if (!pending) {
        pending = ensureOrgNetwork(docker, spec, { ...networks, logger: opts.logger, warned: warnedNetworks })
          .then(() => undefined)
          .finally(() => networksInFlight.delete(spec.Name));
        networksInFlight.set(spec.Name, pending);
      }
      return pending;
    },

    async ensureSecret(name: string, value: Secret, labels: Record<string, string>): Promise<string> {
      return (await ensureSecret(docker, name, value, labels)).id;
    },

    listSecrets: () => listSecrets(docker, owned),
    removeSecret: (id) => removeSecret(docker, id),

    serviceLogs: (id, tail) => serviceLogs(docker, id, tail, LOG_TIMEOUT_MS),
  };
}
