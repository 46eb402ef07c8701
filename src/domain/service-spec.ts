import { createHash } from 'node:crypto';
import type { Deployment } from '../protocol/deployment.js';
import { secretMountTarget } from '../protocol/deployment-schema.js';
import { SWARM_MIN_MEMORY_BYTES } from '../protocol/resource-limits.js';
import { LABEL } from './labels.js';
import { networkName, secretName, serviceName } from './naming.js';

/**
 * Deployment → Docker Engine API ServiceSpec, as plain data. Pure: the executor sends it (adding
 * SecretID to each secret reference once the secret exists, and X-Registry-Auth from
 * d.registryAuth), the planner compares its hash with the one labelled on the live service.
 *
 * Decisions (see also the report to the lead):
 * - `command` maps to ContainerSpec.Args (replaces the image's CMD, keeps its ENTRYPOINT), the
 *   semantics of both `docker run IMAGE cmd...` and `docker service create IMAGE cmd...`; images
 *   whose entrypoint is a wrapper script (`exec "$@"`) keep working.
 * - Secrets are files. `envVarName` adds `<envVarName>_FILE=<path>`: Swarm has no secret-as-env,
 *   and putting the value in Env would publish it in the spec to anyone who can inspect services.
 * - The spec hash leaves out Mode.Replicated.Replicas (scaling, including stop/start, is a
 *   `scale` action, not a rolling update), the spec-hash labels themselves and SecretIDs (assigned
 *   by Swarm). Secret contents count through their content-hashed names.
 * - Host-mode ports on a node-pinned service cannot be bound twice, so a service with a fixed
 *   externalPort updates stop-first (start-first would make the new task fail to bind and roll
 *   back forever); every other service updates start-first.
 * - diskGb has no Swarm equivalent (no storage quota on service tasks); it is metered, not enforced.
 * - Endpoint mode dnsrr: every published port is host-mode, so a virtual IP would serve only
 *   in-network traffic, yet it costs an address per service on the organization network and a
 *   load-balancer entry in every container of that network. Without it an organization of 1,000
 *   services needs 1,000 addresses, not 2,000, and a container start does not grow with the
 *   number of services. The service name resolves to its tasks' addresses instead (clients that
 *   cache DNS for long see a restarted task's new address late).
 */

const SECOND_NS = 1_000_000_000;
const MB = 1024 * 1024;

export interface SecretReference {
  SecretName: string;
  File: { Name: string; UID: string; GID: string; Mode: number };
}

export interface PortConfig {
  Protocol: 'tcp';
  TargetPort: number;
  PublishedPort?: number;
  PublishMode: 'host';
}

interface UpdatePolicy {
  Parallelism: number;
  Delay: number;
  FailureAction: 'rollback' | 'pause' | 'continue';
  Monitor: number;
  MaxFailureRatio: number;
  Order: 'start-first' | 'stop-first';
}

export interface ServiceSpec {
  Name: string;
  Labels: Record<string, string>;
  TaskTemplate: {
    ContainerSpec: {
      Image: string;
      Labels: Record<string, string>;
      Env: string[];
      Args?: string[];
      Secrets?: SecretReference[];
    };
    Resources: {
      Limits: { NanoCPUs: number; MemoryBytes: number };
      Reservations: { NanoCPUs: number; MemoryBytes: number };
    };
    RestartPolicy: { Condition: 'any'; Delay: number; Window: number };
    Placement: { Constraints: string[] };
    Networks: { Target: string }[];
    LogDriver: { Name: string; Options: Record<string, string> };
  };
  Mode: { Replicated: { Replicas: number } };
  UpdateConfig: UpdatePolicy;
  RollbackConfig: UpdatePolicy;
  EndpointSpec: { Mode: 'vip' | 'dnsrr'; Ports?: PortConfig[] };
}

export interface SpecContext {
  workerId: string;
  nodeId: string;
}

export interface SecretToCreate {
  /** Content-hashed Swarm secret name; the value is `d.secrets[dataRef].value`. */
  name: string;
  dataRef: number;
  labels: Record<string, string>;
}

export interface BuiltService {
  spec: ServiceSpec;
  specHash: string;
  secrets: SecretToCreate[];
}

/** The ownership labels every object made for this deployment carries (spec-hash aside). */
export function deploymentLabels(d: Deployment, workerId: string): Record<string, string> {
  return {
    [LABEL.managed]: 'true',
    [LABEL.workerId]: workerId,
    [LABEL.deploymentId]: d.id,
    [LABEL.serviceId]: d.serviceId,
    [LABEL.organizationId]: d.organizationId,
  };
}

export function desiredReplicas(d: Deployment): number {
  return d.desiredState === 'stopped' ? 0 : d.replicas;
}

function updatePolicy(order: UpdatePolicy['Order'], failureAction: UpdatePolicy['FailureAction']): UpdatePolicy {
  return { Parallelism: 1, Delay: 0, FailureAction: failureAction, Monitor: 15 * SECOND_NS, MaxFailureRatio: 0, Order: order };
}

/**
 * Built specs are reused while the deployment and the context are the same: every resync pass
 * needs the spec and hash of every deployment, and building and hashing them was most of a
 * pass's CPU (500 deployments: ~40 of ~60 ms). Parsed deployments are never mutated, so the
 * object itself is the key; a new desired set brings new objects, and the old entries go with
 * the objects. The result is shared: callers must not mutate it.
 */
const builtByDeployment = new WeakMap<Deployment, { context: string; built: BuiltService }>();

export function buildServiceSpec(d: Deployment, ctx: SpecContext): BuiltService {
  const context = `${ctx.workerId}\n${ctx.nodeId}`;
  const hit = builtByDeployment.get(d);
  if (hit?.context === context) return hit.built;
  const result = buildFresh(d, ctx);
  builtByDeployment.set(d, { context, built: result });
  return result;
}

function buildFresh(d: Deployment, ctx: SpecContext): BuiltService {
  const name = serviceName(d);
  const labels = deploymentLabels(d, ctx.workerId);
  const serviceLabels: Record<string, string> = { ...labels };

  const env = new Map<string, string>(Object.entries(d.environmentVars));
  const secrets: SecretToCreate[] = [];
  const refs: SecretReference[] = [];
  (d.secrets ?? []).forEach((s, i) => {
    const swarmName = secretName(s, d.serviceId);
    const target = secretMountTarget(s);
    secrets.push({ name: swarmName, dataRef: i, labels: { ...labels } });
    // Root-owned, owner-read-only: the file is for the main process, not for every user in the image.
    refs.push({ SecretName: swarmName, File: { Name: target, UID: '0', GID: '0', Mode: 0o400 } });
    if (s.envVarName !== undefined) env.set(`${s.envVarName}_FILE`, target);
  });
  // Sorted so the panel reordering its JSON never looks like a change.
  const envList = [...env.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${k}=${v}`);
  refs.sort((a, b) => (a.File.Name < b.File.Name ? -1 : a.File.Name > b.File.Name ? 1 : 0));

  // The schema's minimum (0.01 cores) keeps this at 1e7 or more: 0 would mean "no limit" to Swarm.
  const nanoCpus = Math.round(d.resourceLimits.cpuCores * SECOND_NS);
  const memoryBytes = d.resourceLimits.memoryMb * MB;
  const ports: PortConfig[] = [];
  if (d.internalPort !== undefined) {
    ports.push({
      Protocol: 'tcp',
      TargetPort: d.internalPort,
      ...(d.externalPort !== undefined ? { PublishedPort: d.externalPort } : {}),
      PublishMode: 'host',
    });
  }
  const order = d.externalPort !== undefined ? 'stop-first' : 'start-first';

  const spec: ServiceSpec = {
    Name: name,
    Labels: serviceLabels,
    TaskTemplate: {
      ContainerSpec: {
        Image: d.imageTag,
        Labels: { ...labels },
        Env: envList,
        ...(d.command !== undefined && d.command.length > 0 ? { Args: [...d.command] } : {}),
        ...(refs.length > 0 ? { Secrets: refs } : {}),
      },
      Resources: {
        Limits: { NanoCPUs: nanoCpus, MemoryBytes: memoryBytes },
        // Half the limit, but never under Swarm's floor for a reservation (the schema's minimum limit is above it).
        Reservations: { NanoCPUs: Math.floor(nanoCpus / 2), MemoryBytes: Math.max(Math.floor(memoryBytes / 2), SWARM_MIN_MEMORY_BYTES) },
      },
      // No MaxAttempts: a deployment that should run keeps being retried; the panel decides to stop it.
      RestartPolicy: { Condition: 'any', Delay: 5 * SECOND_NS, Window: 0 },
      Placement: { Constraints: [`node.id==${ctx.nodeId}`] },
      Networks: [{ Target: networkName(d.organizationId) }],
      // A tenant's chatty container must not fill the worker's disk with logs.
      LogDriver: { Name: 'json-file', Options: { 'max-size': '10m', 'max-file': '3' } },
    },
    Mode: { Replicated: { Replicas: desiredReplicas(d) } },
    UpdateConfig: updatePolicy(order, 'rollback'),
    // A failed rollback pauses: looping between two broken specs helps nobody.
    RollbackConfig: updatePolicy(order, 'pause'),
    EndpointSpec: { Mode: 'dnsrr', ...(ports.length > 0 ? { Ports: ports } : {}) },
  };

  const specHash = hashSpec(spec);
  spec.Labels[LABEL.specHash] = specHash;
  spec.TaskTemplate.ContainerSpec.Labels[LABEL.specHash] = specHash;
  for (const s of secrets) s.labels[LABEL.specHash] = specHash;
  return { spec, specHash, secrets };
}

/** sha256 of the canonical JSON of the spec minus what the hash must not cover (see top). */
export function hashSpec(spec: ServiceSpec): string {
  return createHash('sha256')
    .update(canonicalJson(hashedView(spec)), 'utf8')
    .digest('hex');
}

/** The part of a spec its hash covers: two specs hash alike exactly when their views have the same canonical JSON. */
export function hashedView(spec: ServiceSpec): unknown {
  const { [LABEL.specHash]: _s1, ...labels } = spec.Labels;
  const { [LABEL.specHash]: _s2, ...containerLabels } = spec.TaskTemplate.ContainerSpec.Labels;
  const secretRefs = spec.TaskTemplate.ContainerSpec.Secrets?.map(({ SecretName, File }) => ({ SecretName, File }));
  const hashed = {
    ...spec,
    Labels: labels,
    TaskTemplate: {
      ...spec.TaskTemplate,
      ContainerSpec: { ...spec.TaskTemplate.ContainerSpec, Labels: containerLabels, Secrets: secretRefs },
    },
    Mode: { Replicated: {} },
    // Hashed as the 'vip' every service had before dnsrr: a changed hash would update (restart)
    // every running deployment on upgrade. Existing services keep vip until their next update,
    // which sends dnsrr; a hand-made change of the mode alone is not seen as drift.
    EndpointSpec: { ...spec.EndpointSpec, Mode: 'vip' },
  };
  return hashed;
}

/** JSON with object keys sorted at every level and undefined members dropped; array order kept. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** The per-organization overlay: encrypted (tenant traffic between nodes), attachable (for debugging). */
export function buildNetworkSpec(organizationId: string) {
  return {
    Name: networkName(organizationId),
    Driver: 'overlay',
    Attachable: true,
    Options: { encrypted: '' },
    // Shared by every worker's agent in the swarm, so no worker id: any of them may create it first.
    Labels: { [LABEL.managed]: 'true', [LABEL.organizationId]: organizationId },
  };
}
