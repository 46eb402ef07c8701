import type { Deployment } from '../protocol/deployment.js';
import { LABEL, ownedBy } from './labels.js';
import type { ObservedService } from './observed-service.js';
import { buildServiceSpec, desiredReplicas, type SpecContext } from './service-spec.js';

/**
 * Desired set + what Swarm reports → the actions that close the gap. Pure and total: no I/O, no
 * clock (ctx.now), output sorted, so a pass can be replayed from a log and tested exhaustively.
 * Drift comes in as data: the reconciler compares live specs before planning and marks a service
 * changed by hand with its drifted field paths (ObservedService.drifted).
 *
 * Safety rules, in order of importance:
 * 1. A service without this worker's labels does not exist for the planner (never updated, never removed).
 * 2. `remove` is only ever the consequence of the desired set: a service whose serviceId is not
 *    desired, or a second copy of one that is. Rejected deployments (ctx.retainServiceIds) keep
 *    their service as it is, so a malformed update from the panel cannot delete a running app.
 * 3. A deployment under backoff gets no action at all, including removal of its duplicates.
 */

export type Action =
  | { kind: 'create'; deploymentId: string; serviceId: string; specHash: string }
  | {
      kind: 'update';
      deploymentId: string;
      serviceId: string;
      swarmServiceId: string;
      specHash: string;
      reason: 'spec-changed' | 'drift';
      /** With reason drift, when known: the field paths that changed by hand (never their values). */
      drifted?: readonly string[];
    }
  | { kind: 'scale'; deploymentId: string; swarmServiceId: string; replicas: number }
  | { kind: 'remove'; swarmServiceId: string; deploymentId?: string; reason: 'not-desired' | 'duplicate' };

export interface PlanContext extends SpecContext {
  now: number;
  /** Keyed by deployment id; an entry with until > now suppresses every action for that deployment. */
  backoff?: ReadonlyMap<string, { until: number }>;
  /** serviceIds of deployments the panel sent but the schema rejected: their services are left untouched. */
  retainServiceIds?: ReadonlySet<string>;
}

// Removals first within a deployment: a duplicate may hold the host port its replacement needs.
const KIND_ORDER: Record<Action['kind'], number> = { remove: 0, create: 1, update: 2, scale: 3 };

function hashOf(s: ObservedService): string | undefined {
  return s.labels[LABEL.specHash];
}

/** Carries the desired spec as the agent built it: the right hash label and nothing changed by hand since. */
function inStep(s: ObservedService, specHash: string): boolean {
  return hashOf(s) === specHash && !s.drifted?.length;
}

function underBackoff(ctx: PlanContext, deploymentId: string | undefined): boolean {
  if (deploymentId === undefined) return false;
  const b = ctx.backoff?.get(deploymentId);
  return b !== undefined && b.until > ctx.now;
}

/**
 * Among several owned services for one serviceId, keep the one closest to desired (in step: same
 * hash, not drifted; then same deployment id), then the lowest Swarm id so every pass keeps the same one.
 */
function pickKeeper(candidates: ObservedService[], deploymentId: string, specHash: string): ObservedService {
  const score = (s: ObservedService): number => (inStep(s, specHash) ? 2 : 0) + (s.labels[LABEL.deploymentId] === deploymentId ? 1 : 0);
  return [...candidates].sort((a, b) => score(b) - score(a) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))[0]!;
}

function planOne(d: Deployment, services: ObservedService[], ctx: PlanContext): Action[] {
  const { specHash } = buildServiceSpec(d, ctx);
  if (services.length === 0) return [{ kind: 'create', deploymentId: d.id, serviceId: d.serviceId, specHash }];

  const keeper = pickKeeper(services, d.id, specHash);
  const actions: Action[] = services
    .filter((s) => s !== keeper)
    .map((s) => ({ kind: 'remove', swarmServiceId: s.id, deploymentId: d.id, reason: 'duplicate' }));

  // Mid-rollback the spec (and its hash label) is already the old one; updating now would fight Swarm.
  if (keeper.updateState === 'rollback_started') return actions;

  const actual = hashOf(keeper);
  const base = { deploymentId: d.id, serviceId: d.serviceId, swarmServiceId: keeper.id, specHash };
  if (actual !== specHash) {
    // No hash label on an owned service means someone rewrote it outside the agent.
    actions.push({ kind: 'update', ...base, reason: actual === undefined ? 'drift' : 'spec-changed' });
  } else if (keeper.drifted?.length) {
    // Right hash label, but the spec was changed by hand since: put it back.
    actions.push({ kind: 'update', ...base, reason: 'drift', drifted: keeper.drifted });
  } else if (keeper.updateState === 'paused' || keeper.updateState === 'rollback_paused') {
    // Right spec, stuck rollout: re-sending the spec resumes it.
    actions.push({ kind: 'update', ...base, reason: 'drift' });
  } else if (keeper.replicas !== desiredReplicas(d)) {
    actions.push({ kind: 'scale', deploymentId: d.id, swarmServiceId: keeper.id, replicas: desiredReplicas(d) });
  }
  return actions;
}

export function plan(desired: readonly Deployment[], observed: readonly ObservedService[], ctx: PlanContext): Action[] {
  const owned = new Map<string, ObservedService[]>();
  const unidentified: ObservedService[] = [];
  for (const s of observed) {
    if (!ownedBy(s.labels, ctx.workerId)) continue;
    const sid = s.labels[LABEL.serviceId];
    if (sid === undefined || sid === '') unidentified.push(s);
    else owned.set(sid, [...(owned.get(sid) ?? []), s]);
  }

  const actions: Action[] = [];
  const desiredServiceIds = new Set<string>();
  for (const d of desired) {
    // The schema already rejects a second deployment per serviceId; should one slip through, the first wins.
    if (desiredServiceIds.has(d.serviceId)) continue;
    desiredServiceIds.add(d.serviceId);
    if (underBackoff(ctx, d.id)) continue;
    actions.push(...planOne(d, owned.get(d.serviceId) ?? [], ctx));
  }

  const orphans = [...unidentified];
  for (const [sid, services] of owned) {
    if (!desiredServiceIds.has(sid) && !ctx.retainServiceIds?.has(sid)) orphans.push(...services);
  }
  for (const s of orphans) {
    const deploymentId = s.labels[LABEL.deploymentId];
    if (underBackoff(ctx, deploymentId)) continue;
    actions.push({ kind: 'remove', swarmServiceId: s.id, ...(deploymentId !== undefined ? { deploymentId } : {}), reason: 'not-desired' });
  }

  return actions.sort(compareActions);
}

function compareActions(a: Action, b: Action): number {
  const da = a.deploymentId ?? '';
  const db = b.deploymentId ?? '';
  if (da !== db) return da < db ? -1 : 1;
  if (a.kind !== b.kind) return KIND_ORDER[a.kind] - KIND_ORDER[b.kind];
  const sa = 'swarmServiceId' in a ? a.swarmServiceId : '';
  const sb = 'swarmServiceId' in b ? b.swarmServiceId : '';
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

/**
 * The creates that would put a second live service beside one placed by someone else: a service
 * without `skypanel.managed` carries the deployment's id, or its serviceId (the same app from an
 * earlier deployment). The agent does not adopt such a service: SkyPanelV2's orchestrator finds
 * and updates its services by name, so both would write the same object and undo each other.
 * It reports the deployment failed naming the holder (deploymentId → message); once the holder
 * is removed the next pass creates the agent's own.
 */
export interface HeldCreate {
  /** Swarm id of the service that holds the deployment. */
  holderId: string;
  message: string;
}

export function heldElsewhere(
  actions: readonly Action[],
  desired: readonly Deployment[],
  /** Services that carry a deployment's labels but that no agent placed (SkyPanelV2's orchestrator, or a hand). */
  unmanaged: readonly Pick<ObservedService, 'id' | 'name' | 'labels'>[],
): Map<string, HeldCreate> {
  const held = new Map<string, HeldCreate>();
  if (unmanaged.length === 0) return held;
  const byId = new Map(desired.map((d) => [d.id, d]));
  for (const a of actions) {
    if (a.kind !== 'create') continue;
    const d = byId.get(a.deploymentId);
    if (!d) continue;
    const holder =
      unmanaged.find((s) => s.labels[LABEL.deploymentId] === d.id) ?? unmanaged.find((s) => s.labels[LABEL.serviceId] === d.serviceId);
    if (!holder) continue;
    const what =
      holder.labels[LABEL.deploymentId] === d.id
        ? 'this deployment'
        : `service ${d.serviceId} (deployment ${holder.labels[LABEL.deploymentId] ?? '?'})`;
    held.set(d.id, {
      holderId: holder.id,
      message: `not created: Swarm service ${holder.name} (${holder.id}) already runs ${what} and was not placed by a skypanel-agent (no ${LABEL.managed} label; e.g. SkyPanelV2's own orchestrator). Remove it, or let the panel's orchestrator keep the deployment`,
    });
  }
  return held;
}
