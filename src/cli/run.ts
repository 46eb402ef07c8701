import { Agent } from '../agent/agent.js';
import type { AgentConfig, AgentConfigInput } from '../agent/config-schema.js';
import { loadConfig, type DockerEndpoint } from '../agent/config.js';
import { createLogger, type Logger } from '../agent/logger.js';
import { writeStatusAddress } from '../agent/status/status-address.js';
import type { CpuSnapshot } from '../collectors/cpu.js';
import { AgentError, EXIT } from '../errors.js';
import type { KnownSecrets } from '../secret.js';
import { createEngineProbe } from '../swarm/engine-probe.js';
import { createSwarmPort } from '../swarm/swarm-port.js';
import { parseCidr } from '../domain/subnets.js';
import { createObservePort } from '../swarm/observe-port.js';
import { createManagerClient } from '../swarm/manager-client.js';
import { createContainerStatsSampler } from '../swarm/container-stats.js';
import { watchEngineEvents } from '../swarm/engine-events.js';
import { RECONCILE_EVENT_FILTERS } from '../agent/deployments/reconciler.js';
import { DEFAULT_BACKOFF, fullJitter } from '../controlplane/backoff.js';

/** SIGTERM/SIGINT must stop the agent within this bound, even if something hangs. */
export const SHUTDOWN_BOUND_MS = 5_000;

export function assertRegistered(config: AgentConfig, configPath: string): asserts config is AgentConfig & { workerId: string } {
  if (!config.workerId) {
    throw new AgentError(
      'SKP_ERR_CONFIG_INVALID',
      `config key "workerId" is required: run \`skypanel-agent register\` first (config: ${configPath})`,
      { field: 'workerId' },
    );
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
      watchEngineEvents(
        {
          socketPath: config.dockerSocket,
          filters: RECONCILE_EVENT_FILTERS,
          retryDelayMs: (n) => Math.max(1_000, fullJitter(n, DEFAULT_BACKOFF)),
        },
        sink,
      ),
  });
  await agent.start();
  const api = agent.statusApi;
  if (api) {
    // Best effort: status and doctor fall back to the config when this file cannot be written.
    await writeStatusAddress(config.stateDir, {
      listen: config.statusListen,
      port: api.port,
      tls: config.statusTlsCert !== undefined,
    }).catch((err: Error) =>
      logger.warn({ err: err.message, stateDir: config.stateDir }, 'could not record the status API address for `status` and `doctor`'),
    );
  }
  return agent;
}

export interface DaemonOptions {
  configPath: string;
  /** Command-line flags, mapped to config keys; kept for every reload. */
  flags: Partial<Record<keyof AgentConfigInput, unknown>>;
  /** What this process learns (the token, deployment secrets): redacted from every log line. */
  secrets: KnownSecrets;
  /** A CPU sample taken at process start, for the first heartbeat's figure. */
  cpuBaseline?: CpuSnapshot;
}

/**
 * `skypanel-agent run`. SIGHUP re-reads the config (file and environment, the flags kept) and
 * restarts the agent in-process with it: every loop, the status API and the log level take the new
 * values, as after `systemctl restart`, but the process, its journal stream and the deployments stay.
 * A config that does not load is logged and the running agent carries on unchanged.
 */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  // The Docker endpoint (and where it came from) follows the config it was resolved with.
  let dockerEndpoint: StartAgentExtras['dockerEndpoint'];
  const load = async () => {
    const loaded = await loadConfig({ path: opts.configPath, flags: opts.flags });
    assertRegistered(loaded.config, opts.configPath);
    opts.secrets.add(loaded.config.token);
    dockerEndpoint = loaded.dockerEndpoint;
    return loaded.config;
  };
  const first = await load();
  const { secrets } = opts;
  // The process-start CPU sample belongs to the first start only.
  const extras = (first: boolean): StartAgentExtras => ({ secrets, dockerEndpoint, ...(first ? { cpuBaseline: opts.cpuBaseline } : {}) });
  let logger = createLogger({ level: first.logLevel, secrets });
  let current = first;
  // Signals are handled from here on, so a SIGHUP while the agent starts waits for it instead of
  // ending the process (node's default for SIGHUP).
  const starting = startAgent(first, logger, extras(true));
  let agent: Agent | undefined;
  const reload = async () => {
    agent ??= await starting;
    let next: typeof first;
    try {
      next = await load();
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'SIGHUP: the config does not load; the agent keeps running as it was');
      return;
    }
    logger.info({ configPath: opts.configPath }, 'SIGHUP: restarting the agent with the re-read config');
    await agent.stop();
    const nextLogger = createLogger({ level: next.logLevel, secrets });
    try {
      agent = await startAgent(next, nextLogger, extras(false));
      logger = nextLogger;
      current = next;
      logger.info('config reloaded');
    } catch (err) {
      logger.error(
        { err: (err as Error).message },
        'SIGHUP: the agent does not start with the new config; starting it again with the previous one',
      );
      agent = await startAgent(current, logger, extras(false));
    }
  };
  stopOnSignals(
    async () => (agent ?? (await starting.catch(() => undefined)))?.stop(),
    () => logger,
    reload,
  );
  agent = await starting;
}

/**
 * Stop on the first SIGTERM/SIGINT; a hard exit backs the bound if stopping hangs. With `reload`,
 * SIGHUP runs it, one at a time (a SIGHUP during a reload runs one more after it); a stop waits for
 * a reload in flight. Without it SIGHUP keeps node's default (the process ends), as for `dev`.
 */
export function stopOnSignals(stop: () => Promise<void>, loggerOf: Logger | (() => Logger), reload?: () => Promise<void>): void {
  const log = () => (typeof loggerOf === 'function' ? loggerOf() : loggerOf);
  let stopping = false;
  let reloading: Promise<void> | undefined;
  let again = false;
  const runReload = () => {
    if (!reload) return;
    reloading = reload()
      .catch((err: Error) => {
        log().fatal({ err: err.message }, 'SIGHUP: the agent could not be started again; exiting');
        process.exit(EXIT.failure);
      })
      .finally(() => {
        reloading = undefined;
        if (again && !stopping) {
          again = false;
          runReload();
        }
      });
  };
  if (reload) {
    process.on('SIGHUP', () => {
      if (stopping) return;
      if (reloading) again = true;
      else runReload();
    });
  }
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    const logger = log();
    logger.info({ signal }, 'stopping');
    const hard = setTimeout(() => {
      logger.error({ boundMs: SHUTDOWN_BOUND_MS }, 'shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_BOUND_MS);
    hard.unref();
    (reloading ?? Promise.resolve())
      .then(() => stop())
      .then(
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
