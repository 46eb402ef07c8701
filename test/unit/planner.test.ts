import { describe, expect, it } from 'vitest';
import { LABEL } from '../../src/domain/labels.js';
import type { ObservedService, UpdateState } from '../../src/domain/observed-service.js';
import { plan, type Action, type PlanContext } from '../../src/domain/planner.js';
import { buildServiceSpec, desiredReplicas } from '../../src/domain/service-spec.js';
import { parseDeployment, type Deployment } from '../../src/protocol/deployment.js';

const ctx: PlanContext = { workerId: 'w1', nodeId: 'n1', now: 1_000_000 };

function dep(over: Record<string, unknown> = {}): Deployment {
  const r = parseDeployment({
    id: 'dep_1',
    serviceId: 'svc_1',
    organizationId: 'org_1',
    slug: 'app',
    imageTag: 'nginx:1.27',
    desiredState: 'running',
    replicas: 2,
    environmentVars: { A: '1' },
    resourceLimits: { cpuCores: 1, memoryMb: 256 },
    secrets: [{ name: 'k', value: 'secret-value' }],
    ...over,
  });
  if (!r.ok) throw new Error(r.rejected.message);
  return r.deployment;
}

/** What Swarm would report after the agent created `d` (optionally with changes). */
function svc(d: Deployment, id: string, over: Partial<ObservedService> = {}, c: PlanContext = ctx): ObservedService {
  const built = buildServiceSpec(d, c);
  return { id, name: built.spec.Name, labels: { ...built.spec.Labels }, replicas: desiredReplicas(d), ...over };
}

const running = dep();
const stopped = dep({ desiredState: 'stopped' });
const oldVersion = dep({ id: 'dep_0', imageTag: 'nginx:1.26' });
const hashOf = (d: Deployment) => buildServiceSpec(d, ctx).specHash;

type DesiredCase = 'absent' | 'running' | 'stopped';
type ActualCase = 'absent' | 'same-hash' | 'different-hash' | 'wrong-replicas' | 'duplicate' | 'foreign-owned' | 'unlabelled';

function actualFor(c: ActualCase, d: Deployment): ObservedService[] {
  switch (c) {
    case 'absent':
      return [];
    case 'same-hash':
      return [svc(d, 'x1')];
    case 'different-hash':
      return [svc(oldVersion, 'x1', { replicas: desiredReplicas(d) })];
    case 'wrong-replicas':
      return [svc(d, 'x1', { replicas: 5 })];
    case 'duplicate':
      return [svc(oldVersion, 'x0'), svc(d, 'x1')];
    case 'foreign-owned':
      return [svc(d, 'x1', { labels: { ...svc(d, 'x1').labels, [LABEL.workerId]: 'w2' } })];
    case 'unlabelled':
      return [{ id: 'x1', name: svc(d, 'x1').name, labels: {}, replicas: 1 }];
  }
}

const create = (d: Deployment): Action => ({ kind: 'create', deploymentId: d.id, serviceId: d.serviceId, specHash: hashOf(d) });
const expectations: Record<ActualCase, Record<DesiredCase, Action[]>> = {
  absent: { absent: [], running: [create(running)], stopped: [create(stopped)] },
  'same-hash': {
    absent: [{ kind: 'remove', swarmServiceId: 'x1', deploymentId: 'dep_1', reason: 'not-desired' }],
    running: [],
    stopped: [],
  },
  'different-hash': {
    absent: [{ kind: 'remove', swarmServiceId: 'x1', deploymentId: 'dep_0', reason: 'not-desired' }],
    running: [
      {
        kind: 'update',
        deploymentId: 'dep_1',
        serviceId: 'svc_1',
        swarmServiceId: 'x1',
        specHash: hashOf(running),
        reason: 'spec-changed',
      },
    ],
    stopped: [
      {
        kind: 'update',
        deploymentId: 'dep_1',
        serviceId: 'svc_1',
        swarmServiceId: 'x1',
        specHash: hashOf(stopped),
        reason: 'spec-changed',
      },
    ],
  },
  'wrong-replicas': {
    absent: [{ kind: 'remove', swarmServiceId: 'x1', deploymentId: 'dep_1', reason: 'not-desired' }],
    running: [{ kind: 'scale', deploymentId: 'dep_1', swarmServiceId: 'x1', replicas: 2 }],
    stopped: [{ kind: 'scale', deploymentId: 'dep_1', swarmServiceId: 'x1', replicas: 0 }],
  },
  duplicate: {
    absent: [
      { kind: 'remove', swarmServiceId: 'x0', deploymentId: 'dep_0', reason: 'not-desired' },
      { kind: 'remove', swarmServiceId: 'x1', deploymentId: 'dep_1', reason: 'not-desired' },
    ],
    running: [{ kind: 'remove', swarmServiceId: 'x0', deploymentId: 'dep_1', reason: 'duplicate' }],
    stopped: [{ kind: 'remove', swarmServiceId: 'x0', deploymentId: 'dep_1', reason: 'duplicate' }],
  },
  'foreign-owned': { absent: [], running: [create(running)], stopped: [create(stopped)] },
  unlabelled: { absent: [], running: [create(running)], stopped: [create(stopped)] },
};

describe('plan: desired × actual', () => {
  const cases = (Object.keys(expectations) as ActualCase[]).flatMap((a) =>
    (['absent', 'running', 'stopped'] as DesiredCase[]).map((d) => [d, a, expectations[a][d]] as const),
  );

  it.each(cases)('desired %s, actual %s', (dCase, aCase, expected) => {
    const d = dCase === 'stopped' ? stopped : running;
    const desired = dCase === 'absent' ? [] : [d];
    expect(plan(desired, actualFor(aCase, d), ctx)).toEqual(expected);
  });
});

describe('plan: special cases', () => {
  it('treats an owned service without a hash label as drift', () => {
    const s = svc(running, 'x1');
    delete s.labels[LABEL.specHash];
    expect(plan([running], [s], ctx)).toMatchObject([{ kind: 'update', reason: 'drift', swarmServiceId: 'x1' }]);
  });

  it('puts back a service with the right hash label that drifted, naming the drifted fields', () => {
    const drifted = ['TaskTemplate.ContainerSpec.Env', 'TaskTemplate.Resources.Limits.MemoryBytes'];
    expect(plan([running], [svc(running, 'x1', { drifted })], ctx)).toEqual([
      {
        kind: 'update',
        deploymentId: 'dep_1',
        serviceId: 'svc_1',
        swarmServiceId: 'x1',
        specHash: hashOf(running),
        reason: 'drift',
        drifted,
      },
    ]);
    // An empty list is no drift; a drifted copy loses to one in step when duplicates are sorted out.
    expect(plan([running], [svc(running, 'x1', { drifted: [] })], ctx)).toEqual([]);
    expect(plan([running], [svc(running, 'a', { drifted }), svc(running, 'b')], ctx)).toEqual([
      { kind: 'remove', swarmServiceId: 'a', deploymentId: 'dep_1', reason: 'duplicate' },
    ]);
  });

  it.each<UpdateState>(['paused', 'rollback_paused'])('re-sends the spec of a %s rollout', (state) => {
    expect(plan([running], [svc(running, 'x1', { updateState: state })], ctx)).toMatchObject([{ kind: 'update', reason: 'drift' }]);
  });

  it.each<UpdateState>(['updating', 'completed', 'rollback_completed'])('leaves a %s service on the right spec alone', (state) => {
    expect(plan([running], [svc(running, 'x1', { updateState: state })], ctx)).toEqual([]);
  });

  it('does not fight a rollback in progress, but still removes duplicates', () => {
    const actual = [
      svc(oldVersion, 'x1', { updateState: 'rollback_started' }),
      svc(oldVersion, 'x2', { labels: { ...svc(oldVersion, 'x2').labels, [LABEL.deploymentId]: 'zz' } }),
    ];
    expect(plan([running], actual, ctx)).toEqual([{ kind: 'remove', swarmServiceId: 'x2', deploymentId: 'dep_1', reason: 'duplicate' }]);
  });

  it('prefers the copy with the desired hash, then the desired deployment id, then the lowest id', () => {
    const a = svc(oldVersion, 'a');
    const b = svc(running, 'b');
    expect(plan([running], [a, b], ctx).map((x) => x.kind === 'remove' && x.swarmServiceId)).toEqual(['a']);
    const c = svc(oldVersion, 'c', { labels: { ...svc(oldVersion, 'c').labels, [LABEL.deploymentId]: 'dep_1' } });
    expect(
      plan([running], [svc(oldVersion, 'a'), c], ctx)
        .filter((x) => x.kind === 'remove')
        .map((x) => (x as { swarmServiceId: string }).swarmServiceId),
    ).toEqual(['a']);
    expect(plan([running], [svc(running, 'q'), svc(running, 'p')], ctx)).toEqual([
      { kind: 'remove', swarmServiceId: 'q', deploymentId: 'dep_1', reason: 'duplicate' },
    ]);
  });

  it('does nothing for a deployment under backoff, and resumes once it expires', () => {
    const backoff = new Map([['dep_1', { until: ctx.now + 1 }]]);
    expect(plan([running], [], { ...ctx, backoff })).toEqual([]);
    expect(plan([running], [svc(oldVersion, 'x0'), svc(oldVersion, 'x1')], { ...ctx, backoff })).toEqual([]);
    expect(plan([running], [], { ...ctx, backoff: new Map([['dep_1', { until: ctx.now }]]) })).toEqual([create(running)]);
  });

  it('does not remove a service whose deployment the schema rejected', () => {
    const s = svc(running, 'x1');
    expect(plan([], [s], { ...ctx, retainServiceIds: new Set(['svc_1']) })).toEqual([]);
    expect(plan([], [s], { ...ctx, retainServiceIds: new Set(['svc_other']) })).toHaveLength(1);
  });

  it('removes an owned service that has lost its serviceId label', () => {
    const s = svc(running, 'x1');
    delete s.labels[LABEL.serviceId];
    expect(plan([running], [s], ctx)).toEqual([
      { kind: 'remove', swarmServiceId: 'x1', deploymentId: 'dep_1', reason: 'not-desired' },
      create(running),
    ]);
  });

  it.each([
    ['managed=false', { [LABEL.managed]: 'false', [LABEL.workerId]: 'w1', [LABEL.serviceId]: 'gone' }],
    ['no managed marker', { [LABEL.workerId]: 'w1', [LABEL.serviceId]: 'gone' }],
    ['another worker', { [LABEL.managed]: 'true', [LABEL.workerId]: 'w2', [LABEL.serviceId]: 'gone' }],
    ['look-alike name only', {}],
  ])('never touches a service with %s', (_n, labels) => {
    expect(plan([], [{ id: 'f', name: 'sp-app-12345678', labels, replicas: 1 }], ctx)).toEqual([]);
  });

  it('ignores a second deployment for the same serviceId', () => {
    expect(plan([running, dep({ id: 'dep_9' })], [], ctx)).toEqual([create(running)]);
  });

  it('sorts by deployment id, then remove < create < update < scale', () => {
    const d2 = dep({ id: 'dep_2', serviceId: 'svc_2' });
    const d3 = dep({ id: 'dep_3', serviceId: 'svc_3' });
    const actual = [
      svc(d3, 'y', { replicas: 9 }),
      svc(dep({ id: 'dep_0x', serviceId: 'svc_gone' }), 'g'),
      svc(oldVersion, 'x0'),
      svc(running, 'x1'),
    ];
    expect(plan([d3, d2, running], actual, ctx).map((a) => `${a.deploymentId}:${a.kind}`)).toEqual([
      'dep_0x:remove',
      'dep_1:remove',
      'dep_2:create',
      'dep_3:scale',
    ]);
  });
});

// ---- property-style: random worlds, invariants, one-step convergence ----

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STATES: (UpdateState | undefined)[] = [
  undefined,
  undefined,
  undefined,
  'updating',
  'paused',
  'completed',
  'rollback_started',
  'rollback_paused',
  'rollback_completed',
];

function randomWorld(seed: number) {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const serviceIds = Array.from({ length: 8 }, (_, i) => `svc_${i}`);
  const desired: Deployment[] = [];
  for (const sid of serviceIds) {
    if (rnd() < 0.4) continue;
    const n = rnd() < 0.1 ? 2 : 1; // occasionally two for one service: the planner must cope
    for (let k = 0; k < n; k++) {
      desired.push(
        dep({
          id: `dep_${sid}_${Math.floor(rnd() * 3)}${k}`,
          serviceId: sid,
          desiredState: pick(['running', 'running', 'stopped']),
          replicas: Math.floor(rnd() * 4),
          imageTag: pick(['nginx:1', 'nginx:2', 'redis:7']),
        }),
      );
    }
  }
  const now = 5000;
  const backoff = new Map(desired.filter(() => rnd() < 0.15).map((d) => [d.id, { until: now + (rnd() < 0.5 ? 100 : -100) }] as const));
  const retainServiceIds = new Set(serviceIds.filter(() => rnd() < 0.1));
  const c: PlanContext = { workerId: 'w1', nodeId: pick(['n1', 'n1', 'n2']), now, backoff, retainServiceIds };

  const actual: ObservedService[] = [];
  let next = 0;
  for (const sid of [...serviceIds, 'svc_x']) {
    const copies = Math.floor(rnd() * 3);
    for (let k = 0; k < copies; k++) {
      const template = dep({
        id: `dep_${sid}_${Math.floor(rnd() * 3)}0`,
        serviceId: sid,
        imageTag: pick(['nginx:1', 'nginx:2', 'redis:7']),
        desiredState: pick(['running', 'stopped']),
        replicas: Math.floor(rnd() * 4),
      });
      const s = svc(template, `s${String(next++).padStart(3, '0')}`, { replicas: Math.floor(rnd() * 4), updateState: pick(STATES) }, c);
      const owner = rnd();
      if (owner < 0.1) s.labels = {};
      else if (owner < 0.2) s.labels[LABEL.workerId] = 'w2';
      else if (owner < 0.25) s.labels[LABEL.managed] = 'false';
      else if (owner < 0.3) delete s.labels[LABEL.serviceId];
      if (rnd() < 0.1) delete s.labels[LABEL.specHash];
      else if (rnd() < 0.1) s.drifted = ['TaskTemplate.ContainerSpec.Env'];
      actual.push(s);
    }
  }
  return { desired, actual, c, rnd };
}

function apply(actions: Action[], actual: ObservedService[], desired: Deployment[], c: PlanContext): ObservedService[] {
  let state = actual.map((s) => ({ ...s, labels: { ...s.labels } }));
  const byId = new Map(desired.map((d) => [d.id, d]));
  for (const a of actions) {
    if (a.kind === 'remove') state = state.filter((s) => s.id !== a.swarmServiceId);
    else if (a.kind === 'scale') state.find((s) => s.id === a.swarmServiceId)!.replicas = a.replicas;
    else {
      const d = byId.get(a.deploymentId)!;
      const built = buildServiceSpec(d, c);
      expect(built.specHash).toBe(a.specHash);
      const fresh = { name: built.spec.Name, labels: { ...built.spec.Labels }, replicas: desiredReplicas(d), drifted: undefined };
      if (a.kind === 'create') state.push({ id: `new-${a.deploymentId}`, ...fresh });
      else
        Object.assign(
          state.find((s) => s.id === a.swarmServiceId)!,
          fresh,
          { updateState: 'updating' },
        );
    }
  }
  return state;
}

describe('plan: random worlds (seeded)', () => {
  const SEEDS = Array.from({ length: 300 }, (_, i) => i + 1);

  it.each(SEEDS.filter((s) => s % 30 === 0))('holds every invariant (batch ending at seed %i)', (last) => {
    for (let seed = last - 29; seed <= last; seed++) {
      const { desired, actual, c, rnd } = randomWorld(seed);
      const actions = plan(desired, actual, c);
      const owned = new Set(actual.filter((s) => s.labels[LABEL.managed] === 'true' && s.labels[LABEL.workerId] === 'w1').map((s) => s.id));
      const desiredSids = new Set(desired.map((d) => d.serviceId));
      const blocked = new Set([...(c.backoff ?? [])].filter(([, b]) => b.until > c.now).map(([id]) => id));
      const sidOf = new Map(actual.map((s) => [s.id, s.labels[LABEL.serviceId]]));

      for (const a of actions) {
        if ('swarmServiceId' in a) expect(owned.has(a.swarmServiceId), `seed ${seed}: touches unowned ${a.swarmServiceId}`).toBe(true);
        if (a.deploymentId !== undefined) expect(blocked.has(a.deploymentId), `seed ${seed}: acts under backoff`).toBe(false);
        if (a.kind === 'remove') {
          const sid = sidOf.get(a.swarmServiceId);
          if (a.reason === 'not-desired') expect(sid === undefined || (!desiredSids.has(sid) && !c.retainServiceIds!.has(sid))).toBe(true);
          else expect(sid !== undefined && desiredSids.has(sid)).toBe(true);
        }
        expect(JSON.stringify(a)).not.toContain('secret-value');
      }
      const swarmIds = actions.filter((a) => 'swarmServiceId' in a).map((a) => (a as { swarmServiceId: string }).swarmServiceId);
      expect(new Set(swarmIds).size, `seed ${seed}: two actions on one service`).toBe(swarmIds.length);

      // Deterministic whatever order Docker lists services in.
      const shuffled = [...actual].sort(() => rnd() - 0.5);
      expect(plan(desired, shuffled, c)).toEqual(actions);

      // One step converges.
      const after = apply(actions, actual, desired, c);
      expect(plan(desired, after, c), `seed ${seed}: not converged`).toEqual([]);
      // And foreign services are exactly as they were.
      const foreign = (xs: ObservedService[]) => xs.filter((s) => !owned.has(s.id) && !s.id.startsWith('new-'));
      expect(foreign(after)).toEqual(foreign(actual));
    }
  });

  it('converges to exactly one right service per desired, unblocked deployment', () => {
    for (const seed of SEEDS) {
      const { desired, actual, c } = randomWorld(seed);
      const free = { ...c, backoff: new Map(), retainServiceIds: new Set<string>() };
      const unstuck = actual.map((s) => ({ ...s, updateState: undefined }));
      const after = apply(plan(desired, unstuck, free), unstuck, desired, free);
      const mine = after.filter((s) => s.labels[LABEL.managed] === 'true' && s.labels[LABEL.workerId] === 'w1');
      const firstPerService = [...new Map([...desired].reverse().map((d) => [d.serviceId, d])).values()];
      expect(mine.length, `seed ${seed}`).toBe(firstPerService.length);
      for (const d of firstPerService) {
        const s = mine.filter((x) => x.labels[LABEL.serviceId] === d.serviceId);
        expect(s, `seed ${seed} ${d.serviceId}`).toHaveLength(1);
        expect(s[0]!.labels[LABEL.specHash]).toBe(buildServiceSpec(d, free).specHash);
        expect(s[0]!.drifted).toBeUndefined();
        expect(s[0]!.replicas).toBe(desiredReplicas(d));
      }
    }
  });
});
