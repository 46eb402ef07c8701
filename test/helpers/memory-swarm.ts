// An in-memory Swarm for the reconciler's unit tests: services made from the specs the reconciler
// sends, each with one running task, plus the fixtures those tests share.
import { randomUUID } from 'node:crypto';
import type { ObservedService } from '../../src/domain/observed-service.js';
import type { SwarmPort } from '../../src/ports.js';
import type { ServiceSpec } from '../../src/domain/service-spec.js';
import type { TaskObservation } from '../../src/domain/deployment-status.js';
import { parseDeployment, type Deployment } from '../../src/protocol/deployment.js';

export const WORKER = 'w-unit';
export const NODE = 'node-1';
export const noop = () => {};
export const logger = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, fatal: noop, child: () => logger } as never;

export function deployment(): Deployment {
  const r = parseDeployment({
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: 'org-1',
    slug: 'app',
    imageTag: 'img:1',
    desiredState: 'running',
    environmentVars: { A: 'b' },
    resourceLimits: { cpuCores: 0.5, memoryMb: 64 },
  });
  if (!r.ok) throw new Error(r.rejected.message);
  return r.deployment;
}

/** Swarm as a map: services made from the specs the reconciler sends, one running task each. */
export function memorySwarm() {
  const services = new Map<string, ObservedService & { spec: ServiceSpec; version: number }>();
  const updates: string[] = [];
  const secrets = new Map<string, { id: string; name: string; labels: Record<string, string> }>();
  /** Services placed by something other than an agent (SkyPanelV2's orchestrator): listed, never written. */
  const unmanaged: ObservedService[] = [];
  const port: SwarmPort = {
    listUnmanagedServices: async () => unmanaged.map((s) => ({ ...s })),
    listServices: async () => [...services.values()].map((s) => ({ ...s, spec: structuredClone(s.spec) })),
    listTasks: async () =>
      [...services.values()].map((s): TaskObservation => ({
        serviceId: s.id,
        desiredState: 'running',
        state: 'running',
        message: 'started',
        timestamp: '2026-01-01T00:00:00Z',
        hostPorts: [],
      })),
    createService: async (spec) => {
      const id = `svc-${services.size + 1}`;
      services.set(id, {
        id,
        name: spec.Name,
        labels: { ...spec.Labels },
        replicas: spec.Mode.Replicated.Replicas,
        spec: structuredClone(spec),
        version: 1,
      });
      return id;
    },
    updateService: async (id, spec) => {
      updates.push(id);
      const s = services.get(id)!;
      services.set(id, { ...s, labels: { ...spec.Labels }, spec: structuredClone(spec), version: s.version + 1 });
    },
    scaleService: async () => {},
    removeService: async (id) => void services.delete(id),
    ensureNetwork: async () => {},
    ensureSecret: async (name, _value, labels) => {
      secrets.set(name, { id: `secret-${name}`, name, labels: { ...labels } });
      return `secret-${name}`;
    },
    listSecrets: async () => [...secrets.values()],
    removeSecret: async (id) => {
      for (const [name, s] of secrets) if (s.id === id) secrets.delete(name);
      return true;
    },
    serviceLogs: async () => [],
  };
  return { port, services, updates, secrets, unmanaged };
}
