// The swarm's own start time: `docker service create` → task running, with the exact spec the agent
// would send for a bench deployment (of `cpuCores`), straight through dockerode (no agent involved).
import { randomUUID } from 'node:crypto';
import { buildNetworkSpec, buildServiceSpec } from '../dist/domain/service-spec.js';
import { parseDeployment } from '../dist/protocol/deployment.js';
import { rememberWorker } from './cleanup.mjs';
import { SLEEPER_CPU_CORES, max, median, sleep, sleeperDeployment, waitFor } from './lib.mjs';

export async function measureSwarmStart(docker, { nodeId, organizationId, samples = 5, cpuCores, log }) {
  const workerId = randomUUID();
  rememberWorker(workerId);
  const net = buildNetworkSpec(organizationId);
  const existing = await docker.listNetworks({ filters: JSON.stringify({ name: [net.Name] }) });
  if (!existing.some((n) => n.Name === net.Name)) await docker.createNetwork(net);

  const ms = [];
  for (let i = 0; i < samples; i++) {
    const parsed = parseDeployment(sleeperDeployment(organizationId, `swarm-start-${i}`, 'running', { cpuCores }));
    if (!parsed.ok) throw new Error(`bench deployment rejected: ${parsed.rejected.message}`);
    const { spec } = buildServiceSpec(parsed.deployment, { workerId, nodeId });
    const t0 = Date.now();
    const created = await docker.createService(null, spec);
    const id = created.ID ?? created.id;
    const task = await waitFor(
      async () => (await docker.listTasks({ filters: JSON.stringify({ service: [id] }) })).find((t) => t.Status?.State === 'running'),
      60_000,
      `task of ${spec.Name} running`,
      25,
    );
    // Docker stamps the transition itself (same clock): no polling granularity in the figure.
    ms.push(Date.parse(task.Status.Timestamp) - t0);
    await docker.getService(id).remove();
    await sleep(200);
  }
  log?.(`swarm start${cpuCores === undefined ? '' : ` (${cpuCores} cores)`}: ${ms.map((x) => `${x} ms`).join(', ')}`);
  return { cpuCores: cpuCores ?? SLEEPER_CPU_CORES, samplesMs: ms, medianMs: median(ms), maxMs: max(ms), workerId };
}
