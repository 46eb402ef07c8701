// Deployments Swarm cannot place are reported failed after a bound (and running again once
// placed), and a deployment SkyPanelV2's own orchestrator already placed is never created twice.
// Pure derivation plus the reconciler over an in-memory Swarm; the real swarm is in
// test/e2e/unscheduled.test.ts and test/e2e/skypanel-placed.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { deriveStatus, nextSchedulingDeadline, type TaskObservation } from '../../src/domain/deployment-status.js';
import { heldElsewhere, plan } from '../../src/domain/planner.js';
import { LABEL } from '../../src/domain/labels.js';
import { Reconciler, type StatusChange } from '../../src/agent/deployments/reconciler.js';
import { deployment, logger, memorySwarm, NODE, WORKER } from '../helpers/memory-swarm.js';

const T0 = Date.parse('2026-12-04T12:00:00Z');
const svc = { id: 'svc-1', replicas: 1 };
const task = (over: Partial<TaskObservation>): TaskObservation => ({
  serviceId: 'svc-1',
  desiredState: 'running',
  state: 'pending',
  message: 'pending task scheduling',
  timestamp: new Date(T0).toISOString(),
  createdAt: new Date(T0).toISOString(),
  hostPorts: [],
  ...over,
});

describe('a task Swarm does not place', () => {
  const d = deployment();
  const bound = (afterMs: number) => ({ now: T0 + afterMs, failAfterMs: 60_000 });

  it("is deploying within the bound and failed after it, with Swarm's own reason", () => {
    const t = task({ err: 'no suitable node (insufficient resources on 1 node)' });
    expect(deriveStatus(d, svc, [t], undefined, bound(59_000)).status).toBe('deploying');
    const after = deriveStatus(d, svc, [t], undefined, bound(61_000));
    expect(after.status).toBe('failed');
    expect(after.message).toContain('no suitable node (insufficient resources on 1 node)');
    expect(after.message).toContain('60 s');
    // The message does not change from pass to pass (no age in it): no report per pass.
    expect(deriveStatus(d, svc, [t], undefined, bound(300_000)).message).toBe(after.message);
  });

  it('names the likely cause of a task left in state new (Swarm gives no error when a network has no free address)', () => {
    const r = deriveStatus(d, svc, [task({ state: 'new', message: 'created' })], undefined, bound(90_000));
    expect(r.status).toBe('failed');
    expect(r.message).toMatch(/\(new\).*no free address on its network/);
  });

  it('turns running by itself once the task runs, and ignores tasks that are placed, shut down or old history', () => {
    const running = task({ state: 'running', containerId: 'c1' });
    expect(deriveStatus(d, svc, [running], undefined, bound(600_000)).status).toBe('running');
    expect(deriveStatus(d, svc, [task({ state: 'assigned' })], undefined, bound(600_000)).status).toBe('deploying');
    expect(deriveStatus(d, svc, [task({ desiredState: 'shutdown' })], undefined, bound(600_000)).status).toBe('deploying');
  });

  it('says when the next waiting task crosses the bound', () => {
    const tasks = [task({}), task({ createdAt: new Date(T0 + 10_000).toISOString() }), task({ state: 'running' })];
    expect(nextSchedulingDeadline(tasks, bound(1_000))).toBe(T0 + 60_000);
    expect(nextSchedulingDeadline(tasks, bound(65_000))).toBe(T0 + 70_000);
    expect(nextSchedulingDeadline(tasks, bound(75_000))).toBeUndefined();
  });
});

describe('a deployment already placed by SkyPanelV2', () => {
  const d = deployment();
  const skypanelLabels = { [LABEL.serviceId]: d.serviceId, [LABEL.deploymentId]: d.id, [LABEL.organizationId]: d.organizationId };

  it('holds back the create and names the service; other deployments are created', () => {
    const other = deployment();
    const actions = plan([d, other], [], { workerId: WORKER, nodeId: NODE, now: T0 });
    const held = heldElsewhere(actions, [d, other], [{ id: 'abc123', name: `org-${d.organizationId}-app`, labels: skypanelLabels }]);
    expect([...held.keys()]).toEqual([d.id]);
    expect(held.get(d.id)!.holderId).toBe('abc123');
    expect(held.get(d.id)!.message).toContain(`org-${d.organizationId}-app (abc123)`);
  });

  it('matches an older deployment of the same panel service too', () => {
    const actions = plan([d], [], { workerId: WORKER, nodeId: NODE, now: T0 });
    const held = heldElsewhere(
      actions,
      [d],
      [{ id: 'x', name: 'org-1-app', labels: { ...skypanelLabels, [LABEL.deploymentId]: 'older' } }],
    );
    expect(held.get(d.id)!.message).toContain('deployment older');
  });

  describe('in the reconciler', () => {
    beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance', 'Date'] }));
    afterEach(() => vi.useRealTimers());

    it('reports failed naming the holder, creates nothing, and creates its own once the holder is gone', async () => {
      const swarm = memorySwarm();
      swarm.unmanaged.push({ id: 'sp-holder', name: 'org-1-app', labels: skypanelLabels, replicas: 1 });
      const reports: StatusChange[][] = [];
      const r = new Reconciler({
        port: swarm.port,
        workerId: WORKER,
        nodeId: () => NODE,
        ipAddress: '127.0.0.1',
        publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
        resyncMs: 10_000,
        logger,
        onStatus: (c) => void reports.push(c),
      });
      r.setDesired({ deployments: [d], rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() });
      r.start();
      await vi.advanceTimersByTimeAsync(5_000);
      expect(swarm.services.size).toBe(0);
      const last = reports.at(-1)!.find((c) => c.deploymentId === d.id)!;
      expect(last.derived.status).toBe('failed');
      expect(last.derived.message).toContain('org-1-app (sp-holder)');
      expect(r.views()[0]!.lastError).toContain('sp-holder');

      swarm.unmanaged.length = 0;
      await vi.advanceTimersByTimeAsync(15_000);
      expect(swarm.services.size).toBe(1);
      expect(reports.at(-1)!.find((c) => c.deploymentId === d.id)!.derived.status).toBe('running');
      await r.stop();
    });
  });
});

describe('observe mode hears about tasks SkyPanelV2 placed', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance', 'Date'] }));
  afterEach(() => vi.useRealTimers());

  it('a container event carrying a desired serviceId (no skypanel.managed) starts a pass; one of another service does not', async () => {
    const swarm = memorySwarm();
    let passes = 0;
    const d = deployment();
    const r = new Reconciler({
      port: swarm.port,
      workerId: WORKER,
      nodeId: () => NODE,
      ipAddress: '127.0.0.1',
      publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
      resyncMs: 600_000,
      logger,
      onStatus: () => {},
      onPass: () => void passes++,
      readOnly: true,
    });
    r.setDesired({ deployments: [d], rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() });
    r.start();
    r.setEventsLive(true);
    await vi.advanceTimersByTimeAsync(70_000);
    const base = passes;
    r.noteEngineEvent({
      type: 'container',
      action: 'die',
      id: 'c1',
      attributes: { [LABEL.serviceId]: 'someone-else', [LABEL.deploymentId]: 'x' },
    });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(passes).toBe(base);
    r.noteEngineEvent({
      type: 'container',
      action: 'die',
      id: 'c2',
      attributes: { [LABEL.serviceId]: d.serviceId, [LABEL.deploymentId]: d.id, 'skypanel.slug': 'app' },
    });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(passes).toBe(base + 1);
    await r.stop();
  });
});
