import { spawn } from 'node:child_process';
import { chown, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pgPoolDatabase, type Database } from '../../src/panel/db.js';
import { SKYPANEL_BASE_SQL } from '../../src/panel/schema/base.js';
import { CONTAINER_PLATFORM_SQL } from '../../src/panel/schema/container-platform.js';
import { applyPanelMigration } from '../../src/panel/schema/panel-migration.js';

/**
 * A throwaway PostgreSQL cluster from the distribution's binaries (Debian: /usr/lib/postgresql/N/bin;
 * scripts/test.sh installs the package when it is missing), on a random 127.0.0.1 port in a temp
 * dir, with fsync off. initdb refuses to run as root, so as root the cluster runs as `nobody`.
 * Each test file starts one (about two seconds) and stops it in afterAll.
 */

const NOBODY = 65534;

async function findBinDir(): Promise<string> {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const base = '/usr/lib/postgresql';
  const versions = (await readdir(base).catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0)
    throw new Error('PostgreSQL binaries not found under /usr/lib/postgresql (apt-get install postgresql, or set PG_BIN)');
  return join(base, versions[0]!, 'bin');
}

function run(cmd: string, args: string[], asNobody: boolean, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(asNobody ? { uid: NOBODY, gid: NOBODY } : {}),
      env: { ...process.env, LC_ALL: 'C' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out.slice(-2000)}`));
    });
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const PREFIX = 'skypanel-pg-';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Clusters whose test process died without its afterAll (a killed run) are stopped and removed;
 * those of live processes, other worktrees' runs included, are left alone.
 */
async function reapOrphans(bin: string, asNobody: boolean): Promise<void> {
  for (const name of await readdir(tmpdir()).catch(() => [] as string[])) {
    if (!name.startsWith(PREFIX)) continue;
    const dir = join(tmpdir(), name);
    const owner = Number(await readFile(join(dir, 'owner.pid'), 'utf8').catch(() => 'NaN'));
    if (!Number.isInteger(owner) || alive(owner)) continue;
    await run(join(bin, 'pg_ctl'), ['-D', join(dir, 'data'), '-m', 'immediate', '-w', 'stop'], asNobody).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

export interface TestPostgres {
  /** postgres://postgres@127.0.0.1:PORT/skypanel, trust auth. */
  url: string;
  pool: pg.Pool;
  db: Database;
  stop(): Promise<void>;
}

/** Starts a cluster, creates database `skypanel` with SkyPanelV2's tables and the panel migration. */
export async function startPostgres(): Promise<TestPostgres> {
  const bin = await findBinDir();
  const asNobody = process.getuid?.() === 0;
  await reapOrphans(bin, asNobody);
  const dir = await mkdtemp(join(tmpdir(), PREFIX));
  await writeFile(join(dir, 'owner.pid'), String(process.pid));
  if (asNobody) await chown(dir, NOBODY, NOBODY);
  const data = join(dir, 'data');
  await run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], asNobody);
  let port = 0;
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await run(
        join(bin, 'pg_ctl'),
        [
          '-D',
          data,
          '-w',
          '-t',
          '30',
          '-l',
          join(dir, 'log'),
          '-o',
          `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50`,
          'start',
        ],
        asNobody,
      );
      break;
    } catch (err) {
      if (attempt >= 2) throw err; // the port was taken between probe and start: try another
    }
  }
  const stopCluster = async (): Promise<void> => {
    await run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'], asNobody).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query('CREATE DATABASE skypanel');
    await admin.end();
    const url = `postgres://postgres@127.0.0.1:${port}/skypanel`;
    const pool = new pg.Pool({ connectionString: url, max: 5 });
    // An idle client whose server went away (the cluster stopped first) must not crash the test process.
    pool.on('error', () => undefined);
    await pool.query(SKYPANEL_BASE_SQL);
    await pool.query(CONTAINER_PLATFORM_SQL);
    const db = pgPoolDatabase(pool);
    await applyPanelMigration(db);
    return {
      url,
      pool,
      db,
      async stop() {
        await pool.end().catch(() => undefined);
        await stopCluster();
      },
    };
  } catch (err) {
    await stopCluster();
    throw err;
  }
}
