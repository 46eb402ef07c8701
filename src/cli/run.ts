import { Agent } from '../agent/agent.js';
import type { AgentConfig } from '../agent/config-schema.js';
import type { DockerEndpoint } from '../agent/config.js';
import type { Logger } from '../agent/logger.js';
import type { CpuSnapshot } from '../collectors/cpu.js';
import { AgentError } from '../errors.js';
import type { KnownSecrets } from '../secret.js';
import { createEngineProbe } from '../swarm/engine-probe.js';
import { createSwarmPort } from '../swarm/swarm-port.js';
import { parseCidr } from '../domain/subnets.js';
import { createObservePort } from '../swarm/observe-port.js';
import { createManagerClient } from '../swarm/manager-client.js';
import { createContainerStatsSampler } from '../swarm/container-stats.js';
import { watchEngineEvents } from '../swarm/engine-events.js';
import { RECONCILE_EVENT_FILTERS } from '../agent/reconciler.js';
import { DEFAULT_BACKOFF, fullJitter } from '../agent/backoff.js';

/** SIGTERM/SIGINT must stop the agent within this bound, even if something hangs. */
export const SHUTDOWN_BOUND_MS = 5_000;

export function assertRegistered(config: AgentConfig, configPath: string): asserts config is AgentConfig & { workerId: string } {
  if (!config.workerId) {
    throw new AgentError('SKP_ERR_CONFIG_INVALID', `config key "workerId" is required: run \`skypanel-agent register\` first (config: ${configPath})`, { field: 'workerId' });
  }
}

export interface StartAgentExtras {
  /** Secret values to redact from output, shared with the logger. */
  secrets?: KnownSecrets;
  /** A CPU sample taken at process start (process-start.ts), where there is one. */
  cpuBaseline?: CpuSnapshot;
  /** Where `config.dockerSocket` came from (loadConfig's dockerEndpoint), for the start log and the status API. */
  dockerEndpoint?: DockerEndpoint;
}

export async function startAgent(config: AgentConfig, logger: Logger, extras: StartAgentExtras = {}): Promise<Agent> {
  // Every Engine client of the agent (probe, ports, events, usage) uses this one socket.
  const engine = createEngineProbe({ socketPath: config.dockerSocket });
  // The schema has checked the pool is a CIDR.
  const networks = { pool: parseCidr(config.orgNetworkPool)!, prefix: config.orgNetworkPrefix };
  const agent = new Agent({
    config,
    dockerEndpoint: extras.dockerEndpoint,
    logger,
    secrets: extras.secrets,
    cpuBaseline: extras.cpuBaseline,
    engine,
    swarm: {
      local: (workerId, nodeId) => createSwarmPort(engine.docker, { workerId, nodeId, networks, logger }),
      remote: async (workerId, nodeId) => createSwarmPort(await createManagerClient(config), { workerId, nodeId, networks, logger }),
      observe: () => createObservePort(engine.docker),
    },
    usageSampler: (workerId) => createContainerStatsSampler(engine.docker, { workerId }),
    // The local engine even in remote-manager mode: container events are local, and service events
    // are only seen on managers (a worker node's service changes are caught by the resync).
    watchEngineEvents: (sink) =>
      watchEngineEvents({ socketPath: config.dockerSocket, filters: RECONCILE_EVENT_FILTERS, retryDelayMs: (n) => Math.max(1_000, fullJitter(n, DEFAULT_BACKOFF)) }, sink),
  });
  await agent.start();
  return agent;
}

/** Stop on the first SIGTERM/SIGINT; a hard exit backs the bound if stopping hangs. */
export function stopOnSignals(stop: () => Promise<void>, logger: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    const hard = setTimeout(() => {
      logger.error({ boundMs: SHUTDOWN_BOUND_MS }, 'shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_BOUND_MS);
    hard.unref();
    stop().then(
      () => process.exit(0),
      (err: Error) => {
        logger.error({ err: err.message }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}
