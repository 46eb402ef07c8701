import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { LABEL } from '../../src/domain/labels.js';
import { networkName, serviceName } from '../../src/domain/naming.js';
import { buildNetworkSpec, buildServiceSpec, canonicalJson, hashSpec } from '../../src/domain/service-spec.js';
import { parseDeployment, type Deployment } from '../../src/protocol/deployment.js';

const SECRET = 'S3CRET-value-for-spec-test';
const PASSWORD = 'registry-pass-for-spec-test';
const ctx = { workerId: 'w1', nodeId: 'node-abc' };
const SEC = 1_000_000_000;

function dep(over: Record<string, unknown> = {}): Deployment {
  const r = parseDeployment({
    id: 'dep_1',
    serviceId: 'svc_1',
    organizationId: 'org_1',
    slug: 'My App',
    imageTag: 'ghcr.io/acme/app:1.0',
    desiredState: 'running',
    replicas: 1,
    environmentVars: { ZED: 'z', ALPHA: 'a=b' },
    resourceLimits: { cpuCores: 0.5, memoryMb: 512 },
    internalPort: 8080,
    command: ['npm', 'start'],
    secrets: [
      { name: 'db-password', value: SECRET, envVarName: 'DB_PASSWORD' },
      { name: 'tls.key', value: 'k', mountPath: '/etc/tls/key.pem' },
      { name: 'plain', value: 'p' },
    ],
    registryAuth: { serveraddress: 'ghcr.io', username: 'u', password: PASSWORD },
    ...over,
  });
  if (!r.ok) throw new Error(r.rejected.message);
  return r.deployment;
}

describe('buildServiceSpec: shape', () => {
  const built = buildServiceSpec(dep(), ctx);
  const { spec } = built;
  const cs = spec.TaskTemplate.ContainerSpec;

  it('names the service deterministically and labels it for ownership', () => {
    expect(spec.Name).toBe(serviceName({ slug: 'My App', serviceId: 'svc_1' }));
    const expected = {
      [LABEL.managed]: 'true',
      [LABEL.workerId]: 'w1',
      [LABEL.deploymentId]: 'dep_1',
      [LABEL.serviceId]: 'svc_1',
      [LABEL.organizationId]: 'org_1',
      [LABEL.specHash]: built.specHash,
    };
    expect(spec.Labels).toEqual(expected);
    expect(cs.Labels).toEqual(expected);
  });

  it('maps image, command (to Args) and sorted env with secret _FILE pointers', () => {
    expect(cs.Image).toBe('ghcr.io/acme/app:1.0');
    expect(cs.Args).toEqual(['npm', 'start']);
    expect(cs).not.toHaveProperty('Command');
    expect(cs.Env).toEqual(['ALPHA=a=b', 'DB_PASSWORD_FILE=/run/secrets/DB_PASSWORD', 'ZED=z']);
  });

  it('mounts secrets read-only for root, by content-hashed name, sorted by target', () => {
    expect(cs.Secrets!.map((s) => s.File.Name)).toEqual(['/etc/tls/key.pem', '/run/secrets/DB_PASSWORD', '/run/secrets/plain']);
    for (const s of cs.Secrets!) {
      expect(s.File).toMatchObject({ UID: '0', GID: '0', Mode: 0o400 });
      expect(s.SecretName).toMatch(/^sp-[a-z0-9-]+-[0-9a-f]{16}$/);
      expect(s).not.toHaveProperty('SecretID');
    }
    expect(built.secrets.map((s) => s.dataRef)).toEqual([0, 1, 2]);
    expect(built.secrets[0]!.name).toBe(cs.Secrets!.find((s) => s.File.Name === '/run/secrets/DB_PASSWORD')!.SecretName);
    expect(built.secrets[0]!.labels).toEqual(spec.Labels);
  });

  it('sets limits from resourceLimits and reservations at half', () => {
    expect(spec.TaskTemplate.Resources).toEqual({
      Limits: { NanoCPUs: 0.5 * SEC, MemoryBytes: 512 * 1024 * 1024 },
      Reservations: { NanoCPUs: 0.25 * SEC, MemoryBytes: 256 * 1024 * 1024 },
    });
  });

  it('never lets a limit round to "unlimited" and keeps reservations at Swarm\'s 4 MiB floor', () => {
    // The schema's smallest limits: 0.01 cores (a 1 ms CFS quota) and 6 MiB (dockerd's minimum).
    expect(buildServiceSpec(dep({ resourceLimits: { cpuCores: 0.01, memoryMb: 6 } }), ctx).spec.TaskTemplate.Resources).toEqual({
      Limits: { NanoCPUs: 10_000_000, MemoryBytes: 6 * 1024 * 1024 },
      Reservations: { NanoCPUs: 5_000_000, MemoryBytes: 4 * 1024 * 1024 },
    });
  });

  it('pins to the node, joins the org network, restarts on any exit', () => {
    expect(spec.TaskTemplate.Placement).toEqual({ Constraints: ['node.id==node-abc'] });
    expect(spec.TaskTemplate.Networks).toEqual([{ Target: networkName('org_1') }]);
    expect(spec.TaskTemplate.RestartPolicy).toMatchObject({ Condition: 'any', Delay: 5 * SEC });
  });

  it('rolls out start-first with automatic rollback when no host port is fixed', () => {
    expect(spec.Mode).toEqual({ Replicated: { Replicas: 1 } });
    expect(spec.UpdateConfig).toMatchObject({ Parallelism: 1, Order: 'start-first', FailureAction: 'rollback', Monitor: 15 * SEC });
    expect(spec.RollbackConfig).toMatchObject({ Parallelism: 1, Order: 'start-first', FailureAction: 'pause' });
    expect(spec.EndpointSpec).toEqual({ Mode: 'dnsrr', Ports: [{ Protocol: 'tcp', TargetPort: 8080, PublishMode: 'host' }] });
  });

  it('publishes a fixed host port and then updates stop-first (one port, one node)', () => {
    const s = buildServiceSpec(dep({ externalPort: 30080 }), ctx).spec;
    expect(s.EndpointSpec.Ports).toEqual([{ Protocol: 'tcp', TargetPort: 8080, PublishedPort: 30080, PublishMode: 'host' }]);
    expect(s.UpdateConfig.Order).toBe('stop-first');
    expect(s.RollbackConfig.Order).toBe('stop-first');
  });

  it('leaves out ports, Args and Secrets when there are none', () => {
    const s = buildServiceSpec(dep({ internalPort: undefined, command: [], secrets: [] }), ctx).spec;
    expect(s.EndpointSpec).toEqual({ Mode: 'dnsrr' });
    expect(s.TaskTemplate.ContainerSpec).not.toHaveProperty('Args');
    expect(s.TaskTemplate.ContainerSpec).not.toHaveProperty('Secrets');
  });

  it('never carries a secret value or registry password', () => {
    const text = JSON.stringify(built) + inspect(built, { depth: 20 });
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(PASSWORD);
  });
});

describe('buildServiceSpec: spec hash', () => {
  const h = (over: Record<string, unknown> = {}, c: typeof ctx = ctx) => buildServiceSpec(dep(over), c).specHash;
  const baseHash = h();

  it('is sha256 hex of the spec minus its own label, and reproducible', () => {
    const { spec, specHash } = buildServiceSpec(dep(), ctx);
    expect(specHash).toMatch(/^[0-9a-f]{64}$/);
    expect(hashSpec(spec)).toBe(specHash);
    expect(h()).toBe(baseHash);
  });

  it('ignores replica count and stop/start (those are scale actions)', () => {
    expect(h({ replicas: 3 })).toBe(baseHash);
    expect(h({ desiredState: 'stopped' })).toBe(baseHash);
    expect(buildServiceSpec(dep({ desiredState: 'stopped', replicas: 4 }), ctx).spec.Mode.Replicated.Replicas).toBe(0);
    expect(buildServiceSpec(dep({ replicas: 4 }), ctx).spec.Mode.Replicated.Replicas).toBe(4);
  });

  it('ignores the order env vars and secrets arrive in', () => {
    expect(h({ environmentVars: { ALPHA: 'a=b', ZED: 'z' } })).toBe(baseHash);
    const d = dep();
    const reordered = buildServiceSpec({ ...d, secrets: [...d.secrets!].reverse() }, ctx).specHash;
    expect(reordered).toBe(baseHash);
  });

  it('ignores the registry password (sent per call, not stored in the spec)', () => {
    expect(h({ registryAuth: { serveraddress: 'ghcr.io', username: 'u', password: 'rotated' } })).toBe(baseHash);
  });

  it.each<[string, Record<string, unknown>]>([
    ['image', { imageTag: 'ghcr.io/acme/app:1.1' }],
    ['env value', { environmentVars: { ZED: 'z2', ALPHA: 'a=b' } }],
    ['env removed', { environmentVars: { ZED: 'z' } }],
    ['cpu', { resourceLimits: { cpuCores: 1, memoryMb: 512 } }],
    ['memory', { resourceLimits: { cpuCores: 0.5, memoryMb: 1024 } }],
    ['command', { command: ['npm', 'run', 'serve'] }],
    ['deployment id', { id: 'dep_2' }],
    ['slug (name)', { slug: 'renamed' }],
    ['port', { internalPort: 9090 }],
    ['published port', { externalPort: 30001 }],
    ['secret value (rotation)', { secrets: [{ name: 'db-password', value: 'new', envVarName: 'DB_PASSWORD' }] }],
  ])('changes with %s', (_n, over) => expect(h(over)).not.toBe(baseHash));

  it('changes with the node', () => {
    expect(h({}, { ...ctx, nodeId: 'node-other' })).not.toBe(baseHash);
  });
});

describe('canonicalJson', () => {
  it('sorts keys at every level, keeps array order, drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).toBe('{"a":{"d":[3,{"y":2,"z":1}]},"b":1}');
    expect(canonicalJson({ x: 1, y: 2 })).toBe(canonicalJson({ y: 2, x: 1 }));
  });
});

describe('buildNetworkSpec', () => {
  it('is an encrypted attachable overlay named per organization, shared by every worker (no worker id)', () => {
    expect(buildNetworkSpec('org_1')).toEqual({
      Name: networkName('org_1'),
      Driver: 'overlay',
      Attachable: true,
      Options: { encrypted: '' },
      Labels: { [LABEL.managed]: 'true', [LABEL.organizationId]: 'org_1' },
    });
  });
});
