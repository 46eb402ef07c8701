// Organization networks hold >= 1,000 tasks: explicit subnets carved from a pool (pure arithmetic
// here; the real swarm is in test/e2e/org-network-scale.test.ts), services in endpoint mode dnsrr,
// and an upgrade that does not restart services created in vip mode.
import { describe, expect, it } from 'vitest';
import { formatCidr, overlaps, parseCidr, parseSubnet, pickSubnet, usableAddresses } from '../../src/domain/subnets.js';
import { buildServiceSpec, hashSpec } from '../../src/domain/service-spec.js';
import { driftedPaths } from '../../src/domain/drift.js';
import { parseDeployment } from '../../src/protocol/deployment.js';
import { DEFAULT_ORG_NETWORK_POOL, DEFAULT_ORG_NETWORK_PREFIX } from '../../src/agent/config-schema.js';

describe('subnets', () => {
  it('parses IPv4 CIDRs and refuses host bits, bad octets and prefixes', () => {
    expect(parseCidr('10.128.0.0/9')).toEqual({ base: 0x0a800000, prefix: 9 });
    expect(parseCidr('10.128.0.1/9')).toBeUndefined();
    expect(parseCidr('10.300.0.0/16')).toBeUndefined();
    expect(parseCidr('10.0.0.0/33')).toBeUndefined();
    expect(parseCidr('fd00::/64')).toBeUndefined();
    expect(parseSubnet('10.0.0.7/24')).toEqual(parseCidr('10.0.0.0/24'));
    expect(formatCidr(parseCidr('172.16.4.0/22')!)).toBe('172.16.4.0/22');
  });

  it('tells overlapping ranges from adjacent ones', () => {
    const a = parseCidr('10.191.0.0/20')!;
    expect(overlaps(a, parseCidr('10.191.8.0/24')!)).toBe(true);
    expect(overlaps(parseCidr('10.191.8.0/24')!, a)).toBe(true);
    expect(overlaps(a, parseCidr('10.191.16.0/20')!)).toBe(false);
  });

  it('the default network size holds at least 1,000 tasks (and 2,048 organizations fit the default pool)', () => {
    expect(usableAddresses(DEFAULT_ORG_NETWORK_PREFIX)).toBeGreaterThanOrEqual(2 * 1000);
    expect(usableAddresses(24)).toBeLessThan(1000);
    expect(2 ** (DEFAULT_ORG_NETWORK_PREFIX - parseCidr(DEFAULT_ORG_NETWORK_POOL)!.prefix)).toBe(2048);
  });

  it('picks a free subnet of the pool, deterministic per seed, avoiding every taken range, until the pool is full', () => {
    const pool = parseCidr('10.200.0.0/22')!; // four /24 slots
    const first = pickSubnet(pool, 24, [], 'sp-org-a')!;
    expect(pickSubnet(pool, 24, [], 'sp-org-a')).toEqual(first);
    expect(overlaps(first, pool)).toBe(true);
    const taken = [first];
    for (let i = 0; i < 3; i++) {
      const next = pickSubnet(pool, 24, taken, `sp-org-${i}`)!;
      expect(taken.some((t) => overlaps(t, next))).toBe(false);
      taken.push(next);
    }
    expect(pickSubnet(pool, 24, taken, 'sp-org-full')).toBeUndefined();
    // A larger network elsewhere in the pool (an operator's /23) blocks both its slots.
    const big = parseCidr('10.200.0.0/23')!;
    for (let i = 0; i < 20; i++) expect(overlaps(pickSubnet(pool, 24, [big], `seed-${i}`)!, big)).toBe(false);
    // Docker's own networks outside the pool do not count.
    expect(pickSubnet(pool, 24, [...taken.slice(1), parseCidr('172.17.0.0/16')!], 'sp-org-a')).toEqual(first);
  });

  it('spreads different organizations over different slots', () => {
    const pool = parseCidr(DEFAULT_ORG_NETWORK_POOL)!;
    const picks = new Set(
      Array.from({ length: 50 }, (_, i) => formatCidr(pickSubnet(pool, DEFAULT_ORG_NETWORK_PREFIX, [], `sp-org-${i}`)!)),
    );
    expect(picks.size).toBeGreaterThan(45);
  });
});

describe('endpoint mode dnsrr without restarting what runs', () => {
  const r = parseDeployment({
    id: 'dep_1',
    serviceId: 'svc_1',
    organizationId: 'org_1',
    slug: 'My App',
    imageTag: 'ghcr.io/acme/app:1.0',
    desiredState: 'running',
    replicas: 1,
    environmentVars: { A: 'b' },
    resourceLimits: { cpuCores: 0.5, memoryMb: 512 },
    internalPort: 8080,
  });
  if (!r.ok) throw new Error(r.rejected.message);
  const built = buildServiceSpec(r.deployment, { workerId: 'w1', nodeId: 'node-abc' });

  it('creates services in dnsrr mode (no virtual IP: one address per task)', () => {
    expect(built.spec.EndpointSpec.Mode).toBe('dnsrr');
  });

  it('keeps the spec hash of the vip release, so an upgrade updates no running service', () => {
    // Computed by the release before dnsrr (commit b49400e) for this very deployment; a deliberate
    // change to the spec changes it too (and restarts every service on upgrade: say so when it does).
    expect(built.specHash).toBe('6f88ef9df5c7986eb3e949c76adc710351885650fb44a5e3cc373c7bd25a1564');
    expect(hashSpec({ ...built.spec, EndpointSpec: { ...built.spec.EndpointSpec, Mode: 'vip' } })).toBe(built.specHash);
  });

  it('does not take a service created in vip mode for drift', () => {
    const live = structuredClone(built.spec) as unknown as { EndpointSpec: { Mode: string } };
    live.EndpointSpec.Mode = 'vip';
    expect(driftedPaths(built.spec, live)).toEqual([]);
  });
});
