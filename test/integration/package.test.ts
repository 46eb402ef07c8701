import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, realpath, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/*
 * `npm pack` must give a tarball that installs on a clean prefix with nothing but Node.js and npm,
 * and runs. The pack happens in a copy of the sources, so its prepack build never rewrites the
 * dist/ that other test files are running at the same moment.
 */

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { name: string; version: string; files: string[] };
const COMMANDS = ['register', 'run', 'status', 'dev', 'panel', 'install', 'uninstall', 'doctor', 'drain', 'deregister'];

let work: string;
let tgz: string;
let entries: string[];
let prefix: string;
let installedBin: string;
const env: NodeJS.ProcessEnv = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
for (const k of Object.keys(env)) if (k.startsWith('SKYPANEL_AGENT_')) delete env[k];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'skp-pack-'));
  const src = join(work, 'src-copy');
  await mkdir(src);
  // Build inputs and everything package.json `files` names, but no dist/: prepack must build it.
  const inputs = new Set([
    'package.json',
    'package-lock.json',
    'tsconfig.json',
    'tsconfig.build.json',
    'src',
    ...pkg.files.map((f) => f.replace(/\/$/, '')),
  ]);
  inputs.delete('dist');
  for (const name of inputs)
    await cp(join(REPO, name), join(src, name), { recursive: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  await symlink(join(REPO, 'node_modules'), join(src, 'node_modules'));
  const out = join(work, 'out');
  await mkdir(out);
  await run('npm', ['pack', '--pack-destination', out, '--loglevel=error'], { cwd: src, env, timeout: 120_000, maxBuffer: 16 << 20 });
  const [file] = (await readdir(out)).filter((f) => f.endsWith('.tgz'));
  tgz = join(out, file!);
  entries = (await run('tar', ['-tzf', tgz])).stdout
    .split('\n')
    .filter(Boolean)
    .map((e) => e.replace(/^package\//, ''));

  // A clean prefix, and a PATH with nothing but node (the bin's shebang is /usr/bin/env node).
  prefix = join(work, 'prefix');
  await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tgz], {
    env,
    timeout: 150_000,
    maxBuffer: 16 << 20,
  });
  installedBin = join(prefix, 'bin', 'skypanel-agent');
}, 180_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const nodeOnlyPath = () => `${dirname(process.execPath)}:/usr/bin:/bin`;
function agent(args: string[]) {
  return run(installedBin, args, { env: { ...env, PATH: nodeOnlyPath() }, timeout: 20_000 });
}

describe('npm pack', () => {
  it('packs the built agent, the unit, docs and README; no sources, tests or maps (type declarations for skypanel-agent/panel only in dist)', () => {
    expect(tgz).toMatch(new RegExp(`${pkg.name}-${pkg.version.replace(/\./g, '\\.')}\\.tgz$`));
    for (const must of [
      'package.json',
      'README.md',
      'bin/skypanel-agent',
      'dist/cli/main.js',
      'dist/cli/install.js',
      'dist/cli/doctor.js',
      'dist/cli/drain.js',
      'systemd/skypanel-agent.service',
      'docs/PROTOCOL.md',
    ]) {
      expect(entries, must).toContain(must);
    }
    expect(
      entries.filter(
        (e) => /^(src|test)\//.test(e) || (/\.(map|ts)$/.test(e) && !/^dist\/.+\.d\.ts$/.test(e)) || e.includes('node_modules'),
      ),
    ).toEqual([]);
    expect(entries).toContain('dist/panel/index.d.ts');
    expect(
      entries.every((e) => /^(bin|dist|systemd|examples|docs)\//.test(e) || ['package.json', 'README.md', 'LICENSE'].includes(e)),
      entries.join('\n'),
    ).toBe(true);
  });

  it('installs globally on a clean prefix, and --version and --help run there', async () => {
    expect((await agent(['--version'])).stdout.trim()).toBe(pkg.version);
    const help = (await agent(['--help'])).stdout;
    for (const c of COMMANDS) expect(help).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
    expect(help).toContain('Examples:');
  });

  it('every command has --help with examples, and --version', async () => {
    for (const c of COMMANDS) {
      const help = (await agent([c, '--help'])).stdout;
      expect(help, c).toContain(`Usage: skypanel-agent ${c}`);
      expect(help, c).toMatch(/Examples:\n {2}\$ /);
      expect((await agent([c, '--version'])).stdout.trim(), c).toBe(pkg.version);
    }
  });

  it('the installed agent finds its unit template and points ExecStart at its own bin', async () => {
    const root = join(work, 'root');
    await mkdir(root);
    const { stdout } = await agent(['install', '--root', root, '--dry-run']);
    const bin = await realpath(join(prefix, 'lib', 'node_modules', pkg.name, 'bin', 'skypanel-agent'));
    expect(stdout).toContain(`with ExecStart=${process.execPath} --jitless --optimize-for-size ${bin} run`);
  });

  it('skypanel-agent/panel resolves from the installed package, with its driver installed', async () => {
    // What SkyPanelV2's api/app.ts would do after `npm install skypanel-agent`.
    const { stdout } = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "const m = await import('skypanel-agent/panel'); console.log([typeof m.createPanelMiddleware, typeof m.pgPoolDatabase, typeof m.startPanelServer].join())",
      ],
      { cwd: join(prefix, 'lib'), env },
    );
    expect(stdout.trim()).toBe('function,function,function');
    // The standalone server loads the pg driver installed with the package (refused DB: exit 1, not a missing module).
    const panel = await run(installedBin, ['panel', '--database-url', 'postgres://u@127.0.0.1:1/x'], {
      env: { ...env, PATH: nodeOnlyPath(), JWT_SECRET: 'x' },
      timeout: 20_000,
    }).catch((err: { code?: number; stderr?: string }) => err);
    expect(panel).toMatchObject({ code: 1 });
    expect((panel as { stderr: string }).stderr).toContain('panel cannot start');
  });
});
