import pg from 'pg';
import { AgentError } from '../errors.js';
import type { Logger } from '../agent/logger.js';
import { pgPoolDatabase } from '../panel/db.js';
import type { HealthOptions } from '../panel/health.js';
import { startPanelServer } from '../panel/server.js';
import type { UsagePrices } from '../panel/usage.js';

/**
 * `skypanel-agent panel`: the control-plane half on a SkyPanelV2 database, for operators who route
 * /api/workers/* to it from their reverse proxy. Secrets come from the environment under the names
 * SkyPanelV2 uses (JWT_SECRET, SSH_CRED_SECRET), never from flags, so they stay out of `ps`.
 */

export interface PanelCliOptions {
  databaseUrl: string | undefined;
  listen: string;
  health: Partial<HealthOptions>;
  prices: Partial<UsagePrices>;
  migrate: boolean;
  healthMonitor: boolean;
  env: NodeJS.ProcessEnv;
  logger: Logger;
  say: (line: string) => void;
}

/** `HOST:PORT`, `[v6]:PORT` or `:PORT` (127.0.0.1). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535)
    throw new AgentError('SKP_ERR_USAGE', `--listen must be HOST:PORT (got "${text.slice(0, 100)}")`, { field: 'listen' });
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export async function runPanel(opts: PanelCliOptions): Promise<void> {
  const databaseUrl = opts.databaseUrl ?? opts.env.DATABASE_URL;
  if (!databaseUrl) throw new AgentError('SKP_ERR_USAGE', '--database-url (or DATABASE_URL) is required', { field: 'databaseUrl' });
  const jwtSecret = opts.env.JWT_SECRET;
  if (!jwtSecret)
    throw new AgentError('SKP_ERR_USAGE', 'JWT_SECRET must be set in the environment (the value SkyPanelV2 signs worker tokens with)', {
      field: 'JWT_SECRET',
    });
  const sshCredSecret = opts.env.SSH_CRED_SECRET;
  if (!sshCredSecret || sshCredSecret.length < 16) {
    opts.logger.warn(
      'SSH_CRED_SECRET is unset or shorter than 16 characters: secrets are decrypted with the key SkyPanelV2 derives from JWT_SECRET in that case',
    );
  }
  const { host, port } = parseListen(opts.listen);
  // Every wait on the database is bounded: connecting, each statement, and a transaction left idle.
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: 10,
    connectionTimeoutMillis: 10_000,
    statement_timeout: 15_000,
    query_timeout: 20_000,
    idle_in_transaction_session_timeout: 30_000,
  });
  // An idle client's error (the server restarted) must not crash the process; the pool replaces it.
  pool.on('error', (err) => opts.logger.warn({ err: err.message }, 'database connection lost; the pool reconnects'));
  let server;
  try {
    server = await startPanelServer({
      db: pgPoolDatabase(pool),
      jwtSecret,
      sshCredSecret,
      health: opts.health,
      prices: opts.prices,
      migrate: opts.migrate,
      healthMonitor: opts.healthMonitor,
      logger: opts.logger,
      // One extra connection, outside the pool: it only LISTENs, for the blocking desired-set query.
      listen: () => new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000, keepAlive: true }),
      host,
      port,
    });
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new AgentError('SKP_ERR_CONTROL_PLANE_UNREACHABLE', `panel cannot start: ${(err as Error).message}`, { cause: err });
  }
  opts.say(`panel listening on ${server.url}`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  // A hung close must not keep the process: 10 s, then exit anyway.
  const hard = setTimeout(() => process.exit(1), 10_000);
  hard.unref();
  await server.close();
  await pool.end().catch(() => undefined);
}
