/*
 * Where the local Docker engine listens. Plain knowledge, no client: the agent's config reads it
 * to describe its default, and src/swarm's client connects to it.
 */

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/** The socket Docker's own CLI would use: DOCKER_HOST when it names a unix socket, else the default. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const h = env.DOCKER_HOST;
  return h?.startsWith('unix://') && h.length > 'unix://'.length ? h.slice('unix://'.length) : DEFAULT_DOCKER_SOCKET;
}
