import { describe, expect, it } from 'vitest';
import { deriveStatus, renderPublicUrl, type TaskObservation } from '../../src/domain/deployment-status.js';
import { driftedPaths, projectOnto, WHOLE_SPEC } from '../../src/domain/drift.js';
import { buildServiceSpec } from '../../src/domain/service-spec.js';
import { parseDeployment, type Deployment } from '../../src/protocol/deployment.js';
import { tailBytes } from '../../src/agent/deployments/status-reporter.js';
import { redact } from '../../src/secret.js';

function dep(over: Record<string, unknown> = {}): Deployment {
  const r = parseDeployment({
    id: 'd1',
    serviceId: 's1',
    organizationId: 'o1',
    slug: 'app',
    imageTag: 'nginx:1',
    desiredState: 'running',
    environmentVars: {},
    resourceLimits: { cpuCores: 1, memoryMb: 64 },
    internalPort: 80,
    ...over,
  });
  if (!r.ok) throw new Error(r.rejected.message);
  return r.deployment;
}
const svc = { id: 'svc1', replicas: 1 };
const task = (state: string, over: Partial<TaskObservation> = {}): TaskObservation => ({
  serviceId: 'svc1',
  desiredState: state === 'running' ? 'running' : 'shutdown',
  state,
  timestamp: '2026-11-25T10:00:00Z',
  hostPorts: [],
  ...over,
});

describe('deriveStatus', () => {
  it('deploying while no service exists yet, failed when creating it failed', () => {
    expect(deriveStatus(dep(), undefined, []).status).toBe('deploying');
    expect(deriveStatus(dep(), undefined, [], 'creating service: boom')).toMatchObject({
      status: 'failed',
      message: 'creating service: boom',
    });
  });

  it('running when the desired replicas run, with container id and the port Docker chose', () => {
    const d = deriveStatus(dep(), svc, [task('running', { containerId: 'c1', hostPorts: [{ target: 80, published: 30001 }] })]);
    expect(d).toMatchObject({ status: 'running', containerId: 'c1', externalPort: 30001, runningReplicas: 1, desiredReplicas: 1 });
  });

  it('a single failed task is not yet failed (restarts happen); two are', () => {
    expect(deriveStatus(dep(), svc, [task('failed', { err: 'x' })]).status).toBe('deploying');
    const d = deriveStatus(dep(), svc, [
      task('failed', { err: 'task: non-zero exit (3)', exitCode: 3, timestamp: '2026-11-25T10:00:02Z' }),
      task('failed', { err: 'older' }),
    ]);
    expect(d).toMatchObject({ status: 'failed', message: 'task: non-zero exit (3) (exit code 3)' });
  });

  it('a rejected task (missing image) is failed at once, with the reason', () => {
    expect(deriveStatus(dep(), svc, [task('rejected', { err: 'No such image: x:1' })])).toMatchObject({
      status: 'failed',
      message: 'No such image: x:1',
    });
  });

  it('stopped when desiredState is stopped and nothing runs', () => {
    expect(deriveStatus(dep({ desiredState: 'stopped' }), { id: 'svc1', replicas: 0 }, []).status).toBe('stopped');
    expect(deriveStatus(dep({ desiredState: 'stopped' }), undefined, []).status).toBe('stopped');
  });

  it('rolled_back when Swarm rolled the update back', () => {
    expect(
      deriveStatus(dep(), { ...svc, updateState: 'rollback_completed', updateMessage: 'rollback completed' }, [task('running')]),
    ).toMatchObject({ status: 'rolled_back', message: 'rollback completed' });
  });

  it('ignores tasks of other services', () => {
    expect(deriveStatus(dep(), svc, [task('running', { serviceId: 'other' })]).status).toBe('deploying');
  });
});

describe('public URL', () => {
  it('renders the default template, brackets IPv6, and stays null without a port', () => {
    const v = { ipAddress: '192.0.2.1', externalPort: 8080, slug: 'a b', serviceId: 's' };
    expect(renderPublicUrl('http://{ipAddress}:{externalPort}', v)).toBe('http://192.0.2.1:8080');
    expect(renderPublicUrl('https://{slug}.apps.example.com', v)).toBe('https://a%20b.apps.example.com');
    expect(renderPublicUrl('http://{ipAddress}:{externalPort}', { ...v, ipAddress: 'fd00:0000:0000:0000:0000:0000:0000:0005' })).toBe(
      'http://[fd00:0000:0000:0000:0000:0000:0000:0005]:8080',
    );
    expect(renderPublicUrl('http://{ipAddress}:{externalPort}', { ...v, externalPort: null })).toBeNull();
  });

  it('fills every documented placeholder, URL-encoding the panel names, and leaves other braces as written', () => {
    const v = { ipAddress: '192.0.2.1', externalPort: 8080, slug: 'shop', serviceId: 'svc/1' };
    expect(renderPublicUrl('https://{slug}.example.com/{serviceId}?p={externalPort}&h={ipAddress}&x={serviceName}', v)).toBe(
      'https://shop.example.com/svc%2F1?p=8080&h=192.0.2.1&x={serviceName}',
    );
  });
});

describe('drift', () => {
  const built = buildServiceSpec(dep({ environmentVars: { A: '1' } }), { workerId: 'w', nodeId: 'n' });
  const asDocker = () => {
    // Docker's spec as raw JSON, rewritten at any depth below.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const live = JSON.parse(JSON.stringify(built.spec)) as Record<string, any>;
    // What Docker adds or rewrites on its own: defaults, network ids, secret ids.
    live.TaskTemplate.ForceUpdate = 0;
    live.TaskTemplate.Runtime = 'container';
    live.TaskTemplate.Networks = [{ Target: 'q8l2network' }];
    live.TaskTemplate.ContainerSpec.Isolation = 'default';
    live.Mode.Replicated.Replicas = 3;
    // omitempty: Docker leaves zero values out of what it returns.
    delete live.UpdateConfig.Delay;
    return live;
  };

  it('Docker defaults, network ids and replica counts are not drift', () => {
    expect(driftedPaths(built.spec, asDocker())).toEqual([]);
  });

  it('an env var added by hand is drift at ContainerSpec.Env, named without its value', () => {
    const live = asDocker();
    live.TaskTemplate.ContainerSpec.Env.push('HACKED=s3cr3t-value');
    const paths = driftedPaths(built.spec, live);
    expect(paths).toEqual(['TaskTemplate.ContainerSpec.Env']);
    expect(JSON.stringify(paths)).not.toContain('s3cr3t');
  });

  it('names every drifted field, label keys quoted; a missing spec is drift of the whole spec', () => {
    const live = asDocker();
    live.TaskTemplate.Resources.Limits.MemoryBytes = 1;
    live.TaskTemplate.ContainerSpec.Image = 'other:1';
    live.Labels['skypanel.organization.id'] = 'someone-else';
    expect(driftedPaths(built.spec, live)).toEqual([
      'Labels["skypanel.organization.id"]',
      'TaskTemplate.ContainerSpec.Image',
      'TaskTemplate.Resources.Limits.MemoryBytes',
    ]);
    expect(driftedPaths(built.spec, undefined)).toEqual([WHOLE_SPEC]);
    const noTemplate = asDocker();
    delete noTemplate.TaskTemplate;
    expect(driftedPaths(built.spec, noTemplate)).toEqual(['TaskTemplate']);
  });

  it('a list nulled or emptied by hand is drift', () => {
    const live = asDocker();
    live.TaskTemplate.ContainerSpec.Env = null;
    expect(driftedPaths(built.spec, live)).toEqual(['TaskTemplate.ContainerSpec.Env']);
    const cleared = asDocker();
    cleared.TaskTemplate.ContainerSpec.Env = [];
    expect(driftedPaths(built.spec, cleared)).toEqual(['TaskTemplate.ContainerSpec.Env']);
  });

  it('projection keeps only the keys the agent set', () => {
    expect(projectOnto({ a: 1, b: { c: 2 } }, { a: 5, b: { c: 2, d: 3 }, e: 4 })).toEqual({ a: 5, b: { c: 2 } });
  });
});

describe('report hygiene', () => {
  it('scrubs known secret values from text and keeps short strings alone', () => {
    expect(redact('token=abcdef123 ok', ['abcdef123', 'ok'])).toBe('token=[redacted] ok');
  });

  it('keeps the newest lines within the byte budget', () => {
    const lines = Array.from({ length: 10_000 }, (_, i) => `line ${i} ${'x'.repeat(20)}`);
    const tail = tailBytes(lines, 64 * 1024);
    expect(Buffer.byteLength(tail)).toBeLessThanOrEqual(64 * 1024);
    expect(tail.endsWith(lines.at(-1)!)).toBe(true);
  });
});
