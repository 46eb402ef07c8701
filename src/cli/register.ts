import { AgentError } from '../errors.js';
import { Secret } from '../secret.js';
import { DEFAULT_CONFIG_PATH, configSchema } from '../agent/config-schema.js';
import { describeEndpoint, dockerEndpointFor, readConfigFile, writeConfigFile } from '../agent/config.js';
import { ControlPlaneClient } from '../controlplane/control-plane-client.js';
import type { Logger } from '../agent/logger.js';
import { buildRegisterRequest, registerWorker } from '../controlplane/registration.js';
import { addressScope } from '../collectors/address.js';
import { createEngineProbe } from '../swarm/engine-probe.js';
import { joinSwarm } from '../swarm/join.js';

export interface RegisterOptions {
  controlPlaneUrl: string;
  token: Secret;
  configPath?: string;
  name?: string;
  ipAddress?: string;
  heartbeatIntervalSec?: number;
  dockerSocket?: string;
  /** For the Docker endpoint resolution (SKYPANEL_AGENT_DOCKER_SOCKET, DOCKER_HOST); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Written into the config, so `run`, `status` and `doctor` all use them. */
  stateDir?: string;
  statusListen?: string;
  swarmJoinToken?: Secret;
  swarmManager?: string;
  timeoutMs?: number;
  logger: Logger;
  /** Where human-readable progress goes (stderr for the CLI). */
  say?: (line: string) => void;
}

export interface RegisterResult {
  workerId: string;
  configPath: string;
  swarmNodeId: string | null;
}

/** Collect facts, optionally join the swarm, call register, and write the 0600 config file. */
export async function runRegister(opts: RegisterOptions): Promise<RegisterResult> {
  const say = opts.say ?? (() => {});
  const configPath = opts.configPath ?? DEFAULT_CONFIG_PATH;
  let url: URL;
  try {
    url = new URL(opts.controlPlaneUrl);
    if (!/^https?:$/.test(url.protocol)) throw new Error('scheme');
  } catch {
    throw new AgentError('SKP_ERR_USAGE', `--control-plane must be an http:// or https:// URL`, { field: 'controlPlaneUrl' });
  }
  // Flags that go into the config are checked before anything has side effects.
  for (const [key, flag] of [
    ['stateDir', '--state-dir'],
    ['statusListen', '--status-listen'],
  ] as const) {
    const r = configSchema.shape[key].safeParse(opts[key]);
    if (opts[key] !== undefined && !r.success)
      throw new AgentError('SKP_ERR_USAGE', `${flag} ${r.error.issues[0]?.message ?? 'is invalid'}`, { field: key });
  }
  // Refuse an insecure existing config before doing anything with side effects.
  await readConfigFile(configPath);

  // The same resolution `run` uses, so the engine described to the panel is the one the agent drives.
  const endpoint = await dockerEndpointFor(configPath, opts.dockerSocket, opts.env ?? process.env);
  say(`Docker Engine: ${describeEndpoint(endpoint)}`);
  const engine = createEngineProbe({ socketPath: endpoint.socketPath });
  try {
    if (opts.swarmJoinToken) {
      if (!opts.swarmManager)
        throw new AgentError('SKP_ERR_USAGE', '--swarm-join-token needs --swarm-manager HOST:PORT', { field: 'swarmManager' });
      say(`joining the swarm through ${opts.swarmManager} ...`);
      const nodeId = await joinSwarm(engine.docker, { joinToken: opts.swarmJoinToken, managerAddr: opts.swarmManager });
      say(`joined the swarm as node ${nodeId}`);
    }
    const snapshot = await engine.snapshot().catch((err: Error) => {
      say(`warning: Docker is not reachable (${err.message}); registering without Docker facts`);
      return undefined;
    });
    const req = await buildRegisterRequest({
      controlPlaneUrl: url.toString(),
      ipAddress: opts.ipAddress,
      name: opts.name,
      engine: snapshot,
      logger: opts.logger,
    });
    const client = new ControlPlaneClient({ baseUrl: opts.controlPlaneUrl, token: opts.token, timeoutMs: opts.timeoutMs ?? 10_000 });
    let workerId: string;
    try {
      workerId = await registerWorker(client, req, { token: opts.token });
    } finally {
      await client.close();
    }
    await writeConfigFile(configPath, {
      controlPlaneUrl: opts.controlPlaneUrl,
      token: opts.token.reveal(),
      workerId,
      ...(opts.heartbeatIntervalSec !== undefined ? { heartbeatIntervalSec: opts.heartbeatIntervalSec } : {}),
      ...(opts.ipAddress !== undefined ? { ipAddress: opts.ipAddress } : {}),
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      // Pinned in the config unless it is the default: a later `run` without the same environment
      // (the systemd unit has no DOCKER_HOST) must still drive the engine that was registered.
      ...(endpoint.source !== 'default' ? { dockerSocket: endpoint.socketPath } : {}),
      ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
      ...(opts.statusListen !== undefined ? { statusListen: opts.statusListen } : {}),
    });
    say(
      `registered worker ${workerId} (${req.hostname}, ${req.ipAddress}, ${req.capacity.cpuCores} cores, ${req.capacity.memoryMb} MiB, ${req.capacity.diskGb} GiB)`,
    );
    say(`config written to ${configPath} (mode 0600)`);
    const scope = addressScope(req.ipAddress);
    if (scope !== 'public') {
      say(
        `warning: the reported address ${req.ipAddress} is ${scope === 'loopback' ? 'a loopback address' : `a ${scope} address`}: ` +
          `deployments' public URLs will only work from ${scope === 'loopback' ? 'this host' : 'its network'}. ` +
          'If users reach this host at another address, register again with --ip-address ADDRESS',
      );
    }
    return { workerId, configPath, swarmNodeId: snapshot?.swarmNodeId ?? null };
  } finally {
    await engine.close();
  }
}
