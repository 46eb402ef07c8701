#!/usr/bin/env node
// `npm run bench:latency`: the desired → applied part of `npm run bench` alone (≈ 4 min), for work
// on that path: Swarm's own start time, then desired → applied at the default intervals (blocking
// query) and with a 2 s poll, each with the bench deployment (SLEEPER_CPU_CORES) and with a
// 0.1-core one. No footprint agent runs beside it, unlike in the full bench. Prints the rows
// `npm run bench` would print for these and writes bench/latency-results.json. Cleans up like it.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const T0 = Date.now();
const log = (m) => console.log(`[bench:latency ${String(Math.round((Date.now() - T0) / 1000)).padStart(3)} s] ${m}`);
for (const [cmd, args] of [
  ['npm', ['run', 'build']],
  ['bash', ['scripts/ensure-docker.sh']],
]) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', timeout: 600_000 });
  if (r.status !== 0) process.exit(1);
}

const { startReferenceControlPlane } = await import('../dist/refcp/index.js');
const { defaultSocketPath } = await import('../dist/swarm/docker-client.js');
const { default: Docker } = await import('dockerode');
const { TENTH_CPU_CORES, killAllChildren } = await import('./lib.mjs');
const { cleanupBench, rememberOrganization } = await import('./cleanup.mjs');
const { measureSwarmStart } = await import('./swarm-start.mjs');
const { measureApplyLatency } = await import('./latency.mjs');
const { buildRows, printTable } = await import('./report.mjs');
const docker = new Docker({ socketPath: defaultSocketPath(), timeout: 60_000 });
const cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, maxRecords: 500_000, blockingWaitSec: 300 });
const dir = mkdtempSync(join(tmpdir(), 'skp-bench-'));
const prefix = `skypanel-bench-${randomUUID().slice(0, 8)}`;
const org = (phase) => {
  rememberOrganization(`${prefix}-${phase}`);
  return `${prefix}-${phase}`;
};
let code = 0;
let finishing;
const done = () => (finishing ??= finish());
const finish = async () => {
  killAllChildren();
  const c = await cleanupBench(docker, { log }).catch((e) => ({ leftovers: [e.message] }));
  if (c.leftovers?.length) code ||= 1;
  await cp.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
  process.exit(code);
};
process.once('SIGINT', () => void done());
process.once('SIGTERM', () => void done());
setTimeout(() => void done(), 15 * 60_000).unref();

try {
  await cleanupBench(docker, { log });
  const nodeId = (await docker.info()).Swarm?.NodeID;
  const load = () =>
    loadavg()
      .map((x) => x.toFixed(2))
      .join(' ');
  const results = { loadBefore: load() };
  log(`load average before: ${results.loadBefore}`);
  const attempt = (fn) => fn().catch((e) => ({ error: e.message.split('\n')[0] }));
  results.swarmStart = await attempt(() => measureSwarmStart(docker, { nodeId, organizationId: org('start'), log }));
  results.swarmStartTenth = await attempt(() =>
    measureSwarmStart(docker, { nodeId, organizationId: org('start-tenth'), cpuCores: TENTH_CPU_CORES, log }),
  );
  const latency = (label, extra) =>
    attempt(() => measureApplyLatency(cp, dir, docker, { organizationId: org(label), samples: 10, label, log, ...extra }));
  results.latencyDefault = await latency('p30', { spacingMs: 7_000 });
  results.latencyDefaultTenth = await latency('p30-tenth', { spacingMs: 7_000, cpuCores: TENTH_CPU_CORES });
  results.latencyFast = await latency('p2', { pollSec: 2, spacingMs: 3_300 });
  results.loadAfter = load();
  log(`load average after: ${results.loadAfter}`);
  const rows = buildRows(results);
  writeFileSync(join(ROOT, 'bench', 'latency-results.json'), JSON.stringify({ ...results, rows }, null, 2) + '\n');
  console.log(`\n${printTable(rows)}\n`);
} catch (e) {
  log(`FAILED: ${e.message}`);
  code = 1;
}
await done();
