import Docker from 'dockerode';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Built locally by scripts/ensure-docker.sh (static busybox on scratch); nothing is pulled. */
export const TEST_IMAGE = 'skypanel-test/busybox:1';

/**
 * A dockerode instance for a test's own look at Docker (inspecting, creating fixtures, cleaning
 * up). The agent's code under test takes the EngineClient from src/swarm/docker-client.ts instead;
 * dockerode stays a devDependency for this. The socket is explicit so DOCKER_HOST cannot redirect it.
 */
export function dockerode(opts: { socketPath?: string; timeoutMs?: number } = {}): Docker {
  return new Docker({ socketPath: opts.socketPath ?? '/var/run/docker.sock', timeout: opts.timeoutMs ?? 30_000 });
}

export type DockerReady = { ok: true } | { ok: false; reason: string };

const SCRIPT = fileURLToPath(new URL('../../scripts/ensure-docker.sh', import.meta.url));
// A cold machine installs docker.io first; the script bounds each step, this only backs it up.
const SCRIPT_TIMEOUT_MS = 20 * 60_000;
// On globalThis rather than module scope: vitest re-evaluates helper modules per test file, and the
// script is not worth re-running for every file that shares a worker process.
const MEMO = Symbol.for('skypanel-agent.test.ensureDocker');

function inCi(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

function runScript(): Promise<DockerReady> {
  return new Promise((resolve) => {
    execFile('bash', [SCRIPT], { timeout: SCRIPT_TIMEOUT_MS, maxBuffer: 4 * 1024 * 1024 }, (err, _stdout, stderr) => {
      if (!err) return resolve({ ok: true });
      const e = err as unknown as { code?: unknown; killed?: boolean; message: string };
      const detail = stderr.trim().split('\n').slice(-15).join('\n');
      if (e.killed)
        return resolve({
          ok: false,
          reason: `scripts/ensure-docker.sh did not finish within ${SCRIPT_TIMEOUT_MS / 60_000} min\n${detail}`,
        });
      // Exit 3 is the script's "not root": its stderr already says exactly why.
      if (e.code === 3) return resolve({ ok: false, reason: detail || 'scripts/ensure-docker.sh: not root' });
      resolve({
        ok: false,
        reason: `scripts/ensure-docker.sh failed (exit ${String(e.code ?? '?')})${detail ? `:\n${detail}` : `: ${e.message}`}`,
      });
    });
  });
}

/**
 * Docker in swarm mode with TEST_IMAGE, prepared once per test process. Without it, tests skip
 * with the reason printed; under CI a missing Docker must fail the run, never skip silently, so
 * this throws there instead.
 */
export function ensureDocker(): Promise<DockerReady> {
  const g = globalThis as { [MEMO]?: Promise<DockerReady> };
  g[MEMO] ??= runScript().then((r) => {
    if (!r.ok) {
      if (inCi()) throw new Error(`Docker tests cannot run and CI is set, refusing to skip them: ${r.reason}`);
      process.stderr.write(`\n[skypanel-agent tests] skipping Docker tests: ${r.reason}\n\n`);
    }
    return r;
  });
  return g[MEMO];
}

/**
 * Secrets (and any networks) labelled with a test worker's id, removed once their services are
 * gone: Swarm refuses to remove a secret still in use, so it is retried for up to 10 s.
 */
export async function removeWorkerLeftovers(docker: Docker, workerId: string): Promise<void> {
  const filters = JSON.stringify({ label: [`skypanel.worker.id=${workerId}`] });
  for (let attempt = 0; attempt < 10; attempt++) {
    const secrets = (await docker.listSecrets({ filters }).catch(() => [])) as { ID: string }[];
    const networks = (await docker.listNetworks({ filters }).catch(() => [])) as { Id: string }[];
    if (secrets.length === 0 && networks.length === 0) return;
    for (const s of secrets)
      await docker
        .getSecret(s.ID)
        .remove()
        .catch(() => {});
    for (const n of networks)
      await docker
        .getNetwork(n.Id)
        .remove()
        .catch(() => {});
    await new Promise((r) => setTimeout(r, 1_000));
  }
}
