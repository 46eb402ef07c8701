import { mkdtemp, readFile } from 'node:fs/promises';
import { AgentError } from '../errors.js';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { loadConfig } from '../agent/config.js';
import type { Logger } from '../agent/logger.js';
import type { KnownSecrets } from '../secret.js';
import { Secret } from '../secret.js';
import { startReferenceControlPlane } from '../refcp/index.js';
import { runRegister } from './register.js';
import { startAgent, stopOnSignals } from './run.js';

export interface DevOptions {
  port: number;
  heartbeatIntervalSec: number;
  configPath?: string;
  dockerSocket?: string;
  /** JSON file with `{"deployments": [...]}` (or a bare array) assigned to the dev worker. */
  deploymentsFile?: string;
  /** Short usage periods so records reach the reference control plane within a minute. */
  usagePeriodSec?: number;
  logger: Logger;
  /** The logger's secrets: the minted token and the deployments' secrets are added to it. */
  secrets?: KnownSecrets;
  say: (line: string) => void;
}

/**
 * One process, everything a newcomer needs to see the agent work: the reference control plane on
 * 127.0.0.1 (with SkyPanelV2's validation and rate limit), a freshly minted worker token, a
 * registration, and the running agent.
 */
export async function runDev(opts: DevOptions): Promise<void> {
  const cp = await startReferenceControlPlane({
    host: '127.0.0.1',
    port: opts.port,
    rateLimit: { max: 200, windowMs: 15 * 60_000 },
    logger: (line) => opts.logger.debug({ component: 'reference-control-plane' }, line),
  });
  opts.say(`reference control plane listening on ${cp.url}`);
  opts.say(`  admin API: curl -H 'Authorization: Bearer ${cp.adminToken}' ${cp.url}/admin/workers`);
  const configPath = opts.configPath ?? join(await mkdtemp(join(tmpdir(), 'skypanel-agent-dev-')), 'config.json');
  const workerId = randomUUID();
  const token = new Secret(cp.mintToken(workerId));
  if (opts.deploymentsFile) {
    const list = await readDeploymentsFile(opts.deploymentsFile);
    cp.setDeployments(workerId, list);
    opts.say(`assigned ${list.length} deployment(s) from ${opts.deploymentsFile}`);
  }
  const reg = await runRegister({
    controlPlaneUrl: cp.url,
    token,
    configPath,
    heartbeatIntervalSec: opts.heartbeatIntervalSec,
    dockerSocket: opts.dockerSocket,
    logger: opts.logger,
    say: opts.say,
  });
  // dev keeps its state beside its config, never in the host's /var/lib.
  const usagePeriodSec = opts.usagePeriodSec;
  const { config } = await loadConfig({
    path: configPath,
    flags: {
      stateDir: join(dirname(configPath), 'state'),
      usagePeriodSec,
      usageSampleIntervalSec: usagePeriodSec === undefined ? undefined : Math.max(1, Math.min(15, Math.floor(usagePeriodSec / 4))),
    },
  });
  opts.secrets?.add(config.token);
  const agent = await startAgent(config, configPath, opts.logger, opts.secrets);
  opts.say(`agent running as worker ${reg.workerId}; heartbeats every ${config.heartbeatIntervalSec}s. Ctrl-C stops both.`);
  opts.say(`  status: skypanel-agent status --config ${configPath}`);
  stopOnSignals(async () => {
    await agent.stop();
    await cp.close();
  }, opts.logger);
}

async function readDeploymentsFile(path: string): Promise<unknown[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new AgentError('SKP_ERR_USAGE', `--deployments ${path}: ${(err as Error).message.split('\n')[0]}`, { field: 'deployments' });
  }
  const list = Array.isArray(parsed) ? parsed : (parsed as { deployments?: unknown })?.deployments;
  if (!Array.isArray(list)) throw new AgentError('SKP_ERR_USAGE', `--deployments ${path}: expected {"deployments": [...]} or an array`, { field: 'deployments' });
  return list;
}
