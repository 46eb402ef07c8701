import type Docker from 'dockerode';
import { ownershipFilter } from '../domain/labels.js';
import type { ServiceSpec } from '../domain/service-spec.js';
import type { TaskObservation } from '../domain/deployment-status.js';
import type { RegistryAuth } from '../protocol/deployment.js';
import type { Secret } from '../secret.js';
import type { ObservedServiceLite, SwarmPort } from '../agent/executor.js';
import { demuxDockerLogs } from './logs.js';

export class SwarmError extends Error {
  readonly code = 'SKP_ERR_SWARM';
  readonly statusCode: number | undefined;
  constructor(message: string, statusCode?: number) {
    super(message);
    this.name = 'SwarmError';
    this.statusCode = statusCode;
  }
}

interface DockerApiError {
  statusCode?: number;
  json?: { message?: string };
  reason?: string;
  message?: string;
  code?: string;
}

/**
 * Docker's error text can quote the request (a secret's data, a registry login), so every error
 * leaving this module is rebuilt from the API message with every revealed value cut out.
 */
function wrap(what: string, err: unknown, reveal: readonly string[] = []): SwarmError {
  const e = err as DockerApiError;
  let msg = e.json?.message ?? e.reason ?? e.message ?? e.code ?? String(err);
  for (const v of reveal) if (v) msg = msg.split(v).join('[redacted]');
  return new SwarmError(`${what}: ${msg.slice(0, 400)}`, e.statusCode);
}

function registryAuthHeader(auth: RegistryAuth | undefined): { serveraddress: string; username: string; password: string } | undefined {
  if (!auth) return undefined;
  return { serveraddress: auth.serveraddress, username: auth.username, password: auth.password.reveal() };
}

interface ServiceInfo {
  ID: string;
  Version?: { Index?: number };
  Spec?: { Name?: string; Labels?: Record<string, string>; Mode?: { Replicated?: { Replicas?: number } } };
  UpdateStatus?: { State?: string; Message?: string };
}

interface TaskInfo {
  ID: string;
  ServiceID: string;
  NodeID?: string;
  DesiredState?: string;
  Status?: {
    State?: string;
    Message?: string;
    Err?: string;
    Timestamp?: string;
    ContainerStatus?: { ContainerID?: string; ExitCode?: number };
    PortStatus?: { Ports?: { TargetPort?: number; PublishedPort?: number }[] };
  };
}

/**
 * The reconciler's Swarm port over the Engine API, writing through a manager. A steady-state
 * pass costs two calls: services by this worker's labels, and tasks on this node (Swarm task
 * filters match task labels, which services do not propagate, so tasks are taken by node and
 * matched to our services here).
 */
export function createSwarmPort(docker: Docker, opts: { workerId: string; nodeId: () => string | null }): SwarmPort {
  const labelFilter = JSON.stringify({ label: ownershipFilter(opts.workerId) });
  const networksInFlight = new Map<string, Promise<void>>();
  let ownIds = new Set<string>();
  return {
    async listServices(): Promise<ObservedServiceLite[]> {
      let list: ServiceInfo[];
      try {
        list = (await docker.listServices({ filters: labelFilter })) as unknown as ServiceInfo[];
      } catch (err) {
        throw wrap('listing services', err);
      }
      ownIds = new Set(list.map((s) => s.ID));
      return list.map((s) => ({
        id: s.ID,
        name: s.Spec?.Name ?? '',
        labels: s.Spec?.Labels ?? {},
        replicas: s.Spec?.Mode?.Replicated?.Replicas ?? 0,
        specHash: s.Spec?.Labels?.['skypanel.spec-hash'],
        updateState: s.UpdateStatus?.State,
        updateMessage: s.UpdateStatus?.Message,
        spec: s.Spec,
      }));
    },

    async listTasks(): Promise<TaskObservation[]> {
      const node = opts.nodeId();
      let list: TaskInfo[];
      try {
        list = (await docker.listTasks({ filters: JSON.stringify(node ? { node: [node] } : {}) })) as unknown as TaskInfo[];
      } catch (err) {
        throw wrap('listing tasks', err);
      }
      return list
        .filter((t) => ownIds.has(t.ServiceID))
        .map((t) => ({
          serviceId: t.ServiceID,
          desiredState: t.DesiredState ?? 'unknown',
          state: t.Status?.State ?? 'unknown',
          message: t.Status?.Message,
          err: t.Status?.Err,
          containerId: t.Status?.ContainerStatus?.ContainerID || undefined,
          exitCode: t.Status?.ContainerStatus?.ExitCode,
          timestamp: t.Status?.Timestamp ?? '',
          hostPorts: (t.Status?.PortStatus?.Ports ?? [])
            .filter((p) => p.TargetPort !== undefined && p.PublishedPort !== undefined)
            .map((p) => ({ target: p.TargetPort!, published: p.PublishedPort! })),
        }));
    },

    async createService(spec: ServiceSpec, auth?: RegistryAuth): Promise<string> {
      const header = registryAuthHeader(auth);
      try {
        // An explicit null auth: with one argument dockerode would send the spec itself as X-Registry-Auth.
        const res = (await docker.createService((header ?? null) as never, spec as never)) as unknown as { ID?: string; id?: string };
        return res.ID ?? res.id ?? '';
      } catch (err) {
        throw wrap(`creating service ${spec.Name}`, err, header ? [header.password] : []);
      }
    },

    async updateService(id: string, spec: ServiceSpec, auth?: RegistryAuth): Promise<void> {
      const header = registryAuthHeader(auth);
      const service = docker.getService(id);
      // Swarm refuses an update against a stale version ("update out of sequence"): read it, send, retry once.
      for (let attempt = 0; ; attempt++) {
        try {
          const info = (await service.inspect()) as ServiceInfo;
          // _query/_body keep the spec (env values included) out of the URL: dockerode would otherwise put it there.
          const body = { _query: { version: info.Version?.Index ?? 0 }, _body: spec };
          if (header) await service.update(header, body as never);
          else await service.update(body as never);
          return;
        } catch (err) {
          const text = (err as DockerApiError).json?.message ?? '';
          if (attempt === 0 && /out of sequence/i.test(text)) continue;
          throw wrap(`updating service ${id}`, err, header ? [header.password] : []);
        }
      }
    },

    async scaleService(id: string, replicas: number): Promise<void> {
      const service = docker.getService(id);
      try {
        const info = (await service.inspect()) as ServiceInfo & { Spec: ServiceSpec };
        const spec = { ...info.Spec, Mode: { Replicated: { Replicas: replicas } } };
        await service.update({ _query: { version: info.Version?.Index ?? 0 }, _body: spec } as never);
      } catch (err) {
        throw wrap(`scaling service ${id}`, err);
      }
    },

    async removeService(id: string): Promise<void> {
      try {
        await docker.getService(id).remove();
      } catch (err) {
        if ((err as DockerApiError).statusCode === 404) return;
        throw wrap(`removing service ${id}`, err);
      }
    },

    ensureNetwork(spec): Promise<void> {
      // Creates for one organization run concurrently in a pass: share one in-flight attempt per name.
      let pending = networksInFlight.get(spec.Name);
      if (!pending) {
        pending = ensureNetworkOnce(docker, spec).finally(() => networksInFlight.delete(spec.Name));
        networksInFlight.set(spec.Name, pending);
      }
      return pending;
    },

    async ensureSecret(name: string, value: Secret, labels: Record<string, string>): Promise<string> {
      const find = async () => {
        const list = (await docker.listSecrets({ filters: JSON.stringify({ name: [name] }) })) as { ID: string; Spec?: { Name?: string } }[];
        return list.find((s) => s.Spec?.Name === name)?.ID;
      };
      try {
        const existing = await find();
        if (existing) return existing;
        const created = (await docker.createSecret({ Name: name, Labels: labels, Data: Buffer.from(value.reveal()).toString('base64') })) as unknown as { id?: string; ID?: string };
        return created.id ?? created.ID ?? (await find()) ?? '';
      } catch (err) {
        if ((err as DockerApiError).statusCode === 409) {
          const id = await find().catch(() => undefined);
          if (id) return id;
        }
        throw wrap(`creating secret ${name}`, err, [value.reveal(), Buffer.from(value.reveal()).toString('base64')]);
      }
    },

    async serviceLogs(id: string, tail: number): Promise<string[]> {
      try {
        const raw = (await docker.getService(id).logs({ stdout: true, stderr: true, tail, follow: false, timestamps: false } as never)) as unknown as Buffer;
        return demuxDockerLogs(Buffer.isBuffer(raw) ? raw : Buffer.from(String(raw))).slice(-tail);
      } catch (err) {
        throw wrap(`reading logs of service ${id}`, err);
      }
    },
  };
}

async function ensureNetworkOnce(docker: Docker, spec: { Name: string }): Promise<void> {
  const exists = async () => {
    const list = (await docker.listNetworks({ filters: JSON.stringify({ name: [spec.Name] }) })) as { Name: string }[];
    return list.some((n) => n.Name === spec.Name);
  };
  try {
    if (await exists()) return;
    await docker.createNetwork(spec as never);
  } catch (err) {
    // Another agent (or node) created it between our look and our create: Swarm says 409 or "name conflicts".
    if (await exists().catch(() => false)) return;
    throw wrap(`creating network ${spec.Name}`, err);
  }
}
