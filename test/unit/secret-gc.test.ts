// Removing Swarm secrets nothing uses any more: the pure decision (domain/secret-gc.ts), the sweep's
// schedule (agent/secret-sweeper.ts), and a reconciler on an in-memory Swarm rotating a value and
// withdrawing a deployment. test/e2e/secret-cleanup.test.ts does the same on a real swarm.
import { describe, expect, it } from 'vitest';
import { Reconciler } from '../../src/agent/deployments/reconciler.js';
import { SECRET_SWEEP_RETRY_MS, SecretSweeper } from '../../src/agent/deployments/secret-sweeper.js';
import type { ReconcilePassView } from '../../src/agent/status/status-model.js';
import { LABEL } from '../../src/domain/labels.js';
import { secretsInUse, unusedSecrets } from '../../src/domain/secret-gc.js';
import { parseDeployment, type Deployment } from '../../src/protocol/deployment.js';
import { logger, memorySwarm, NODE, noop, WORKER } from '../helpers/memory-swarm.js';

const mine = { [LABEL.managed]: 'true', [LABEL.workerId]: WORKER };
const spec = (...names: string[]) => ({
  TaskTemplate: { ContainerSpec: { Secrets: names.map((n) => ({ SecretName: n, SecretID: `id-${n}` })) } },
});

describe('secretsInUse / unusedSecrets', () => {
  it('counts live service specs, tasks that have not ended, and the desired set', () => {
    const inUse = secretsInUse({
      serviceSpecs: [spec('svc-a'), undefined, { TaskTemplate: {} }],
      tasks: [
        { state: 'running', secretNames: ['old-running'] },
        { state: 'starting', secretNames: ['old-starting'] },
        { state: 'shutdown', secretNames: ['old-stopped'] },
        { state: 'failed', secretNames: ['old-failed'] },
        { state: 'running' },
      ],
      desired: ['new-desired'],
    });
    expect([...inUse].sort()).toEqual(['new-desired', 'old-running', 'old-starting', 'svc-a']);
  });

  it("offers only this worker's own secrets for removal, never another worker's or an unlabelled one", () => {
    const secrets = [
      { id: '1', name: 'used', labels: mine },
      { id: '2', name: 'unused', labels: mine },
      { id: '3', name: 'other-worker', labels: { ...mine, [LABEL.workerId]: 'w-other' } },
      { id: '4', name: 'by-hand', labels: null },
      { id: '5', name: 'unmanaged', labels: { [LABEL.workerId]: WORKER } },
    ];
    expect(unusedSecrets(secrets, new Set(['used']), WORKER).map((s) => s.id)).toEqual(['2']);
  });
});

describe('SecretSweeper: when it looks', () => {
  function fakePort(opts: { inUseBySwarm?: Set<string>; listFails?: boolean } = {}) {
    const secrets = new Map([['s1', { id: 's1', name: 'n1', labels: mine }]]);
    let lists = 0;
    return {
      secrets,
      lists: () => lists,
      port: {
        listSecrets: async () => {
          lists++;
          if (opts.listFails) throw new Error('engine down');
          return [...secrets.values()];
        },
        removeSecret: async (id: string) => (opts.inUseBySwarm?.has(id) ? false : secrets.delete(id) || true),
      },
    };
  }

  it('lists at the first pass and then only when the set in use changes', async () => {
    const f = fakePort();
    const sweeper = new SecretSweeper(f.port, WORKER, logger);
    await sweeper.sweep(new Set(['n1']), 0);
    await sweeper.sweep(new Set(['n1']), 1_000);
    await sweeper.sweep(new Set(['n1']), 10 * SECRET_SWEEP_RETRY_MS);
    expect(f.lists()).toBe(1);
    expect(f.secrets.size).toBe(1);
    await sweeper.sweep(new Set(), 20 * SECRET_SWEEP_RETRY_MS);
    expect(f.lists()).toBe(2);
    expect(f.secrets.size).toBe(0);
  });

  it('tries a secret Swarm would not remove again after the retry interval, not every pass', async () => {
    const f = fakePort({ inUseBySwarm: new Set(['s1']) });
    const sweeper = new SecretSweeper(f.port, WORKER, logger);
    await sweeper.sweep(new Set(), 0);
    await sweeper.sweep(new Set(), SECRET_SWEEP_RETRY_MS - 1);
    expect(f.lists()).toBe(1);
    await sweeper.sweep(new Set(), SECRET_SWEEP_RETRY_MS);
    expect(f.lists()).toBe(2);
  });

  it('never throws: a failed listing is tried again later', async () => {
    const f = fakePort({ listFails: true });
    const sweeper = new SecretSweeper(f.port, WORKER, logger);
    await expect(sweeper.sweep(new Set(), 0)).resolves.toBeUndefined();
    await sweeper.sweep(new Set(), SECRET_SWEEP_RETRY_MS);
    expect(f.lists()).toBe(2);
  });
});

describe('a reconciler removes the secrets it no longer needs', () => {
  function withSecret(value: string, base?: Deployment): Deployment {
    const r = parseDeployment({
      id: base?.id ?? 'dep-gc',
      serviceId: base?.serviceId ?? 'svc-gc',
      organizationId: 'org-1',
      slug: 'app',
      imageTag: 'img:1',
      desiredState: 'running',
      environmentVars: {},
      resourceLimits: { cpuCores: 0.5, memoryMb: 64 },
      secrets: [{ name: 'db', value }],
    });
    if (!r.ok) throw new Error(r.rejected.message);
    return r.deployment;
  }

  it("after a rotation and after a removal, once nothing references the old secret; others' secrets stay", async () => {
    const swarm = memorySwarm();
    swarm.secrets.set('foreign', { id: 'secret-foreign', name: 'foreign', labels: { ...mine, [LABEL.workerId]: 'w-other' } });
    let waiter: ((p: ReconcilePassView) => void) | undefined;
    const r = new Reconciler({
      port: swarm.port,
      workerId: WORKER,
      nodeId: () => NODE,
      ipAddress: '127.0.0.1',
      publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
      resyncMs: 3_600_000,
      logger,
      onStatus: noop,
      onPass: (p) => waiter?.(p),
    });
    const pass = (set?: Deployment[]) =>
      new Promise<ReconcilePassView>((resolve) => {
        waiter = resolve;
        if (set) r.setDesired({ deployments: set, rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() });
        else r.trigger();
      });
    const names = () => [...swarm.secrets.keys()].filter((n) => n !== 'foreign');
    r.start();
    const v1 = withSecret('value-one');
    await pass([v1]);
    const [first] = names();
    expect(names()).toHaveLength(1);

    const v2 = withSecret('value-two', v1);
    expect((await pass([v2])).actions.map((a) => a.kind)).toEqual(['update']);
    // The pass saw the service still on the old secret: kept until a pass sees nothing using it.
    expect(names()).toContain(first);
    await pass();
    expect(names()).toHaveLength(1);
    expect(names()).not.toContain(first);

    expect((await pass([])).actions.map((a) => a.kind)).toEqual(['remove']);
    await pass();
    expect(names()).toEqual([]);
    expect(swarm.secrets.has('foreign')).toBe(true);
    await r.stop();
  });
});
