import { formatCidr, overlaps, parseSubnet, pickSubnet, usableAddresses, type Cidr } from '../domain/subnets.js';
import type { buildNetworkSpec } from '../domain/service-spec.js';
import type { Logger } from '../ports.js';
import type { EngineClient } from './docker-client.js';
import { SwarmError, toSwarmError } from './observed.js';

export interface OrgNetworkPool {
  pool: Cidr;
  prefix: number;
}

interface NetworkJson {
  Id: string;
  Name: string;
  Labels?: Record<string, string> | null;
  IPAM?: { Config?: { Subnet?: string }[] | null } | null;
}

/** Two agents picking overlapping subnets at the same moment: the later network gives way, this many times at most. */
const MAX_ATTEMPTS = 3;

const subnetsOf = (n: NetworkJson): Cidr[] =>
  (n.IPAM?.Config ?? []).map((c) => (c.Subnet ? parseSubnet(c.Subnet) : undefined)).filter((c): c is Cidr => c !== undefined);

const labelled = (n: NetworkJson, labels: Record<string, string>): boolean => Object.entries(labels).every(([k, v]) => n.Labels?.[k] === v);

async function listNetworks(docker: EngineClient, filters?: Record<string, string[]>): Promise<NetworkJson[]> {
  return docker.request<NetworkJson[]>({
    method: 'GET',
    path: '/networks',
    ...(filters ? { query: { filters: JSON.stringify(filters) } } : {}),
  });
}

/**
 * The organization's overlay network, created when absent with an explicit subnet from the pool
 * (see subnets.ts for why). A network of that name and labels that already exists is used as it
 * is, whatever its subnet: changing a network's subnet means detaching every service of the
 * organization, which restarts them, so an older /24 is kept and named in a warning (once per
 * network and process) instead. Two creates of one organization racing end with one network
 * (the loser adopts the winner's); a network of that name without these labels is someone else's
 * and never adopted. Calls: one lookup when the network exists; two lists, a create and a check
 * when it does not.
 */
export async function ensureOrgNetwork(
  docker: EngineClient,
  spec: ReturnType<typeof buildNetworkSpec>,
  opts: OrgNetworkPool & { logger?: Logger; warned?: Set<string> },
): Promise<{ id: string; created: boolean }> {
  const action = `creating network ${spec.Name}`;
  const find = async (): Promise<NetworkJson | undefined> =>
    // The name filter matches substrings: compare exactly.
    (await listNetworks(docker, { name: [spec.Name] })).find((n) => n.Name === spec.Name && labelled(n, spec.Labels));
  try {
    for (let attempt = 1; ; attempt++) {
      const existing = await find();
      if (existing) {
        warnIfSmall(existing, opts);
        return { id: existing.Id, created: false };
      }
      const all = await listNetworks(docker);
      if (all.some((n) => n.Name === spec.Name))
        throw new SwarmError('conflict', `${action}: a network of that name exists without the expected labels`);
      const subnet = pickSubnet(opts.pool, opts.prefix, all.flatMap(subnetsOf), spec.Name);
      if (!subnet) {
        throw new SwarmError(
          'rejected',
          `${action}: orgNetworkPool ${formatCidr(opts.pool)} has no free /${opts.prefix} left (raise the pool or the prefix length)`,
        );
      }
      let id: string;
      try {
        id = (
          await docker.request<{ Id: string }>({
            method: 'POST',
            path: '/networks/create',
            body: { ...spec, CheckDuplicate: true, IPAM: { Driver: 'default', Config: [{ Subnet: formatCidr(subnet) }] } },
          })
        ).Id;
      } catch (err) {
        const e = toSwarmError(action, err);
        if (e.kind !== 'conflict' || attempt >= MAX_ATTEMPTS) throw e;
        continue; // Another agent created it first: the next lookup adopts it.
      }
      // Swarm accepts overlapping explicit subnets: if another agent took an overlapping one at
      // the same moment, the network with the larger id gives way (both sides decide alike).
      const rival = (await listNetworks(docker)).find((n) => n.Id !== id && subnetsOf(n).some((s) => overlaps(s, subnet)));
      if (!rival || rival.Id > id || attempt >= MAX_ATTEMPTS) {
        opts.logger?.info(
          { network: spec.Name, subnet: formatCidr(subnet), taskAddresses: usableAddresses(subnet.prefix) },
          'organization network created',
        );
        return { id, created: true };
      }
      await docker.request({ method: 'DELETE', path: `/networks/${encodeURIComponent(id)}` }).catch(() => {});
    }
  } catch (err) {
    throw toSwarmError(action, err);
  }
}

function warnIfSmall(n: NetworkJson, opts: { prefix: number; logger?: Logger; warned?: Set<string> }): void {
  const subnet = subnetsOf(n)[0];
  if (!subnet || subnet.prefix <= opts.prefix || opts.warned?.has(n.Id)) return;
  opts.warned?.add(n.Id);
  opts.logger?.warn(
    { network: n.Name, subnet: formatCidr(subnet), taskAddresses: usableAddresses(subnet.prefix) },
    'organization network predates orgNetworkPool and keeps its small subnet: tasks beyond its addresses wait in state new and are reported failed; recreating it restarts every service of the organization, so the agent leaves that to the operator (see README)',
  );
}
