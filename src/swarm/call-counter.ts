import type Docker from 'dockerode';

export interface DockerCallCounter {
  /** Engine API requests since creation or the last reset(). */
  readonly count: number;
  /** Per `METHOD /path` (no query string, no API version prefix), e.g. `GET /tasks`. */
  readonly byPath: Map<string, number>;
  reset(): void;
  /** Puts the original dial back; counting stops. */
  restore(): void;
}

type Dial = Docker['modem']['dial'];

/**
 * Counts requests made through one dockerode instance by wrapping its modem's dial, which every
 * dockerode method (and swarm-reader's engineCall) goes through exactly once per HTTP request.
 * Used to show that a steady-state reconcile pass costs a constant number of calls.
 */
export function countDockerCalls(docker: Docker): DockerCallCounter {
  const modem = docker.modem;
  const original: Dial = modem.dial;
  const byPath = new Map<string, number>();
  let count = 0;
  const counting: Dial = function (this: unknown, options, callback) {
    // Read before dialling: dial prefixes options.path with the API version in place.
    const path = options.path.split('?')[0] ?? options.path;
    const key = `${options.method ?? 'GET'} ${path}`;
    count++;
    byPath.set(key, (byPath.get(key) ?? 0) + 1);
    return original.call(modem, options, callback);
  };
  modem.dial = counting;
  return {
    get count() {
      return count;
    },
    byPath,
    reset() {
      count = 0;
      byPath.clear();
    },
    restore() {
      if (modem.dial === counting) modem.dial = original;
    },
  };
}
