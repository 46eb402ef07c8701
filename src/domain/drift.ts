import { hashSpec, type ServiceSpec } from './service-spec.js';

/**
 * Docker returns a service spec with its own defaults filled in and network names replaced by
 * ids, so a byte comparison would see drift everywhere. Instead, keep only the keys the agent
 * itself set (walking the desired spec) and hash that: a field changed by hand shows up, a
 * default Docker added does not.
 */
export function projectOnto(desired: unknown, actual: unknown): unknown {
  if (desired === null || typeof desired !== 'object') return actual;
  if (Array.isArray(desired)) {
    if (!Array.isArray(actual)) return actual;
    // Extra or missing entries are drift; entries present in both are compared key by key.
    return actual.map((a, i) => (i < desired.length ? projectOnto(desired[i], a) : a));
  }
  if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) return actual;
  const out: Record<string, unknown> = {};
  const a = actual as Record<string, unknown>;
  for (const [key, want] of Object.entries(desired as Record<string, unknown>)) {
    if (key in a) out[key] = projectOnto(want, a[key]);
    // Docker's Go structs drop zero values (omitempty): an absent field equals a zero we sent.
    else if (isZero(want)) out[key] = want;
  }
  return out;
}

function isZero(v: unknown): boolean {
  if (v === 0 || v === '' || v === false || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && v !== null && Object.keys(v).length === 0;
}

/**
 * True when the live spec no longer matches what the agent built, apart from the replica count
 * (scaling is not drift) and the network reference (Docker rewrites names into ids).
 */
export function hasDrifted(desired: ServiceSpec, actualSpec: unknown, desiredHash: string): boolean {
  if (!actualSpec || typeof actualSpec !== 'object') return true;
  const projected = projectOnto(desired, actualSpec) as ServiceSpec;
  if (!projected.TaskTemplate || !projected.TaskTemplate.ContainerSpec || !projected.Labels) return true;
  const comparable: ServiceSpec = {
    ...projected,
    TaskTemplate: { ...projected.TaskTemplate, Networks: desired.TaskTemplate.Networks },
  };
  // Labels copied by hand onto a look-alike are still labels: compare them like any other field.
  comparable.TaskTemplate.ContainerSpec = {
    ...projected.TaskTemplate.ContainerSpec,
    Labels: projected.TaskTemplate.ContainerSpec.Labels ?? {},
  };
  try {
    return hashSpec(comparable) !== desiredHash;
  } catch {
    return true;
  }
}
