import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { renderUnit, systemdQuote, unitNodeArgs, UNIT_TEMPLATE_PATH } from '../../src/cli/unit-file.js';
import { BIN, capturedOutput, runCli } from '../helpers/cli.js';

const run = promisify(execFile);
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;

const UNIT = 'etc/systemd/system/skypanel-agent.service';
const isRoot = process.getuid?.() === 0;

let cp: RefCp;
let dir: string;
let template: string;
let realBin: string;
const tokens: string[] = [];

beforeAll(async () => {
  cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  dir = await mkdtemp(join(tmpdir(), 'skp-install-'));
  template = await readFile(UNIT_TEMPLATE_PATH, 'utf8');
  realBin = await realpath(BIN);
});

afterAll(async () => {
  await cp.close();
  await rm(dir, { recursive: true, force: true });
  const all = capturedOutput.join('\n');
  for (const t of tokens) expect(all).not.toContain(t);
});

/** What install writes: this node, the template's node flags, the real bin, `run`. */
function expectedExecStart(): string {
  return [process.execPath, ...unitNodeArgs(template), realBin, 'run'].join(' ');
}

async function newRoot(): Promise<string> {
  const root = join(dir, randomUUID());
  await mkdir(root, { mode: 0o755 });
  return root;
}

/** Every path under `root` with its type and permission bits, e.g. "etc/skypanel-agent d0700". */
async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(d: string): Promise<void> {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const st = await lstat(p);
      out[relative(root, p)] = `${st.isDirectory() ? 'd' : st.isFile() ? 'f' : 'l'}${(st.mode & 0o7777).toString(8).padStart(4, '0')}`;
      if (st.isDirectory()) await walk(p);
    }
  }
  await walk(root);
  return out;
}

async function tokenFile(token: string, mode = 0o600): Promise<string> {
  const path = join(dir, `${randomUUID()}.token`);
  await writeFile(path, `${token}\n`, { mode });
  await chmod(path, mode);
  return path;
}

/** systemd-analyze, installing Debian's systemd package when it is missing (root only). */
async function systemdAnalyze(): Promise<string | undefined> {
  const found = await run('sh', ['-c', 'command -v systemd-analyze']).then(
    (r) => r.stdout.trim(),
    () => '',
  );
  if (found) return found;
  if (!isRoot) {
    process.stderr.write(
      '\n[skypanel-agent tests] skipping systemd-analyze checks: not root, and systemd-analyze is not installed (apt-get install systemd)\n\n',
    );
    return undefined;
  }
  // Maintainer scripts would try to start services; there is no init system to do that.
  const policy = '/usr/sbin/policy-rc.d';
  const ours = !existsSync(policy);
  if (ours) await writeFile(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    await run('apt-get', ['update', '-q'], { env, timeout: 300_000 });
    await run('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'systemd'], { env, timeout: 600_000 });
  } finally {
    if (ours) await rm(policy, { force: true });
  }
  return (await run('sh', ['-c', 'command -v systemd-analyze'])).stdout.trim();
}

describe('the systemd unit', () => {
  let analyze: string | undefined;
  beforeAll(async () => {
    analyze = await systemdAnalyze();
  }, 900_000);

  it('as installed passes systemd-analyze verify without a warning; exposure is recorded and stays low', async (ctx) => {
    if (!analyze) return ctx.skip();
    const root = await newRoot();
    const res = await runCli(['install', '--root', root, '--no-start']);
    expect(res.code, res.stderr).toBe(0);
    const unit = join(root, UNIT);
    const verify = await run(analyze, ['verify', unit]).catch((err: { code: number; stdout: string; stderr: string }) => err);
    expect('code' in verify ? verify.code : 0, verify.stderr).toBe(0);
    expect(`${verify.stdout}${verify.stderr}`.trim()).toBe('');

    const sec = await run(analyze, ['security', '--offline=yes', '--no-pager', unit]).catch(
      (err: { stdout: string; stderr: string }) => err,
    );
    const m = /Overall exposure level for skypanel-agent\.service: (\d+\.\d+) (\S+)/.exec(`${sec.stdout}${sec.stderr}`);
    expect(m, sec.stdout).not.toBeNull();
    process.stderr.write(`[skypanel-agent tests] systemd-analyze security --offline=yes: exposure ${m![1]} ${m![2]}\n`);
    expect(Number(m![1])).toBeLessThanOrEqual(2.0);
  });

  it('quotes an ExecStart path with spaces, % and $ the way systemd parses it back', async (ctx) => {
    expect(systemdQuote('/usr/bin/node')).toBe('/usr/bin/node');
    expect(systemdQuote('/opt/my node/bin/node')).toBe('"/opt/my node/bin/node"');
    expect(systemdQuote('/opt/100%/node')).toBe('/opt/100%%/node');
    expect(systemdQuote('/opt/$HOME/node')).toBe('"/opt/$$HOME/node"');
    expect(() => renderUnit(template.replace(/^ExecStart=.*$/m, 'ExecStart=/bin/true'), '/n', '/b')).toThrow(/exactly one/);
    expect(() => renderUnit(`${template}\nExecStart=@NODE@ @AGENT@ run\n`, '/n', '/b')).toThrow(/exactly one/);
    if (!analyze) return ctx.skip();
    const odd = join(dir, 'with space', '100%');
    await mkdir(odd, { recursive: true });
    await symlink(process.execPath, join(odd, 'node'));
    const unit = join(dir, 'skypanel-agent.service');
    await writeFile(unit, renderUnit(template, join(odd, 'node'), realBin));
    const verify = await run(analyze, ['verify', unit]).catch((err: { code: number; stdout: string; stderr: string }) => err);
    expect(`${verify.stdout}${verify.stderr}`.trim()).toBe('');
  });

  it("the agent makes no system call outside the unit's SystemCallFilter (strace of a dev run)", async (ctx) => {
    if (!analyze) return ctx.skip();
    const strace = await run('sh', ['-c', 'command -v strace']).then(
      (r) => r.stdout.trim(),
      () => '',
    );
    if (!strace) {
      process.stderr.write('\n[skypanel-agent tests] skipping the syscall check: strace is not installed\n\n');
      return ctx.skip();
    }
    const expand = async (group: string, seen = new Set<string>()): Promise<Set<string>> => {
      const out = new Set<string>();
      if (seen.has(group)) return out;
      seen.add(group);
      const { stdout } = await run(analyze!, ['syscall-filter', group]);
      for (const raw of stdout.split('\n').slice(1)) {
        const w = raw.trim();
        if (!w || w.startsWith('#')) continue;
        for (const n of w.startsWith('@') ? await expand(w, seen) : [w]) out.add(n);
      }
      return out;
    };
    const allowed = new Set<string>();
    const denied = new Set<string>();
    for (const m of template.matchAll(/^SystemCallFilter=(~?)(.*)$/gm)) {
      for (const item of m[2]!.trim().split(/\s+/)) {
        for (const n of item.startsWith('@') ? await expand(item) : [item]) (m[1] ? denied : allowed).add(n);
      }
    }
    for (const n of denied) allowed.delete(n);
    expect(allowed.has('statfs') && allowed.has('epoll_wait') && !allowed.has('setuid')).toBe(true);

    // A real run of what the unit starts: `run` (registered first, untraced, as install does) against
    // the reference control plane, with heartbeats, Docker and the status API. Not `dev`: it embeds
    // PostgreSQL as WebAssembly, which the unit's flags exclude by design.
    const traceConfig = join(dir, 'strace-config.json');
    const traceToken = cp.mintToken(randomUUID());
    tokens.push(traceToken);
    const traceTokenFile = join(dir, 'strace.token');
    await writeFile(traceTokenFile, `${traceToken}\n`, { mode: 0o600 });
    const reg = await runCli([
      'register',
      '--control-plane',
      cp.url,
      '--token-file',
      traceTokenFile,
      '--config',
      traceConfig,
      '--heartbeat-interval',
      '1',
    ]);
    expect(reg.code, reg.stderr).toBe(0);
    const trace = join(dir, 'strace.out');
    const child = spawn(
      strace,
      ['-f', '-qq', '-o', trace, process.execPath, ...unitNodeArgs(template), BIN, 'run', '--config', traceConfig],
      {
        env: {
          ...process.env,
          SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
          SKYPANEL_AGENT_METRICS_LISTEN: '127.0.0.1:0',
          SKYPANEL_AGENT_STATE_DIR: join(dir, 'strace-state'),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b));
    child.stderr.on('data', (b: Buffer) => (output += b));
    const exited = new Promise((r) => child.on('close', r));
    try {
      const deadline = Date.now() + 30_000;
      while (!/agent started/.test(output) && Date.now() < deadline && child.exitCode === null)
        await new Promise((r) => setTimeout(r, 100));
      expect(output).toMatch(/agent started/);
      await new Promise((r) => setTimeout(r, 4_000));
    } finally {
      // Signal the traced agent itself: strace would only detach on SIGINT and leave it running.
      const kids = (await readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').catch(() => ''))
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
      const signal = (sig: NodeJS.Signals) => {
        for (const pid of kids) {
          try {
            process.kill(pid, sig);
          } catch {
            // already gone
          }
        }
      };
      signal('SIGINT');
      const timer = setTimeout(() => {
        signal('SIGKILL');
        child.kill('SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(timer);
    }
    const traced = await readFile(trace, 'utf8');
    const used = new Set([...traced.matchAll(/^\d+\s+([a-z_0-9]+)\(/gm)].map((m) => m[1]!));
    expect(used.size).toBeGreaterThan(30);
    // V8 probes memory protection keys and falls back when refused (SystemCallErrorNumber=EPERM).
    const tolerated = new Set(['pkey_alloc']);
    expect([...used].filter((n) => !allowed.has(n) && !tolerated.has(n)).sort()).toEqual([]);

    // MemoryDenyWriteExecute=yes: systemd's filter refuses mmap with PROT_WRITE|PROT_EXEC and any
    // mprotect/pkey_mprotect that asks for PROT_EXEC. The loader's read-only executable mappings are fine.
    const memoryCalls = [...traced.matchAll(/^\d+\s+(mmap|mprotect|pkey_mprotect)\((.*)$/gm)];
    expect(memoryCalls.length).toBeGreaterThan(10);
    const refused = memoryCalls
      .filter(([, call, args]) => /PROT_EXEC/.test(args!) && (call !== 'mmap' || /PROT_WRITE/.test(args!)))
      .map(([line]) => line);
    expect(refused).toEqual([]);
  }, 90_000);

  it("runs under the kernel's W^X lock (PR_SET_MDWE) with the unit's node flags, and V8's JIT would not", async (ctx) => {
    // The kernel enforces what MemoryDenyWriteExecute=yes promises: a process that sets PR_SET_MDWE
    // can never map memory writable and executable, or make it executable later (Linux 6.3+).
    const syscallNr = ({ x64: 157, arm64: 167 } as Record<string, number>)[process.arch];
    const lockThenExec = (args: string[]) =>
      new Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }>((resolve) => {
        const perl = `syscall(${syscallNr}, 65, 1, 0, 0, 0) == 0 or die "PR_SET_MDWE: $!\\n"; exec @ARGV or die "exec: $!\\n"`;
        const child = spawn('perl', ['-e', perl, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (b: Buffer) => (output += b));
        child.stderr.on('data', (b: Buffer) => (output += b));
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, output });
        });
      });
    const hot = 'let s = 0; for (let i = 0; i < 3e6; i++) s += i % 7; console.log("sum", s)';
    const probe = syscallNr === undefined ? undefined : await lockThenExec(['--jitless', '-e', '0']);
    if (!probe || /PR_SET_MDWE|exec:|Can't/.test(probe.output)) {
      process.stderr.write(
        `\n[skypanel-agent tests] skipping the W^X check: no PR_SET_MDWE here (${probe?.output.trim() ?? process.arch})\n\n`,
      );
      return ctx.skip();
    }
    // The lock really bites: V8 with its JIT dies at the first compile.
    const jit = await lockThenExec(['-e', hot]);
    expect(jit.code, jit.output).not.toBe(0);
    expect(jit.output).not.toContain('sum');
    // The unit's flags: the same hot loop, and then the agent's own code paths (config, HTTP, Docker, status API).
    const jitless = await lockThenExec([...unitNodeArgs(template), '-e', hot]);
    expect(jitless.output).toContain('sum 8999994');
    expect(jitless.code).toBe(0);
    const agent = await lockThenExec([...unitNodeArgs(template), BIN, 'doctor', '--config', join(dir, 'no-such-config.json')]);
    expect(agent.signal, agent.output).toBeNull();
    expect(agent.output).toMatch(/docker/i);
  }, 120_000);

  it('keeps the settings the agent relies on', () => {
    for (const line of [
      'After=network-online.target docker.service',
      'Wants=network-online.target docker.service',
      'Restart=always',
      'RestartSec=5',
      'KillMode=mixed',
      'TimeoutStopSec=10',
      'User=skypanel-agent',
      'SupplementaryGroups=docker',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ReadWritePaths=/var/lib/skypanel-agent /etc/skypanel-agent',
      'CapabilityBoundingSet=',
      'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
      'SystemCallFilter=@system-service',
      'MemoryMax=256M',
      'UMask=0077',
      'StateDirectory=skypanel-agent',
      'ConfigurationDirectory=skypanel-agent',
      'MemoryDenyWriteExecute=yes',
      // A config error (exit 78, EX_CONFIG) is not retried, a crash loop ends, logs are tagged, reload is SIGHUP.
      'RestartPreventExitStatus=78',
      'StartLimitIntervalSec=600',
      'StartLimitBurst=10',
      'SyslogIdentifier=skypanel-agent',
      'ExecReload=/bin/kill -HUP $MAINPID',
    ]) {
      expect(template.split('\n'), line).toContain(line);
    }
    // MemoryDenyWriteExecute=yes holds only without V8's JIT (see the W^X test above).
    expect(unitNodeArgs(template)).toEqual(expect.arrayContaining(['--jitless']));
  });
});

describe('install', () => {
  it('--dry-run under --root prints every action and creates nothing', async () => {
    const root = await newRoot();
    const res = await runCli(['install', '--root', root, '--dry-run']);
    expect(res.code, res.stderr).toBe(0);
    expect(await readdir(root)).toEqual([]);
    expect(res.stdout).toContain('(dry run: nothing is changed)');
    expect(res.stdout).toContain(`[dry-run] create ${root}/etc/skypanel-agent (mode 0700)`);
    expect(res.stdout).toContain(`[dry-run] create ${root}/var/lib/skypanel-agent (mode 0700)`);
    expect(res.stdout).toContain(`[dry-run] write ${root}/${UNIT} (mode 0644) with ExecStart=${expectedExecStart()}`);
    expect(res.stdout).toMatch(/- skipped: systemctl daemon-reload; systemctl enable --now skypanel-agent\.service: --root/);
  });

  it('--dry-run on the real system changes nothing there', async () => {
    const paths = ['/etc/systemd/system/skypanel-agent.service', '/etc/skypanel-agent', '/var/lib/skypanel-agent'];
    const before = paths.map((p) => existsSync(p));
    const userBefore = await run('getent', ['passwd', 'skypanel-agent']).then(
      () => true,
      () => false,
    );
    const res = await runCli(['install', '--dry-run']);
    expect(res.code, res.stderr).toBe(0);
    expect(paths.map((p) => existsSync(p))).toEqual(before);
    expect(
      await run('getent', ['passwd', 'skypanel-agent']).then(
        () => true,
        () => false,
      ),
    ).toBe(userBefore);
    expect(res.stdout).toContain('[dry-run] write /etc/systemd/system/skypanel-agent.service (mode 0644)');
    if (!userBefore) expect(res.stdout).toContain('[dry-run] create system user skypanel-agent');
    if (!existsSync('/run/systemd/system'))
      expect(res.stdout).toMatch(/skipped: systemctl .*systemd is not running here \(no \/run\/systemd\/system\)/);
  });

  it('--root writes the unit and the two directories, with their modes, and nothing else', async () => {
    const root = await newRoot();
    const res = await runCli(['install', '--root', root]);
    expect(res.code, res.stderr).toBe(0);
    expect(await tree(root)).toEqual({
      etc: 'd0755',
      'etc/skypanel-agent': 'd0700',
      'etc/systemd': 'd0755',
      'etc/systemd/system': 'd0755',
      [UNIT]: 'f0644',
      var: 'd0755',
      'var/lib': 'd0755',
      'var/lib/skypanel-agent': 'd0700',
    });
    const unit = await readFile(join(root, UNIT), 'utf8');
    expect(unit).toBe(template.replace(/^ExecStart=.*$/m, `ExecStart=${expectedExecStart()}`));
    expect(res.stdout).toMatch(/not registered yet/);
  });

  it('registers when given --control-plane and --token-file: config 0600 under the root, row in the panel', async () => {
    const root = await newRoot();
    const token = cp.mintToken(randomUUID());
    tokens.push(token);
    const res = await runCli([
      'install',
      '--root',
      root,
      '--control-plane',
      cp.url,
      '--token-file',
      await tokenFile(token),
      '--name',
      'install-test',
    ]);
    expect(res.code, res.stderr).toBe(0);
    const t = await tree(root);
    expect(t['etc/skypanel-agent/config.json']).toBe('f0600');
    expect(Object.keys(t).filter((p) => p.startsWith('etc/skypanel-agent/'))).toEqual(['etc/skypanel-agent/config.json']);
    const config = JSON.parse(await readFile(join(root, 'etc/skypanel-agent/config.json'), 'utf8')) as Record<string, string>;
    expect(config).toMatchObject({ controlPlaneUrl: cp.url, token, name: 'install-test' });
    expect(cp.workers.get(config.workerId!)).toBeDefined();
    expect(res.stdout).toContain(
      `✓ register with ${cp.url} and write ${root}/etc/skypanel-agent/config.json (mode 0600) (worker ${config.workerId})`,
    );
  });

  it('runs again over an existing install, resetting the directory modes', async () => {
    const root = await newRoot();
    expect((await runCli(['install', '--root', root])).code).toBe(0);
    await chmod(join(root, 'etc/skypanel-agent'), 0o755);
    await writeFile(join(root, UNIT), 'stale');
    const res = await runCli(['install', '--root', root]);
    expect(res.code, res.stderr).toBe(0);
    expect((await tree(root))['etc/skypanel-agent']).toBe('d0700');
    expect(await readFile(join(root, UNIT), 'utf8')).toContain(`ExecStart=${expectedExecStart()}`);
  });

  it('refuses --control-plane without --token-file (exit 64) and a token file others can read (78), changing nothing', async () => {
    const root = await newRoot();
    const half = await runCli(['install', '--root', root, '--control-plane', cp.url]);
    expect(half.code).toBe(64);
    expect(half.stderr).toMatch(/--control-plane and --token-file go together/);
    const open = await runCli([
      'install',
      '--root',
      root,
      '--control-plane',
      cp.url,
      '--token-file',
      await tokenFile('tok-open-install', 0o644),
    ]);
    expect(open.code).toBe(78);
    expect(open.stderr).toMatch(/mode 0644.*chmod 600/);
    expect(await readdir(root)).toEqual([]);
  });

  it('a refused token stops before the unit is written (exit 1)', async () => {
    const root = await newRoot();
    const bad = 'eyJhbGciOiJIUzI1NiJ9.eyJ3b3JrZXJJZCI6IngifQ.bm90LWEtc2lnbmF0dXJl';
    tokens.push(bad);
    const res = await runCli(['install', '--root', root, '--control-plane', cp.url, '--token-file', await tokenFile(bad)]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/refused the worker token \(401/);
    expect(existsSync(join(root, UNIT))).toBe(false);
  });
});

describe('uninstall', () => {
  async function installed(): Promise<string> {
    const root = await newRoot();
    const token = cp.mintToken(randomUUID());
    tokens.push(token);
    const res = await runCli(['install', '--root', root, '--control-plane', cp.url, '--token-file', await tokenFile(token)]);
    expect(res.code, res.stderr).toBe(0);
    await writeFile(join(root, 'var/lib/skypanel-agent/desired.json'), '{}', { mode: 0o600 });
    return root;
  }

  it('--dry-run changes nothing', async () => {
    const root = await installed();
    const before = await tree(root);
    const res = await runCli(['uninstall', '--root', root, '--dry-run', '--purge']);
    expect(res.code, res.stderr).toBe(0);
    expect(await tree(root)).toEqual(before);
    expect(res.stdout).toContain(`[dry-run] remove ${root}/${UNIT}`);
    expect(res.stdout).toContain(`[dry-run] remove ${root}/etc/skypanel-agent (config.json with the worker token)`);
    expect(res.stdout).toContain(`[dry-run] remove ${root}/var/lib/skypanel-agent (--purge)`);
  });

  it('removes the unit and the config directory, keeps the state directory', async () => {
    const root = await installed();
    const res = await runCli(['uninstall', '--root', root]);
    expect(res.code, res.stderr).toBe(0);
    expect(await tree(root)).toEqual({
      etc: 'd0755',
      'etc/systemd': 'd0755',
      'etc/systemd/system': 'd0755',
      var: 'd0755',
      'var/lib': 'd0755',
      'var/lib/skypanel-agent': 'd0700',
      'var/lib/skypanel-agent/desired.json': 'f0600',
    });
    expect(res.stdout).toContain(`kept ${root}/var/lib/skypanel-agent`);
    expect(res.stdout).toMatch(/Swarm services were not touched/);
  });

  it('--purge removes the state directory too, and a second run finds nothing to do', async () => {
    const root = await installed();
    expect((await runCli(['uninstall', '--root', root, '--purge'])).code).toBe(0);
    expect(Object.keys(await tree(root)).filter((p) => p.includes('skypanel-agent'))).toEqual([]);
    const again = await runCli(['uninstall', '--root', root, '--purge']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`no unit at ${root}/${UNIT}`);
  });
});
