import { canonicalJson, hashedView, type ServiceSpec } from './service-spec.js';

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

/** Stands for the whole spec in a drift report: the live spec is missing or cannot be compared at all. */
export const WHOLE_SPEC = '(spec)';

/**
 * The field paths (e.g. `TaskTemplate.ContainerSpec.Env`) where the live spec no longer matches what
 * the agent built, apart from the replica count (scaling is not drift) and the network reference
 * (Docker rewrites names into ids); empty when in step. Exactly the differences the spec hash sees,
 * so empty here means the live spec would hash to the desired hash. Paths name fields, never their
 * values (env and labels may hold secrets), and stop at arrays: `Env`, not which entry.
 */
export function driftedPaths(desired: ServiceSpec, actualSpec: unknown): string[] {
  if (!actualSpec || typeof actualSpec !== 'object') return [WHOLE_SPEC];
  const projected = projectOnto(desired, actualSpec) as ServiceSpec;
  if (!projected.Labels) return ['Labels'];
  if (!projected.TaskTemplate) return ['TaskTemplate'];
  if (!projected.TaskTemplate.ContainerSpec) return ['TaskTemplate.ContainerSpec'];
  const comparable: ServiceSpec = {
    ...projected,
    TaskTemplate: { ...projected.TaskTemplate, Networks: desired.TaskTemplate.Networks },
  };
  // Labels copied by hand onto a look-alike are still labels: compare them like any other field.
  comparable.TaskTemplate.ContainerSpec = {
    ...projected.TaskTemplate.ContainerSpec,
    Labels: projected.TaskTemplate.ContainerSpec.Labels ?? {},
  };
  let live: unknown;
  try {
    live = hashedView(comparable);
  } catch {
    return [WHOLE_SPEC]; // a field of the wrong type where the view reads into it (Secrets not a list)
  }
  const out: string[] = [];
  diffPaths(hashedView(desired), live, '', out);
  return out;
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** Walks two hashed views; at a leaf or array compares canonical JSON, so it agrees with the hash. */
function diffPaths(want: unknown, got: unknown, path: string, out: string[]): void {
  if (isRecord(want) && isRecord(got)) {
    const keys = [...new Set([...Object.keys(want), ...Object.keys(got)])].sort();
    for (const key of keys) {
      // Label keys hold dots (`skypanel.managed`): those are quoted so the path stays unambiguous.
      const step = IDENTIFIER.test(key) ? key : JSON.stringify(key);
      const sub = path === '' ? step : IDENTIFIER.test(key) ? `${path}.${key}` : `${path}[${step}]`;
      diffPaths(want[key], got[key], sub, out);
    }
    return;
  }
  // canonicalJson renders undefined and null alike; as members they differ (undefined ones are dropped).
  if ((want === undefined) !== (got === undefined) || canonicalJson(want) !== canonicalJson(got)) out.push(path === '' ? WHOLE_SPEC : path);
}
