import Docker from 'dockerode';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
export const DEFAULT_DOCKER_TIMEOUT_MS = 10_000;

export interface DockerClientOptions {
  /** Unix socket of the Engine API; ignored when `host` is set. */
  socketPath?: string;
  /** TCP host (name, address or `tcp://host:port`); TLS when any of ca/cert/key is given. */
  host?: string;
  port?: number;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Bound on every Engine API call; default 10 s. */
  timeoutMs?: number;
}

/** The socket Docker's own CLI would use: DOCKER_HOST when it names a unix socket, else the default. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const h = env.DOCKER_HOST;
  return h?.startsWith('unix://') && h.length > 'unix://'.length ? h.slice('unix://'.length) : DEFAULT_DOCKER_SOCKET;
}

/**
 * A dockerode client whose every request is bounded in time (dockerode's default is to wait
 * forever). The bound is an idle timeout on the socket, so long-lived streams (events, logs) that
 * go quiet for longer than `timeoutMs` are cut too: create a separate client for those.
 */
export function createDockerClient(opts: DockerClientOptions = {}): Docker {
  const timeout = opts.timeoutMs ?? DEFAULT_DOCKER_TIMEOUT_MS;
  if (!(timeout > 0) || !Number.isFinite(timeout)) throw new RangeError(`timeoutMs must be a positive number, got ${timeout}`);
  // docker-modem merges its own DOCKER_HOST/DOCKER_CERT_PATH/DOCKER_TLS_VERIFY defaults under ours;
  // every connection field is set explicitly (undefined included) so the environment cannot redirect
  // a client that was configured for a specific socket or host.
  const none = { socketPath: undefined, host: undefined, port: undefined, ca: undefined, cert: undefined, key: undefined, username: undefined, version: undefined };
  if (opts.host) {
    let host = opts.host;
    let port = opts.port;
    if (host.includes('://')) {
      const u = new URL(host);
      host = u.hostname;
      port ??= u.port ? Number(u.port) : undefined;
    }
    const tls = Boolean(opts.ca || opts.cert || opts.key);
    return new Docker({
      ...none,
      host,
      port: port ?? (tls ? 2376 : 2375),
      protocol: tls ? 'https' : 'http',
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      timeout,
    });
  }
  return new Docker({ ...none, socketPath: opts.socketPath ?? defaultSocketPath(), protocol: 'http', timeout });
}

interface ModemView {
  socketPath?: unknown;
  host?: string;
  port?: number | string;
  protocol?: string;
  timeout?: number;
}

function modemOf(docker: Docker): ModemView {
  return ((docker as unknown as { modem?: ModemView }).modem ?? {}) as ModemView;
}

/** Where a client points, for error messages: `unix:///var/run/docker.sock` or `https://host:2376`. */
export function describeDockerEndpoint(docker: Docker): string {
  const m = modemOf(docker);
  if (m.host) return `${m.protocol ?? 'http'}://${m.host}${m.port ? `:${m.port}` : ''}`;
  if (typeof m.socketPath === 'string') return `unix://${m.socketPath}`;
  return 'the default Docker socket';
}

/** The per-request bound a client was built with; clients made elsewhere get the default. */
export function dockerTimeoutMs(docker: Docker): number {
  const t = modemOf(docker).timeout;
  return typeof t === 'number' && t > 0 ? t : DEFAULT_DOCKER_TIMEOUT_MS;
}
