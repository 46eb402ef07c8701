import { dockerEndpointFor } from '../agent/config.js';
import { fail, oneLine, type CheckResult, type CheckStatus, type Outcome } from './doctor-check.js';
import {
  checkConfig,
  checkDisk,
  checkDocker,
  checkStatusPort,
  checkSwarm,
  type ConfigState,
  type DockerState,
} from './doctor-host-checks.js';
import { checkClock, checkControlPlane, checkToken, type PanelState } from './doctor-panel-checks.js';

/** `skypanel-agent doctor`: every check (doctor-host-checks.ts, doctor-panel-checks.ts) under a deadline, then the report. */

export interface DoctorReport {
  ok: boolean;
  checks: CheckResult[];
}

export interface DoctorOptions {
  configPath: string;
  env?: NodeJS.ProcessEnv;
  /** Bound on each check; 5 s by default. */
  checkTimeoutMs?: number;
  /** The installed unit, read for its User= (is the config readable by the service?). */
  unitPath?: string;
}

class DeadlineExceeded extends Error {}

/** Run one check under a hard deadline; a throw or a timeout is a failed check, never a crash. */
async function timed(id: CheckResult['id'], timeoutMs: number, fn: () => Promise<Outcome>): Promise<CheckResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineExceeded()), timeoutMs);
  });
  let outcome: Outcome;
  try {
    outcome = await Promise.race([fn(), deadline]);
  } catch (err) {
    outcome =
      err instanceof DeadlineExceeded
        ? fail(`no answer within ${timeoutMs / 1000} s`)
        : fail(oneLine((err as Error)?.message ?? String(err)));
  } finally {
    clearTimeout(timer);
  }
  return { id, ...outcome, ms: Math.round(performance.now() - started) };
}

// --- report ------------------------------------------------------------------------------------------

/** Every check, in a fixed order; independent ones run concurrently, each bounded. */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const timeoutMs = opts.checkTimeoutMs ?? 5_000;
  const env = opts.env ?? process.env;
  const cfg: ConfigState = {};
  const dockerState: DockerState = {};
  const panel: PanelState = {};

  const config = await timed('config', timeoutMs, () => checkConfig(opts, cfg));
  const endpoint = await dockerEndpointFor(opts.configPath, undefined, env);

  const dockerChain = (async () => {
    const docker = await timed('docker', timeoutMs, () => checkDocker(endpoint, timeoutMs, dockerState));
    const swarm = await timed('swarm', timeoutMs, () => checkSwarm(dockerState));
    const disk = await timed('disk', timeoutMs, () => checkDisk(dockerState));
    return [docker, swarm, disk];
  })();
  const reach = timed('control-plane', timeoutMs, () => checkControlPlane(cfg.partial, timeoutMs, panel));
  const port = timed('status-port', timeoutMs, () => checkStatusPort(cfg.partial, env, timeoutMs));
  const [dockerChecks, controlPlane] = await Promise.all([dockerChain, reach]);
  // The heartbeat carries the real container count and node id, so it waits for the Docker checks.
  const token = await timed('token', timeoutMs, () => checkToken(cfg, panel, dockerState, timeoutMs));
  const clock = await timed('clock', timeoutMs, () => checkClock(panel));

  const checks = [config, ...dockerChecks, controlPlane, token, clock, await port];
  return { ok: checks.every((c) => c.status === 'pass' || c.status === 'warn'), checks };
}

const SYMBOL: Record<CheckStatus, string> = { pass: '✓', warn: '!', fail: '✗', skip: '-' };

export function renderReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.id.length));
  const lines = report.checks.map(
    (c) => `${SYMBOL[c.status]} ${c.id.padEnd(width)}  ${c.message}${c.fix && c.status !== 'pass' ? ` — fix: ${c.fix}` : ''}`,
  );
  const failed = report.checks.filter((c) => c.status === 'fail').length;
  const warned = report.checks.filter((c) => c.status === 'warn').length;
  lines.push(
    report.ok
      ? `all checks passed${warned ? ` (${warned} warning${warned > 1 ? 's' : ''})` : ''}`
      : `${failed} check${failed > 1 ? 's' : ''} failed`,
  );
  return lines.join('\n');
}
