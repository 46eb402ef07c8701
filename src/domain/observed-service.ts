/** Swarm's UpdateStatus.State of a service (Engine API), absent before its first update. */
export type UpdateState = 'updating' | 'paused' | 'completed' | 'rollback_started' | 'rollback_paused' | 'rollback_completed';

/**
 * A Swarm service as the agent sees it: what SwarmPort lists, what the planner plans from and what
 * status derivation reads. Plain data, decoupled from Docker's JSON; the spec-hash the agent set is
 * read from `labels`, so there is one place it lives.
 */
export interface ObservedService {
  /** Swarm service id. */
  id: string;
  name: string;
  labels: Record<string, string>;
  /** Mode.Replicated.Replicas: 0 for a service that is not replicated (the agent only makes replicated ones). */
  replicas: number;
  updateState?: UpdateState;
  updateMessage?: string;
  /** The live ServiceSpec as Docker returns it, for drift detection (absent where the port cannot read it: observe mode). */
  spec?: unknown;
  /** Swarm's version of the service object; it changes with every change to the service, by anyone. */
  version?: number;
  /**
   * Set by the reconciler, never by a port: the paths of the fields (e.g. `TaskTemplate.ContainerSpec.Env`)
   * where the live spec no longer matches the one the agent built, although the spec-hash label says it
   * does: someone changed the service by hand. Non-empty makes the planner put the spec back.
   */
  drifted?: readonly string[];
}
