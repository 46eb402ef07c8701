// The reconciler keeps all it knows of a deployment in one record: a spec changed by hand is put
// back with a log naming the drifted fields (never their values), and a deployment the panel takes
// away is reported stopped once and forgotten whole, whatever it had accumulated (a backoff, a
// pending latency, a drift check). An in-memory SwarmPort stands in for Swarm; the same repair on a
// real swarm, changed with `docker service update`, is in test/e2e/reconcile.test.ts.
import { describe, expect, it } from 'vitest';
import { Reconciler, type StatusChange } from '../../src/agent/deployments/reconciler.js';
import type { Logger } from '../../src/agent/logger.js';
import type { ReconcilePassView } from '../../src/agent/status/status-model.js';
import type { SwarmPort } from '../../src/ports.js';
import type { Deployment } from '../../src/protocol/deployment.js';
import { deployment, memorySwarm, NODE, WORKER } from '../helpers/memory-swarm.js';

interface Line {
  level: string;
  fields: Record<string, unknown>;
  msg: string;
}

/** A logger that keeps every line, to read what was logged and search it for values. */
function capturingLogger(lines: Line[]): Logger {
  const at =
    (level: string) =>
    (fields: Record<string, unknown> | string, msg?: string): void => {
      lines.push(typeof fields === 'string' ? { level, fields: {}, msg: fields } : { level, fields, msg: msg ?? '' });
    };
  const logger = { trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), fatal: at('fatal') };
  return { ...logger, child: () => logger } as unknown as Logger;
}

function reconcilerOn(port: SwarmPort, lines: Line[]) {
  const reports: StatusChange[][] = [];
  let waiter: ((p: ReconcilePassView) => void) | undefined;
  const r = new Reconciler({
    port,
    workerId: WORKER,
    nodeId: () => NODE,
    ipAddress: '127.0.0.1',
    publicUrlTemplate: 'http://{ipAddress}:{externalPort}',
    resyncMs: 3_600_000,
    logger: capturingLogger(lines),
    onStatus: (changes) => reports.push(changes),
    onPass: (p) => waiter?.(p),
    random: () => 0, // a failed action backs off the minimum, 1 s
  });
  const pass = (set?: Deployment[]) =>
    new Promise<ReconcilePassView>((resolve) => {
      waiter = resolve;
      if (set) r.setDesired({ deployments: set, rejected: [], etag: null, source: 'control-plane', receivedAt: Date.now() });
      else r.trigger();
    });
  return { r, pass, reports };
}

describe('the reconciler’s record of a deployment', () => {
  it('puts back a spec changed by hand and logs the drifted field paths once, never their values', async () => {
    const swarm = memorySwarm();
    const lines: Line[] = [];
    const { r, pass } = reconcilerOn(swarm.port, lines);
    r.start();
    const d = deployment();
    await pass([d]);
    await pass();

    const [svc] = [...swarm.services.values()];
    svc!.spec.TaskTemplate.ContainerSpec.Env = ['A=b', 'DB_PASSWORD=hand-set-s3cr3t'];
    svc!.spec.TaskTemplate.Resources!.Limits!.MemoryBytes = 1;
    svc!.version++;
    expect((await pass()).actions).toEqual([{ kind: 'update', deploymentId: d.id, ok: true }]);
    expect(swarm.services.get(svc!.id)!.spec.TaskTemplate.ContainerSpec.Env).toEqual(['A=b']);
    expect((await pass()).actions).toEqual([]);

    const repairs = lines.filter((l) => l.msg === 'service changed outside the agent; put back');
    expect(repairs).toHaveLength(1);
    expect(repairs[0]).toMatchObject({
      level: 'warn',
      fields: {
        deploymentId: d.id,
        swarmServiceId: svc!.id,
        reason: 'drift',
        drifted: ['TaskTemplate.ContainerSpec.Env', 'TaskTemplate.Resources.Limits.MemoryBytes'],
      },
    });
    const logged = JSON.stringify(lines);
    expect(logged).not.toContain('hand-set-s3cr3t');
    expect(logged).not.toContain('DB_PASSWORD');
    await r.stop();
  });

  it('forgets a deployment the panel took away in one go: reported stopped once, no record left', async () => {
    const swarm = memorySwarm();
    const { r, pass, reports } = reconcilerOn(swarm.port, []);
    r.start();
    const kept = deployment();
    const gone = deployment();
    await pass([kept, gone]);
    // A hand-made change on the one to go, so its record also holds a drift check and a backoff.
    const goneSvc = [...swarm.services.values()].find((s) => s.labels['skypanel.deployment.id'] === gone.id)!;
    goneSvc.spec.TaskTemplate.ContainerSpec.Env = ['X=1'];
    goneSvc.version++;
    const update = swarm.port.updateService;
    swarm.port.updateService = () => Promise.reject(new Error('swarm said no'));
    expect((await pass()).actions).toEqual([{ kind: 'update', deploymentId: gone.id, ok: false, error: 'swarm said no' }]);
    swarm.port.updateService = update;
    expect(r.recordCount).toBe(2);

    reports.length = 0;
    // Its backoff holds the removal back this pass (no action under backoff); forgetting the record lifts it.
    expect((await pass([kept])).actions).toEqual([]);
    expect(reports.flat().filter((c) => c.deploymentId === gone.id)).toMatchObject([
      { derived: { status: 'stopped', message: 'no longer assigned to this worker' }, publicUrl: null },
    ]);
    expect(r.recordCount).toBe(1);
    expect(r.views().map((v) => v.id)).toEqual([kept.id]);

    reports.length = 0;
    expect((await pass()).actions).toEqual([{ kind: 'remove', deploymentId: gone.id, ok: true }]);
    expect(reports.flat().map((c) => c.deploymentId)).toEqual([kept.id]);
    expect(r.recordCount).toBe(1);
    await r.stop();
  });

  it('keeps the backoff of a failed removal of a service whose deployment it never reported, until the removal succeeds', async () => {
    const swarm = memorySwarm();
    const { r, pass, reports } = reconcilerOn(swarm.port, []);
    r.start();
    const orphan = deployment();
    await pass([orphan]);
    // A restart forgets everything: a new reconciler sees the service but no longer has the deployment.
    await r.stop();
    const fresh = reconcilerOn(swarm.port, []);
    fresh.r.start();
    const remove = swarm.port.removeService;
    swarm.port.removeService = () => Promise.reject(new Error('still in use'));
    expect((await fresh.pass([])).actions).toEqual([{ kind: 'remove', deploymentId: orphan.id, ok: false, error: 'still in use' }]);
    expect(fresh.r.recordCount).toBe(1);
    // Under backoff: the next pass does not try again.
    expect((await fresh.pass()).actions).toEqual([]);
    expect(fresh.reports.flat()).toEqual([]);
    swarm.port.removeService = remove;
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect((await fresh.pass()).actions).toEqual([{ kind: 'remove', deploymentId: orphan.id, ok: true }]);
    expect(fresh.r.recordCount).toBe(0);
    expect(reports.flat().every((c) => c.deploymentId === orphan.id)).toBe(true);
    await fresh.r.stop();
  });
});
