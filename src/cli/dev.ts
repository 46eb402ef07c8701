import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { loadConfig } from '../agent/config.js';
import { ownershipFilter } from '../domain/labels.js';
import type { Logger } from '../agent/logger.js';
import { TimerLoop } from '../util/timer-loop.js';
import { AgentError } from '../errors.js';
import { pgPoolDatabase, type Database } from '../panel/db.js';
import {
  DEFAULT_SEED,
  countBillingCycles,
  readWorkerDeployments,
  seedDeployment,
  seedOrganization,
  toSeedDeployment,
  type SeedDeployment,
} from '../panel/dev-seed.js';
import { ensureSchema, openEmbeddedDatabase } from '../panel/embedded.js';
import { startPanelServer } from '../panel/server.js';
import { signWorkerToken } from '../skypanel/jwt.js';
import type { KnownSecrets } from '../secret.js';
import { Secret } from '../secret.js';
import { createDockerClient } from '../swarm/docker-client.js';
import { listServices } from '../swarm/swarm-reader.js';
import { removeService } from '../swarm/swarm-writer.js';
import { runRegister } from './register.js';
import { startAgent, stopOnSignals } from './run.js';
import { PROCESS_START_CPU } from './process-start.js';

export interface DevOptions {
  port: number;
  heartbeatIntervalSec: number;
  configPath?: string;
  dockerSocket?: string;
  /** A SkyPanelV2 database to use instead of the embedded one. */
  databaseUrl?: string;
  /** JSON file with `{"deployments": [...]}` (or a bare array): rows assigned to the dev worker instead of the hello-world seed. */
  deploymentsFile?: string;
  /** false: write no service rows (the worker only registers and heartbeats). */
  seed: boolean;
  /** The agent's status API address; the default (0.0.0.0:9740) otherwise. */
  statusListen?: string;
  /** Short usage periods so billing rows arrive within a minute. */
  usagePeriodSec?: number;
  logger: Logger;
  /** The logger's secrets: the minted token and the deployments' secrets are added to it. */
  secrets?: KnownSecrets;
  say: (line: string) => void;
}

/** How often `dev` looks at its rows to print what changed (it is a demo, not the agent's path). */
const WATCH_INTERVAL_MS = 1_000;

/**
 * One process, everything a newcomer needs to see the system work: the panel half (this package's
 * `skypanel-agent/panel`) on an embedded PostgreSQL holding SkyPanelV2's tables, a worker token
 * minted as SkyPanelV2 mints them, a registration, rows for one organization, service and
 * deployment, and the running agent. It prints each row change, so a row turning into a running
 * Swarm service and back into a `running` row is visible.
 */
export async function runDev(opts: DevOptions): Promise<void> {
  const seeds = opts.deploymentsFile ? await readDeploymentsFile(opts.deploymentsFile) : opts.seed ? [DEFAULT_SEED] : [];
  const { db, close: closeDb, where } = await openDatabase(opts);
  const jwtSecret = randomBytes(32).toString('hex');
  const panel = await startPanelServer({
    db,
    jwtSecret,
    sshCredSecret: randomBytes(32).toString('hex'),
    host: '127.0.0.1',
    port: opts.port,
    // The health monitor judges silence against the interval dev's agent really uses.
    health: { heartbeatIntervalSec: opts.heartbeatIntervalSec },
    logger: opts.logger.child({ component: 'panel' }),
  }).catch(async (err: unknown) => {
    await closeDb();
    throw err;
  });
  opts.say(`panel listening on ${panel.url} (database: ${where})`);

  const configPath = opts.configPath ?? join(await mkdtemp(join(tmpdir(), 'skypanel-agent-dev-')), 'config.json');
  const token = new Secret(signWorkerToken(jwtSecret, { workerId: randomUUID(), generatedBy: 'skypanel-agent dev' }));
  const reg = await runRegister({
    controlPlaneUrl: panel.url,
    token,
    configPath,
    heartbeatIntervalSec: opts.heartbeatIntervalSec,
    dockerSocket: opts.dockerSocket,
    // dev keeps its state beside its config, never in the host's /var/lib; both go into the config,
    // so `skypanel-agent status --config <it>` finds this agent.
    stateDir: join(dirname(configPath), 'state'),
    statusListen: opts.statusListen,
    logger: opts.logger,
    say: opts.say,
  });

  // The worker row exists from its registration on, so deployments can now be assigned to it.
  const org = await seedOrganization(db);
  for (const s of seeds) {
    const row = await seedDeployment(db, org, reg.workerId, s);
    opts.say(`row: service ${row.slug} (${row.serviceId}) with deployment ${row.deploymentId} assigned to this worker`);
  }

  const usagePeriodSec = opts.usagePeriodSec;
  const { config, dockerEndpoint } = await loadConfig({
    path: configPath,
    flags: {
      usagePeriodSec,
      usageSampleIntervalSec: usagePeriodSec === undefined ? undefined : Math.max(1, Math.min(15, Math.floor(usagePeriodSec / 4))),
    },
  });
  opts.secrets?.add(config.token);
  const agent = await startAgent(config, opts.logger, { secrets: opts.secrets, cpuBaseline: PROCESS_START_CPU, dockerEndpoint });
  opts.say(`agent running as worker ${reg.workerId}; heartbeats every ${config.heartbeatIntervalSec}s. Ctrl-C stops both.`);
  opts.say(`  status: skypanel-agent status --config ${configPath}`);
  const stopWatch = watchRows(db, reg.workerId, org.organizationId, opts);
  stopOnSignals(async () => {
    await stopWatch();
    await agent.stop();
    // The embedded database goes with this process, and with it the rows that gave these services
    // a reason to exist: left running they would be orphans holding host ports (18080) that the
    // next dev run needs. A real database keeps its rows, so its services stay, as in production.
    if (opts.databaseUrl === undefined) await removeOwnedServices(config.dockerSocket, reg.workerId, opts);
    await panel.close();
    await closeDb();
  }, opts.logger);
}

async function removeOwnedServices(socketPath: string, workerId: string, opts: DevOptions): Promise<void> {
  const docker = createDockerClient({ socketPath, timeoutMs: 5_000 });
  try {
    for (const service of await listServices(docker, ownershipFilter(workerId))) {
      await removeService(docker, service.id);
      opts.say(`removed Swarm service ${service.name} (its rows were in the embedded database)`);
    }
  } catch (err) {
    opts.logger.warn({ err: (err as Error).message }, "could not remove the dev worker's services; remove them with docker service rm");
  } finally {
    docker.close();
  }
}

async function openDatabase(opts: DevOptions): Promise<{ db: Database; close: () => Promise<void>; where: string }> {
  if (opts.databaseUrl === undefined) {
    const db = await openEmbeddedDatabase();
    return { db, close: () => db.close(), where: 'embedded PostgreSQL (PGlite, in memory: gone when dev stops)' };
  }
  const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: 5, connectionTimeoutMillis: 10_000 });
  pool.on('error', (err) => opts.logger.warn({ err: err.message }, 'database connection lost; the pool reconnects'));
  try {
    const schema = await ensureSchema(pool);
    if (schema === 'created') opts.say('created the container-platform tables (the database had none)');
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new AgentError('SKP_ERR_USAGE', `--database-url: ${(err as Error).message.split('\n')[0]}`, { field: 'databaseUrl', cause: err });
  }
  const host = new URL(opts.databaseUrl).host;
  return { db: pgPoolDatabase(pool), close: () => pool.end(), where: `PostgreSQL at ${host}` };
}

/** Prints each deployment row whose status or URL changed, and each new billing row. */
function watchRows(db: Database, workerId: string, organizationId: string, opts: DevOptions): () => Promise<void> {
  const seen = new Map<string, string>();
  let billing = 0;
  const look = async (): Promise<void> => {
    for (const row of await readWorkerDeployments(db, workerId)) {
      const view = `${row.status ?? 'null'}${row.public_url ? ` at ${row.public_url}` : ''}`;
      if (seen.get(row.id) === view) continue;
      seen.set(row.id, view);
      opts.say(`row: deployment ${row.id} (${row.slug}) status ${view}`);
    }
    const cycles = await countBillingCycles(db, organizationId);
    if (cycles !== billing) {
      opts.say(`row: container_billing_cycles holds ${cycles} row(s) for the dev organization`);
      billing = cycles;
    }
  };
  const loop = new TimerLoop(
    async () => {
      await look();
      return WATCH_INTERVAL_MS;
    },
    (err) => {
      opts.logger.debug({ err: (err as Error).message }, 'dev row watch failed');
      return WATCH_INTERVAL_MS;
    },
    { unref: true },
  );
  loop.start(WATCH_INTERVAL_MS);
  return () => loop.stop();
}

async function readDeploymentsFile(path: string): Promise<SeedDeployment[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new AgentError('SKP_ERR_USAGE', `--deployments ${path}: ${(err as Error).message.split('\n')[0]}`, { field: 'deployments' });
  }
  const list = Array.isArray(parsed) ? parsed : (parsed as { deployments?: unknown })?.deployments;
  if (!Array.isArray(list))
    throw new AgentError('SKP_ERR_USAGE', `--deployments ${path}: expected {"deployments": [...]} or an array`, { field: 'deployments' });
  return list.map((entry, i) => {
    try {
      return toSeedDeployment(entry, i);
    } catch (err) {
      throw err instanceof AgentError
        ? new AgentError('SKP_ERR_USAGE', `--deployments ${path}: ${err.message}`, { field: 'deployments' })
        : err;
    }
  });
}
