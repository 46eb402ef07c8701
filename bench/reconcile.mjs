// Reconcile steady-state pass at several N: runs reconcile-child.mjs (the agent's Reconciler over a
// call-counting Engine API client) in its own process and returns what it measured.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { rememberOrganization, rememberWorker } from './cleanup.mjs';
import { ROOT, spawnNodeAsUnit } from './lib.mjs';

/** Deployments per organization in the child: one /24 org network holds ~250 endpoints (see run.mjs). */
export const PER_ORGANIZATION = 50;

export function measureReconcile({ nodeId, organizationPrefix, sizes = [10, 100, 500], passes = 7, timeoutMs = 540_000, log }) {
  const workerId = randomUUID();
  rememberWorker(workerId);
  for (let k = 0; k * PER_ORGANIZATION < Math.max(...sizes); k++) rememberOrganization(`${organizationPrefix}-rc-${k}`);
  return new Promise((resolve, reject) => {
    // With the unit's node flags and environment: the pass costs what it costs in the installed agent.
    const args = [
      join(ROOT, 'bench', 'reconcile-child.mjs'),
      workerId,
      nodeId,
      organizationPrefix,
      sizes.join(','),
      String(passes),
      String(PER_ORGANIZATION),
    ];
    const child = spawnNodeAsUnit(args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => {
      err += d;
      for (const line of String(d).split('\n')) if (line.trim()) log?.(line);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code === 0 && line) return resolve({ workerId, ...JSON.parse(line.slice(7)) });
      reject(
        new Error(
          `reconcile child failed (${signal ?? `exit ${code}`}${signal === 'SIGKILL' ? `, bound ${timeoutMs / 1000} s` : ''}):\n${err.slice(-3000)}`,
        ),
      );
    });
  });
}
