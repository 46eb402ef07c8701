import type { Action } from '../../domain/planner.js';
import { buildNetworkSpec, buildServiceSpec, type ServiceSpec, type SpecContext } from '../../domain/service-spec.js';
import type { Deployment } from '../../protocol/deployment.js';
import type { Logger } from '../logger.js';
import type { SwarmPort } from '../../ports.js';

export type ActionHandlers = { [K in Action['kind']]: (a: Extract<Action, { kind: K }>) => Promise<void> };

/**
 * One executor per action kind, so adding an action without an executor does not compile.
 * Executors are idempotent: "already exists" and "not found" count as done (handled in the port).
 */
export function createActionHandlers(
  port: SwarmPort,
  desired: ReadonlyMap<string, Deployment>,
  ctx: SpecContext,
  logger: Logger,
): ActionHandlers {
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
    return refs
      ? {
          ...built.spec,
          TaskTemplate: { ...built.spec.TaskTemplate, ContainerSpec: { ...built.spec.TaskTemplate.ContainerSpec, Secrets: refs } },
        }
      : built.spec;
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
      const fields = { deploymentId: d.id, swarmServiceId: a.swarmServiceId, specHash: a.specHash, reason: a.reason };
      if (a.reason !== 'drift') logger.info(fields, 'service updated');
      // Which fields were changed by hand, as balena's isEqualConfig logs its diff; paths only, as env values may be secrets.
      else logger.warn({ ...fields, ...(a.drifted ? { drifted: a.drifted } : {}) }, 'service changed outside the agent; put back');
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
