import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * `npm run package` builds a .deb that installs and runs with no Node on the host: built here,
 * installed with dpkg -i on this very machine, run, removed and purged. Root and dpkg only; under
 * CI=true (root, Debian) a missing prerequisite fails instead of skipping.
 */
const ROOT = new URL('../..', import.meta.url).pathname;
const PKG = 'skypanel-agent';
const LIB = '/usr/lib/skypanel-agent';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: ROOT, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

/**
 * dpkg, waiting while another process holds its lock (another test file may be installing a
 * Debian package with apt-get at the same moment), for at most two minutes.
 */
async function dpkg(args: string[]): Promise<Run> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await run('dpkg', args, { timeoutMs: 120_000 });
    if (r.code === 0 || !/lock/i.test(r.stderr) || Date.now() > deadline) return r;
    await new Promise((resolve) => setTimeout(resolve, 2_000));
  }
}

/** The package as a host without Node would run it: no PATH to find any node through. */
const bare = (args: string[]) => run('/usr/bin/skypanel-agent', args, { env: { PATH: '/nonexistent', HOME: '/root' }, timeoutMs: 60_000 });

async function why(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not root (dpkg -i needs it)';
  if ((await run('sh', ['-c', 'command -v dpkg-deb && command -v dpkg'])).code !== 0) return 'no dpkg-deb/dpkg here';
  if ((await run('dpkg', ['-s', PKG])).code === 0) return `${PKG} is installed on this host already; not touching it`;
  return undefined;
}

let installed = false;

afterAll(async () => {
  if (installed) await dpkg(['--purge', PKG]);
});

describe('the Debian package', () => {
  it('builds with dpkg-deb, installs, runs without any Node on PATH, removes and purges cleanly', async (ctx) => {
    const reason = await why();
    if (reason) {
      if (process.env.CI === 'true') throw new Error(`the .deb test cannot run: ${reason}`);
      process.stderr.write(`\n[skypanel-agent tests] skipping the .deb test: ${reason}\n\n`);
      return ctx.skip();
    }
    const out = await mkdtemp(join(tmpdir(), 'skp-deb-'));
    const version = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const built = await run('bash', ['scripts/package.sh'], { env: { ...process.env, OUT_DIR: out, NO_BUILD: '1' }, timeoutMs: 300_000 });
    expect(built.code, built.stdout + built.stderr).toBe(0);
    const deb = join(out, `${PKG}_${version}_amd64.deb`);
    expect(existsSync(deb), built.stdout).toBe(true);

    const contents = (await run('dpkg-deb', ['--contents', deb])).stdout;
    for (const path of [
      `.${LIB}/node/bin/node`,
      `.${LIB}/bin/skypanel-agent`,
      `.${LIB}/dist/cli/main.js`,
      '/lib/systemd/system/skypanel-agent.service',
      './usr/bin/skypanel-agent',
    ]) {
      expect(contents, path).toContain(path.startsWith('/') ? `.${path}` : path);
    }
    // Production dependencies only.
    expect(contents).toContain(`.${LIB}/node_modules/pino/`);
    expect(contents).not.toMatch(/node_modules\/(vitest|typescript|dockerode)\//);
    expect(contents, 'the reference control plane is a test harness').not.toContain('/dist/refcp/');
    const control = (await run('dpkg-deb', ['--field', deb])).stdout;
    expect(control).toMatch(new RegExp(`^Package: ${PKG}$`, 'm'));
    expect(control).toMatch(new RegExp(`^Version: ${version.replace(/\./g, '\\.')}$`, 'm'));
    expect(control).toMatch(/^Architecture: amd64$/m);

    const inst = await dpkg(['-i', deb]);
    installed = true;
    expect(inst.code, inst.stdout + inst.stderr).toBe(0);

    const v = await bare(['--version']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout.trim()).toBe(version);
    // The private runtime is Node 24, and the agent starts under the unit's own node flags.
    expect((await run(`${LIB}/node/bin/node`, ['--version'])).stdout).toMatch(/^v24\./);
    const unit = await readFile('/lib/systemd/system/skypanel-agent.service', 'utf8');
    const exec = /^ExecStart=(\S+) (.*) (\S+) run$/m.exec(unit);
    expect(exec?.[1]).toBe(`${LIB}/node/bin/node`);
    expect(exec?.[3]).toBe(`${LIB}/bin/skypanel-agent`);
    const flagged = await run(exec![1]!, [...exec![2]!.split(' '), exec![3]!, '--version'], { env: { PATH: '/nonexistent' } });
    expect(flagged.stdout.trim(), flagged.stderr).toBe(version);

    const doctor = await bare(['doctor', '--json']);
    const report = JSON.parse(doctor.stdout) as { ok: boolean; checks: { id: string; status: string }[] };
    // Not registered: the config check fails (exit 1) with how to register; every check still ran.
    expect(doctor.code).toBe(1);
    expect(report.checks.find((c) => c.id === 'config')).toMatchObject({ status: 'fail' });
    expect(report.checks).toHaveLength(8);

    // The maintainer scripts made the user and the two 0700 directories it owns.
    const user = await run('id', ['-u', PKG]);
    expect(user.code).toBe(0);
    for (const dir of ['/etc/skypanel-agent', '/var/lib/skypanel-agent']) {
      const st = await stat(dir);
      expect(st.mode & 0o777, dir).toBe(0o700);
      expect(st.uid, dir).toBe(Number(user.stdout.trim()));
    }

    // remove keeps config and state; purge deletes them and the user.
    expect((await dpkg(['-r', PKG])).code).toBe(0);
    expect(existsSync('/usr/bin/skypanel-agent')).toBe(false);
    expect(existsSync(LIB)).toBe(false);
    expect(existsSync('/etc/skypanel-agent')).toBe(true);
    const purge = await dpkg(['--purge', PKG]);
    expect(purge.code, purge.stderr).toBe(0);
    installed = false;
    expect(existsSync('/etc/skypanel-agent')).toBe(false);
    expect(existsSync('/var/lib/skypanel-agent')).toBe(false);
    expect((await run('id', ['-u', PKG])).code).not.toBe(0);
    expect((await run('dpkg', ['-s', PKG])).code).not.toBe(0);
  }, 420_000);
});
