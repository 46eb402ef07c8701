/**
 * Nesting bounds for panel input. JSON.parse itself is iterative in V8 (a 1 MiB body of `[`
 * parses), but what comes after is not: JSON.stringify (persisting the desired set) and any
 * recursive walk run out of stack a few thousand levels down. So every deployment's depth is
 * measured without recursion before anything else looks at it, and one too deep is rejected alone.
 */

/**
 * The deepest field the schema has is three levels under a deployment (secrets[i].value); 64
 * leaves room for unknown fields a panel may add, and stays far below any recursion limit.
 */
export const MAX_NESTING_DEPTH = 64;

/**
 * The top-level field holding a value nested deeper than `max` levels (the value itself is level
 * 1; [] when it is itself too deep), or undefined when there is none. Iterative: safe on any depth.
 */
export function tooDeepAt(value: unknown, max: number = MAX_NESTING_DEPTH): PropertyKey[] | undefined {
  const stack: { v: unknown; depth: number; path: PropertyKey[] }[] = [{ v: value, depth: 1, path: [] }];
  while (stack.length > 0) {
    const { v, depth, path } = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > max) return path;
    // Only the top-level field is kept: it names where the deep value is, not every level of it.
    const entries: [PropertyKey, unknown][] = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
    for (const [k, x] of entries) stack.push({ v: x, depth: depth + 1, path: depth === 1 && !Array.isArray(v) ? [k] : path });
  }
  return undefined;
}

/**
 * A copy of `value` with everything below `levels` levels replaced by null. Cutting one level
 * below the bound keeps a too-deep value too deep (it is rejected the same way when read back)
 * while making it cheap and safe to serialise. Recursion is bounded by `levels`.
 */
export function cutBelow(value: unknown, levels: number = MAX_NESTING_DEPTH + 1): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (levels <= 0) return null;
  if (Array.isArray(value)) return value.map((x) => cutBelow(x, levels - 1));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(value))
    Object.defineProperty(out, k, { value: cutBelow(x, levels - 1), enumerable: true, writable: true, configurable: true });
  return out;
}
