import Docker from 'dockerode';

export interface DockerClientOptions {
  socketPath?: string;
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
  return h?.startsWith('unix://') ? h.slice('unix://'.length) : '/var/run/docker.sock';
}

/** A dockerode client whose every request is bounded in time (dockerode's default is to wait forever). */
export function createDockerClient(opts: DockerClientOptions = {}): Docker {
  const timeout = opts.timeoutMs ?? 10_000;
  if (opts.host) {
    return new Docker({ host: opts.host, port: opts.port ?? 2376, protocol: 'https', ca: opts.ca, cert: opts.cert, key: opts.key, timeout });
  }
  return new Docker({ socketPath: opts.socketPath ?? defaultSocketPath(), timeout });
}
