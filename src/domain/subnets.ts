import { createHash } from 'node:crypto';

/**
 * IPv4 subnet arithmetic for organization networks. Docker gives an overlay network a /24 from
 * its default pool unless told otherwise: about 250 addresses, so the 251st task of an
 * organization waited in state `new` for ever. The agent instead gives each organization network
 * an explicit, larger subnet carved from a configured pool (orgNetworkPool / orgNetworkPrefix).
 * Swarm does not refuse overlapping explicit subnets (checked on Docker 20.10), so the agent picks
 * one that overlaps nothing it can see. Pure: no I/O.
 */

/**
 * Organization networks: a /20 (4,093 task addresses) per organization from 10.128.0.0/9 (2,048
 * organizations per swarm). Services use endpoint mode dnsrr (one address per task, no VIP), so
 * an organization holds about 4,000 tasks, with room for start-first updates running two tasks of
 * a service at once. Outside Docker's default pools (172.17–31/16, 192.168/16 bridges; swarm
 * overlays count up from 10.0.0.0/24), so the two do not meet in practice, and the agent checks.
 */
export const DEFAULT_ORG_NETWORK_POOL = '10.128.0.0/9';
export const DEFAULT_ORG_NETWORK_PREFIX = 20;

export interface Cidr {
  /** Network address as an unsigned 32-bit integer. */
  base: number;
  prefix: number;
}

const MASK = (prefix: number): number => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** `10.128.0.0/9` → Cidr; undefined for anything that is not an IPv4 CIDR whose host bits are zero. */
export function parseCidr(text: string): Cidr | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text.trim());
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  if (octets.some((o) => o > 255) || prefix > 32) return undefined;
  const base = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  if ((base & ~MASK(prefix)) >>> 0 !== 0) return undefined;
  return { base, prefix };
}

/** Like parseCidr, but host bits are cleared (Docker reports what it was given, e.g. `10.0.0.1/24` never, but be lenient). */
export function parseSubnet(text: string): Cidr | undefined {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text.trim());
  if (!m) return undefined;
  const prefix = Number(m[2]);
  if (prefix > 32) return undefined;
  const exact = parseCidr(`${m[1]}/32`);
  if (!exact) return undefined;
  return { base: (exact.base & MASK(prefix)) >>> 0, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${c.base >>> 24}.${(c.base >>> 16) & 255}.${(c.base >>> 8) & 255}.${c.base & 255}/${c.prefix}`;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return (a.base & MASK(p)) >>> 0 === (b.base & MASK(p)) >>> 0;
}

/** Usable task addresses of a subnet: minus network, broadcast and gateway. */
export function usableAddresses(prefix: number): number {
  return Math.max(0, 2 ** (32 - prefix) - 3);
}

/**
 * A `prefix`-sized subnet of `pool` that overlaps none of `taken`, or undefined when the pool is
 * full. The search starts at a slot derived from `seed` (the network name), so agents creating
 * networks for different organizations at the same moment almost never pick the same slot; from
 * there it walks the pool in order, wrapping once.
 */
export function pickSubnet(pool: Cidr, prefix: number, taken: readonly Cidr[], seed: string): Cidr | undefined {
  if (prefix < pool.prefix || prefix > 30) return undefined;
  const slots = 2 ** (prefix - pool.prefix);
  const size = 2 ** (32 - prefix);
  const inPool = taken.filter((t) => overlaps(t, pool));
  const start = createHash('sha256').update(seed, 'utf8').digest().readUInt32BE(0) % slots;
  for (let i = 0; i < slots; i++) {
    const candidate: Cidr = { base: (pool.base + ((start + i) % slots) * size) >>> 0, prefix };
    if (!inPool.some((t) => overlaps(t, candidate))) return candidate;
  }
  return undefined;
}
