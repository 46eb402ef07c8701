import type { EngineClient } from './docker-client.js';

export interface DockerCallCounter {
  /** Engine API requests since creation or the last reset(). */
  readonly count: number;
  /** Per `METHOD /path` (no query string, no API version prefix), e.g. `GET /tasks`. */
  readonly byPath: Map<string, number>;
  reset(): void;
  /** Counting stops. */
  restore(): void;
}

/**
 * Counts the requests made through one client (every call, answered or not, counts once). Used to
 * show that a steady-state reconcile pass costs a constant number of calls.
 */
export function countDockerCalls(docker: EngineClient): DockerCallCounter {
  const byPath = new Map<string, number>();
  let count = 0;
  const stop = docker.onCall((method, path) => {
    const key = `${method} ${path}`;
    count++;
    byPath.set(key, (byPath.get(key) ?? 0) + 1);
  });
  return {
    get count() {
      return count;
    },
    byPath,
    reset() {
      count = 0;
      byPath.clear();
    },
    restore: stop,
  };
}
