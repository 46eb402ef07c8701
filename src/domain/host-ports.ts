/**
 * Which host ports a deployment may publish. A host-mode port binds on every address of this
 * node, so a deployment publishing a port the host itself serves either fails to start (the port
 * is taken) or, worse, takes the port while its owner is down: a container holding the agent's
 * status port keeps the agent from ever starting again, one holding 22 keeps sshd out after a
 * restart, one holding a Swarm port cuts the node off the cluster.
 *
 * Deployments publish TCP only (the schema has no protocol field); the reserved numbers are
 * refused whatever the protocol, since Swarm's own ports are TCP and UDP alike (7946) or UDP (4789).
 */

export interface PortRange {
  from: number;
  to: number;
}

export interface HostPortPolicy {
  /** The agent's status API port (statusListen): never published, whatever allowedHostPorts says. */
  statusPort?: number;
  /** The agent's metrics port (metricsListen), likewise. */
  metricsPort?: number;
  /** Operator exceptions (allowedHostPorts) to the reserved numbers and the privileged range. */
  allowed: readonly PortRange[];
}

/** Ports the host serves in a swarm, refused unless an operator allows them. */
export const RESERVED_HOST_PORTS: ReadonlyMap<number, string> = new Map([
  [22, 'SSH'],
  [2375, 'the Docker Engine API'],
  [2376, 'the Docker Engine API over TLS'],
  [2377, 'Swarm cluster management'],
  [4789, 'Swarm overlay traffic (VXLAN)'],
  [7946, 'Swarm node discovery'],
]);

/** Below this, ports belong to the host's own services (the privileged range). */
export const FIRST_UNPRIVILEGED_PORT = 1024;

export const NO_HOST_PORT_RULES: HostPortPolicy = { allowed: [] };

/** Why `port` must not be published on this host, or undefined when it may be. */
export function refusedHostPort(port: number, policy: HostPortPolicy): string | undefined {
  if (port === policy.statusPort) return `port ${port} is this agent's status API port (statusListen)`;
  if (port === policy.metricsPort) return `port ${port} is this agent's metrics port (metricsListen)`;
  if (policy.allowed.some((r) => port >= r.from && port <= r.to)) return undefined;
  const named = RESERVED_HOST_PORTS.get(port);
  if (named !== undefined) return `port ${port} is reserved for ${named} on this host; an operator may allow it with allowedHostPorts`;
  if (port < FIRST_UNPRIVILEGED_PORT) {
    return `port ${port} is below ${FIRST_UNPRIVILEGED_PORT} (reserved for the host's own services); an operator may allow it with allowedHostPorts`;
  }
  return undefined;
}

/**
 * "80,443,8000-8100" (or the same as a JSON array of numbers and "a-b" strings) → ranges.
 * Returns an error text naming the bad entry instead of throwing, for the config schema.
 */
export function parsePortRanges(input: string | readonly (string | number)[]): PortRange[] | string {
  const items =
    typeof input === 'string'
      ? input
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '')
      : input;
  if (items.length > 100) return 'must list at most 100 ports or ranges';
  const out: PortRange[] = [];
  for (const item of items) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(String(item).trim());
    const from = m ? Number(m[1]) : NaN;
    const to = m?.[2] !== undefined ? Number(m[2]) : from;
    if (!m || from < 1 || to > 65535 || from > to)
      return `entry ${JSON.stringify(String(item).slice(0, 20))} must be a port (1-65535) or a range "from-to"`;
    out.push({ from, to });
  }
  return out;
}
