// Organization networks on the real swarm: a new one gets a free subnet of the pool (not Docker's
// default /24), clear of networks already there; an existing one (an older /24) is used as it is,
// with one warning naming it, never replaced. The 300-service run is multinode-mixed-fleet.test.ts.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { buildNetworkSpec } from '../../src/domain/service-spec.js';
import { formatCidr, overlaps, parseCidr, parseSubnet, pickSubnet } from '../../src/domain/subnets.js';
import { LABEL } from '../../src/domain/labels.js';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { ensureOrgNetwork } from '../../src/swarm/org-network.js';
import { dockerode, ensureDocker } from '../helpers/docker.js';

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
const RUN = randomUUID().slice(0, 8);
// A pool of this run's own (four /24 slots), so concurrent runs on the shared swarm do not meet.
const POOL = parseCidr(`10.${200 + (parseInt(RUN.slice(0, 2), 16) % 50)}.${(parseInt(RUN.slice(2, 4), 16) % 64) * 4}.0/22`)!;

interface NetJson {
  Id: string;
  Name: string;
  IPAM: { Config: { Subnet: string }[] };
}
const made: string[] = [];

describe.skipIf(!ready.ok)('organization networks on the real swarm', () => {
  const client = createDockerClient({ socketPath: '/var/run/docker.sock', timeoutMs: 30_000 });

  afterAll(async () => {
    for (const id of made)
      await docker
        .getNetwork(id)
        .remove()
        .catch(() => {});
    for (const label of [
      `skp-org-network-test=${RUN}`,
      `${LABEL.organizationId}=org-net-test-${RUN}`,
      `${LABEL.organizationId}=org-net-old-${RUN}`,
    ]) {
      const left = (await docker.listNetworks({ filters: JSON.stringify({ label: [label] }) })) as { Id: string }[];
      for (const n of left)
        await docker
          .getNetwork(n.Id)
          .remove()
          .catch(() => {});
    }
    client.close();
  });

  it('creates a new organization network with a free subnet of the pool, avoiding one already in use', async () => {
    const spec = buildNetworkSpec(`org-net-test-${RUN}`);
    // Someone already holds the slot this network would pick first.
    const first = pickSubnet(POOL, 24, [], spec.Name)!;
    const squatter = (await docker.createNetwork({
      Name: `skp-squatter-${RUN}`,
      Driver: 'overlay',
      Labels: { 'skp-org-network-test': RUN },
      IPAM: { Driver: 'default', Config: [{ Subnet: formatCidr(first) }] },
    })) as { id: string };
    made.push(squatter.id);

    const res = await ensureOrgNetwork(client, spec, { pool: POOL, prefix: 24 });
    made.push(res.id);
    expect(res.created).toBe(true);
    const net = (await docker.getNetwork(res.id).inspect()) as NetJson;
    const subnet = parseSubnet(net.IPAM.Config[0]!.Subnet)!;
    expect(subnet.prefix).toBe(24);
    expect(overlaps(subnet, POOL)).toBe(true);
    expect(overlaps(subnet, first)).toBe(false);
    // Found again, not created twice.
    expect(await ensureOrgNetwork(client, spec, { pool: POOL, prefix: 24 })).toEqual({ id: res.id, created: false });
  });

  it("keeps an existing organization network with Docker's default /24, warning once, instead of replacing it", async () => {
    const spec = buildNetworkSpec(`org-net-old-${RUN}`);
    const old = (await docker.createNetwork({
      Name: spec.Name,
      Driver: 'overlay',
      Attachable: true,
      Options: { encrypted: '' },
      Labels: spec.Labels,
    })) as { id: string };
    made.push(old.id);
    const warnings: unknown[][] = [];
    const logger = { warn: (...args: unknown[]) => void warnings.push(args) } as never;
    const warned = new Set<string>();
    for (let i = 0; i < 2; i++)
      expect(await ensureOrgNetwork(client, spec, { pool: POOL, prefix: 20, logger, warned })).toEqual({ id: old.id, created: false });
    expect(warnings).toHaveLength(1);
    expect(JSON.stringify(warnings[0])).toContain(spec.Name);
    expect((warnings[0]![0] as { subnet: string }).subnet).toMatch(/\/24$/);
    expect(spec.Labels[LABEL.organizationId]).toBe(`org-net-old-${RUN}`);
  });
});
