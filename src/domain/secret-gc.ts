import { TERMINAL_TASK_STATES, type TaskState } from '../swarm/observed.js';
import { ownedBy } from './labels.js';

/**
 * Which of this worker's Swarm secrets are no longer needed. Pure: the reconciler gathers what a
 * pass observed, this decides. Secret names hash their value (naming.ts), so a rotated value or a
 * removed deployment leaves its old secret behind, holding a value the tenant replaced; without
 * this, they stay in the swarm for ever.
 *
 * A secret is in use while any of these names it:
 * - a live service spec of this worker's (Swarm itself refuses to remove those);
 * - a task of this worker's services that has not ended: Swarm does not check tasks, and a task
 *   still running (or restarting) on an old spec mounts the old secret until it stops;
 * - a desired deployment: a secret made this pass for a create that failed is needed again next pass.
 * Only secrets labelled as this worker's are ever candidates: another worker's, or anyone
 * else's, are not this agent's to remove.
 */

export interface SecretUse {
  /** TaskTemplate.ContainerSpec.Secrets of each live service of this worker's, as Docker returns them. */
  serviceSpecs: readonly unknown[];
  tasks: readonly { state: string; secretNames?: readonly string[] }[];
  /** Names of the secrets the desired deployments' specs reference. */
  desired: Iterable<string>;
}

export function secretsInUse(use: SecretUse): Set<string> {
  const names = new Set<string>(use.desired);
  for (const spec of use.serviceSpecs) for (const n of specSecretNames(spec)) names.add(n);
  for (const t of use.tasks) {
    if (TERMINAL_TASK_STATES.has(t.state as TaskState)) continue;
    for (const n of t.secretNames ?? []) names.add(n);
  }
  return names;
}

/** Secret names a raw service spec references (Docker's JSON: unknown until looked at). */
export function specSecretNames(spec: unknown): string[] {
  const refs = (spec as { TaskTemplate?: { ContainerSpec?: { Secrets?: unknown } } } | null | undefined)?.TaskTemplate?.ContainerSpec
    ?.Secrets;
  if (!Array.isArray(refs)) return [];
  return refs.map((r) => (r as { SecretName?: unknown } | null)?.SecretName).filter((n): n is string => typeof n === 'string' && n !== '');
}

export interface OwnedSecret {
  id: string;
  name: string;
  labels: Readonly<Record<string, string>> | null;
}

/** This worker's secrets that nothing uses: the ones to remove. */
export function unusedSecrets<T extends OwnedSecret>(secrets: readonly T[], inUse: ReadonlySet<string>, workerId: string): T[] {
  return secrets.filter((s) => ownedBy(s.labels, workerId) && !inUse.has(s.name));
}
