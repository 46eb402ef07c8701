import type { Action } from '../domain/planner.js';
import type { OwnedSecret } from '../domain/secret-gc.js';
import { buildNetworkSpec, buildServiceSpec, type ServiceSpec, type SpecContext } from '../domain/service-spec.js';
import type { Deployment, RegistryAuth } from '../protocol/deployment.js';
import type { Secret } from '../secret.js';
import type { ServiceObservation, TaskObservation } from '../domain/deployment-status.js';
import type { Logger } from './logger.js';

export interface ObservedServiceLite extends ServiceObservation {
  name: string;
  labels: Record<string, string>;
  /** The live ServiceSpec as Docker returns it, for drift detection. */
  spec?: unknown;
  /** Swarm's version of the service object; it changes with every change to the service. */
  version?: number;
}

/** What the reconciler needs from Swarm; src/swarm implements it over the Engine API. */
export interface SwarmPort {
  /** Services carrying this worker's ownership labels: one Engine API call. */
  listServices(): Promise<ObservedServiceLite[]>;
  /**
   * Services carrying a deployment id but placed by something other than an agent (SkyPanelV2's
   * own orchestrator, or by hand): one Engine API call, made only when a pass would create.
   */
  listUnmanagedServices(): Promise<ObservedServiceLite[]>;
  /** Tasks of those services: one Engine API call. */
  listTasks(): Promise<TaskObservation[]>;
  createService(spec: ServiceSpec, auth?: RegistryAuth): Promise<string>;
  updateService(id: string, spec: ServiceSpec, auth?: RegistryAuth): Promise<void>;
  scaleService(id: string, replicas: number): Promise<void>;
  removeService(id: string): Promise<void>;
  ensureNetwork(spec: ReturnType<typeof buildNetworkSpec>): Promise<void>;
  /** Returns the Swarm secret id. */
  ensureSecret(name: string, value: Secret, labels: Record<string, string>): Promise<string>;
  /** Secrets carrying this worker's ownership labels: one Engine API call. */
  listSecrets(): Promise<OwnedSecret[]>;
  /** True when the secret is gone (or was already); false when Swarm still has a service using it. */
  removeSecret(id: string): Promise<boolean>;
  serviceLogs(id: string, tail: number): Promise<string[]>;
}

export type ActionHandlers = { [K in Action['kind']]: (a: Extract<Action, { kind: K }>) => Promise<void> };

/**
 * One executor per action kind, so adding an action without an executor does not compile.
 * Executors are idempotent: "already exists" and "not found" count as done (handled in the port).
 */
export function createActionHandlers(port: SwarmPort, desired: ReadonlyMap<string, Deployment>, ctx: SpecContext, logger: Logger): ActionHandlers {
  const needDeployment = (id: string): Deployment => {
    const d = desired.get(id);
    if (!d) throw new Error(`deployment ${id} is not in the desired set`);
    return d;
  };
  /** Network and secrets first, then the spec with the secrets' Swarm ids filled in. */
  const prepare = async (d: Deployment): Promise<ServiceSpec> => {
    const built = buildServiceSpec(d, ctx);
    await port.ensureNetwork(buildNetworkSpec(d.organizationId));
    const ids = new Map<string, string>();
    for (const s of built.secrets) {
      const value = d.secrets?.[s.dataRef]?.value;
      if (!value) throw new Error(`secret #${s.dataRef} of deployment ${d.id} has no value`);
      ids.set(s.name, await port.ensureSecret(s.name, value, s.labels));
    }
    const refs = built.spec.TaskTemplate.ContainerSpec.Secrets?.map((r) => ({ ...r, SecretID: ids.get(r.SecretName) }));
    return refs ? { ...built.spec, TaskTemplate: { ...built.spec.TaskTemplate, ContainerSpec: { ...built.spec.TaskTemplate.ContainerSpec, Secrets: refs } } } : built.spec;
  };
  return {
    create: async (a) => {
      const d = needDeployment(a.deploymentId);
      const id = await port.createService(await prepare(d), d.registryAuth);
      logger.info({ deploymentId: d.id, swarmServiceId: id, specHash: a.specHash }, 'service created');
    },
    update: async (a) => {
      const d = needDeployment(a.deploymentId);
      await port.updateService(a.swarmServiceId, await prepare(d), d.registryAuth);
      const log = a.reason === 'drift' ? logger.warn.bind(logger) : logger.info.bind(logger);
      log({ deploymentId: d.id, swarmServiceId: a.swarmServiceId, specHash: a.specHash, reason: a.reason }, a.reason === 'drift' ? 'service changed outside the agent; put back' : 'service updated');
    },
    scale: async (a) => {
      await port.scaleService(a.swarmServiceId, a.replicas);
      logger.info({ deploymentId: a.deploymentId, swarmServiceId: a.swarmServiceId, replicas: a.replicas }, 'service scaled');
    },
    remove: async (a) => {
      await port.removeService(a.swarmServiceId);
      logger.info({ deploymentId: a.deploymentId, swarmServiceId: a.swarmServiceId, reason: a.reason }, 'service removed');
    },
  };
}

export function runAction(handlers: ActionHandlers, action: Action): Promise<void> {
  return (handlers[action.kind] as (a: Action) => Promise<void>)(action);
}

/** Run tasks with at most `limit` in flight; never rejects (each result says how it went). */
export async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { status: 'fulfilled', value: await fn(items[i]!) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
