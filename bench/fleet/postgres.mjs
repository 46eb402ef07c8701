// A throwaway PostgreSQL cluster for the fleet bench, as test/helpers/postgres.ts makes one for the
// tests: the distribution's binaries, a temp dir, a random 127.0.0.1 port, fsync off, as `nobody`
// when run as root (initdb refuses root). Bigger max_connections: the panel's pool, its LISTEN
// connection and the bench's own probes.
import { spawn } from 'node:child_process';
import { chown, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const NOBODY = 65534;

async function binDir() {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const base = '/usr/lib/postgresql';
  const versions = (await readdir(base).catch(() => [])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0)
    throw new Error('PostgreSQL binaries not found under /usr/lib/postgresql: apt-get install postgresql (or set PG_BIN)');
  return join(base, versions[0], 'bin');
}

function run(cmd, args, asNobody, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(asNobody ? { uid: NOBODY, gid: NOBODY } : {}),
      env: { ...process.env, LC_ALL: 'C' },
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out.slice(-2000)}`));
    });
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts a cluster with database `skypanel`; returns { url, postmasterPid, stop() }. */
export async function startPostgres() {
  const bin = await binDir();
  const asNobody = process.getuid?.() === 0;
  const dir = await mkdtemp(join(tmpdir(), 'skypanel-fleet-pg-'));
  if (asNobody) await chown(dir, NOBODY, NOBODY);
  const data = join(dir, 'data');
  await run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], asNobody);
  const port = await freePort();
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
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=128MB`,
      'start',
    ],
    asNobody,
  );
  const stop = async () => {
    await run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'], asNobody).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query('CREATE DATABASE skypanel');
    await admin.end();
    const postmasterPid = Number((await readFile(join(data, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    return { url: `postgres://postgres@127.0.0.1:${port}/skypanel`, postmasterPid, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
