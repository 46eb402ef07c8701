import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const TEST_IMAGE = 'skypanel-test/busybox:1';

const SCRIPT = fileURLToPath(new URL('../../scripts/ensure-docker.sh', import.meta.url));

let ready: Promise<{ ok: true } | { ok: false; reason: string }> | undefined;

/**
 * Docker in swarm mode with the test image, once per test process. Without root the Docker tests
 * are skipped with the reason printed; under CI a missing Docker fails the run instead.
 */
export function ensureDocker(): Promise<{ ok: true } | { ok: false; reason: string }> {
  ready ??= new Promise((resolve, reject) => {
    execFile('bash', [SCRIPT], { timeout: 900_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve({ ok: true });
      const reason = `Docker is not available: ${stderr.trim() || err.message}`;
      if (process.env.CI) return reject(new Error(`${reason} (CI must run the Docker tests)`));
      process.stderr.write(`skipping Docker tests: ${reason}\n`);
      resolve({ ok: false, reason });
    });
  });
  return ready;
}
