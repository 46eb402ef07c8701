import { chmod, chown, lstat, mkdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentError } from '../errors.js';
import { AGENT_VERSION } from '../version.js';
import { DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR } from '../agent/config-schema.js';
import { writeFileAtomic } from '../agent/state/atomic-file.js';
import type { Logger } from '../agent/logger.js';
import { readToken } from './token-input.js';
import { runRegister } from './register.js';
import {
  SERVICE_USER,
  UNIT_DIR,
  UNIT_NAME,
  describeFailure,
  groupExists,
  lookupUser,
  runCommand,
  systemdRunning,
  type PasswdEntry,
} from './system.js';

export const CONFIG_DIR = dirname(DEFAULT_CONFIG_PATH);
export const STATE_DIR = DEFAULT_STATE_DIR;
export const UNIT_PATH = join(UNIT_DIR, UNIT_NAME);
/** The unit template ships in the package beside dist/ (package.json `files`). */
export const UNIT_TEMPLATE_PATH = fileURLToPath(new URL('../../systemd/skypanel-agent.service', import.meta.url));
const PACKAGE_BIN = fileURLToPath(new URL('../../bin/skypanel-agent', import.meta.url));

/** ProtectHome=yes hides these from the service: node and the agent must not live there. */
const HIDDEN_FROM_SERVICE = ['/root', '/home', '/run/user'];

type Say = (line: string) => void;

/** A failed step; already printed, so the command only has to exit 1. */
class StepFailed extends Error {}

/**
 * Runs or, with --dry-run, only prints each action, in order. Every line names exactly what is
 * (or would be) changed, so a dry run is a faithful preview of a real one.
 */
class Steps {
  constructor(
    private readonly dryRun: boolean,
    private readonly say: Say,
  ) {}

  async run(what: string, fn: () => Promise<string | void>): Promise<void> {
    if (this.dryRun) {
      this.say(`[dry-run] ${what}`);
      return;
    }
    let note: string | void;
    try {
      note = await fn();
    } catch (err) {
      if (err instanceof AgentError) throw err;
      this.say(`✗ ${what}: ${(err as Error).message}`);
      throw new StepFailed((err as Error).message);
    }
    this.say(`✓ ${what}${note ? ` (${note})` : ''}`);
  }

  skip(what: string, why: string): void {
    this.say(`- skipped: ${what}: ${why}`);
  }
}

/** One ExecStart word as systemd.syntax(7) reads it: specifiers and variables escaped, quoted if needed. */
export function systemdQuote(word: string): string {
  if (/[\x00-\x1f\x7f]/.test(word)) {
    throw new AgentError('SKP_ERR_USAGE', `path ${JSON.stringify(word)} contains control characters and cannot go into a unit file`);
  }
  const escaped = word.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(escaped)) return escaped;
  return `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/**
 * The unit template's one ExecStart line: `@NODE@`, the node flags the service runs with, `@AGENT@`,
 * then the agent's arguments. The flags live in the template (not in code) so the unit shows them
 * and the bench runs the agent with exactly them.
 */
const EXEC_START = /^ExecStart=@NODE@((?: -\S+)*) @AGENT@((?: \S+)*)$/gm;

function templateExecStart(template: string): { nodeArgs: string[]; agentArgs: string[] } {
  const found = [...template.matchAll(EXEC_START)];
  if (found.length !== 1)
    throw new Error(`unit template must have exactly one ExecStart=@NODE@ [node flags] @AGENT@ [args] line (found ${found.length})`);
  const words = (s: string | undefined) => (s ?? '').split(' ').filter(Boolean);
  return { nodeArgs: words(found[0]![1]), agentArgs: words(found[0]![2]) };
}

/** The node flags the shipped unit starts the agent with (e.g. `--jitless`). */
export function unitNodeArgs(template: string): string[] {
  return templateExecStart(template).nodeArgs;
}

/** The ExecStart command line for this node and this installed agent. */
export function execLine(template: string, execPath: string, binPath: string): string {
  const { nodeArgs, agentArgs } = templateExecStart(template);
  return [systemdQuote(execPath), ...nodeArgs, systemdQuote(binPath), ...agentArgs].join(' ');
}

export function renderUnit(template: string, execPath: string, binPath: string): string {
  // Only the ExecStart line is templated; comments may mention the placeholders.
  const line = execLine(template, execPath, binPath);
  return template.replace(EXEC_START, () => `ExecStart=${line}`);
}

/** The real path of the running bin script; the package's own bin when argv[1] is something else. */
export async function resolveBinPath(argv1: string | undefined = process.argv[1]): Promise<string> {
  if (argv1) {
    try {
      const p = await realpath(argv1);
      if (p.endsWith(`${sep}skypanel-agent`) && (await stat(p)).isFile()) return p;
    } catch {
      // fall through to the package's bin
    }
  }
  return realpath(PACKAGE_BIN);
}

/**
 * Why the service user could not run `path`, if it could not: hidden by ProtectHome=, or a
 * directory on the way that others cannot search, or the file itself not readable by others.
 */
export async function unreachableForService(path: string): Promise<string | undefined> {
  const hidden = HIDDEN_FROM_SERVICE.find((h) => path === h || path.startsWith(`${h}/`));
  if (hidden) return `${path} is under ${hidden}, which the service cannot see (ProtectHome=yes)`;
  const parts = path.split('/').filter(Boolean);
  for (let i = 0; i < parts.length - 1; i++) {
    const dir = `/${parts.slice(0, i + 1).join('/')}`;
    const st = await stat(dir);
    if ((st.mode & 0o001) === 0)
      return `directory ${dir} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}) cannot be searched by the service user`;
  }
  const st = await stat(path);
  if ((st.mode & 0o004) === 0) return `${path} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}) cannot be read by the service user`;
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Create a directory (parents 0755), then force its mode and owner even when it already existed. */
async function ensureDir(path: string, mode: number, owner: PasswdEntry | undefined): Promise<string | void> {
  let existed = false;
  try {
    const st = await lstat(path);
    if (!st.isDirectory()) throw new Error(`${path} exists and is not a directory`);
    existed = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await mkdir(path, { mode });
  }
  await chmod(path, mode);
  if (owner) await chown(path, owner.uid, owner.gid);
  return existed ? 'existed; mode and owner set' : undefined;
}

async function systemctl(args: string[]): Promise<void> {
  const r = await runCommand('systemctl', args, 90_000);
  if (r.code !== 0) throw new Error(describeFailure('systemctl', args, r));
}

/** Refuse anything but the agent's own directories: a bad --root must never widen an rm -r. */
function assertOwnPath(path: string): void {
  if (!path.startsWith('/') || !/\/skypanel-agent(\.service)?$/.test(path)) throw new Error(`refusing to remove ${path}`);
}

function requireRootUser(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new AgentError(
      'SKP_ERR_USAGE',
      `${what} changes ${UNIT_DIR}, ${CONFIG_DIR} and the system's users: run it as root (or preview it with --dry-run, or use --root DIR)`,
    );
  }
}

export interface InstallOptions {
  /** Prefix every path with this directory and leave the running system (systemd, users) alone. */
  root?: string;
  dryRun: boolean;
  /** false with --no-start: enable, but do not start now. */
  start: boolean;
  controlPlaneUrl?: string;
  tokenFile?: string;
  name?: string;
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
  /** Absolute node binary for ExecStart; default process.execPath. */
  execPath?: string;
  /** The agent's bin script for ExecStart; default the real path of the running one. */
  binPath?: string;
  logger: Logger;
  say: Say;
}

/** `skypanel-agent install`; returns the exit code (AgentErrors propagate to the CLI's handler). */
export async function runInstall(opts: InstallOptions): Promise<number> {
  const { say, dryRun } = opts;
  const root = opts.root !== undefined ? resolve(opts.root) : undefined;
  const at = (p: string) => (root !== undefined ? join(root, p) : p);
  const realSystem = root === undefined;
  if ((opts.controlPlaneUrl === undefined) !== (opts.tokenFile === undefined)) {
    throw new AgentError('SKP_ERR_USAGE', '--control-plane and --token-file go together: both to register now, neither to register later');
  }
  if (realSystem && !dryRun) requireRootUser('install');

  const execPath = resolve(opts.execPath ?? process.execPath);
  const binPath = opts.binPath ?? (await resolveBinPath());
  for (const p of [execPath, binPath]) {
    const why = await unreachableForService(p);
    if (why === undefined) continue;
    if (realSystem) {
      throw new AgentError(
        'SKP_ERR_USAGE',
        `the service runs as ${SERVICE_USER} and cannot start ${p}: ${why}. Install Node.js and the agent system-wide (npm install -g as root, default prefix)`,
      );
    }
    say(`warning: ${why}; a real install would refuse this`);
  }
  const template = await readFile(UNIT_TEMPLATE_PATH, 'utf8');
  const unitText = renderUnit(template, execPath, binPath);
  // Read and check the token before changing anything, so a bad token file changes nothing.
  const token = opts.tokenFile !== undefined ? await readToken({ tokenFile: opts.tokenFile, stdin: opts.stdin }) : undefined;

  say(
    `installing skypanel-agent ${AGENT_VERSION}${root !== undefined ? ` under ${root}` : ''}${dryRun ? ' (dry run: nothing is changed)' : ''}`,
  );
  const steps = new Steps(dryRun, say);
  try {
    // 1. The service user: the docker group is added only while the service runs (SupplementaryGroups=).
    let owner: PasswdEntry | undefined;
    if (realSystem) {
      owner = await lookupUser(SERVICE_USER);
      if (owner) {
        say(`system user ${SERVICE_USER} exists (uid ${owner.uid})`);
      } else {
        const args = [
          '--system',
          '--user-group',
          '--no-create-home',
          '--home-dir',
          STATE_DIR,
          '--shell',
          '/usr/sbin/nologin',
          '--comment',
          'SkyPanelV2 agent',
          SERVICE_USER,
        ];
        await steps.run(`create system user ${SERVICE_USER} (useradd --system; no login shell, no home)`, async () => {
          const r = await runCommand('useradd', args, 30_000);
          if (r.code !== 0) throw new Error(describeFailure('useradd', args, r));
          owner = await lookupUser(SERVICE_USER);
          if (!owner) throw new Error(`useradd succeeded but ${SERVICE_USER} cannot be looked up`);
          return `uid ${owner.uid}`;
        });
      }
      if (!(await groupExists('docker')))
        say('warning: group docker does not exist yet: install Docker before starting the service (SupplementaryGroups=docker)');
    } else {
      steps.skip(
        `create system user ${SERVICE_USER}`,
        "--root: the system's users are left alone and directories stay owned by the caller",
      );
    }
    const ownerNote = realSystem ? `, owner ${SERVICE_USER}` : '';

    // 2. Directories: the config holds the token, the state dir the deployment state.
    for (const dir of [CONFIG_DIR, STATE_DIR]) {
      await steps.run(`create ${at(dir)} (mode 0700${ownerNote})`, () => ensureDir(at(dir), 0o700, owner));
    }

    // 3. Registration, when asked: the same code path as `skypanel-agent register`.
    const configPath = at(DEFAULT_CONFIG_PATH);
    if (token !== undefined) {
      await steps.run(`register with ${opts.controlPlaneUrl} and write ${configPath} (mode 0600${ownerNote})`, async () => {
        const r = await runRegister({
          controlPlaneUrl: opts.controlPlaneUrl!,
          token,
          configPath,
          name: opts.name,
          logger: opts.logger,
          say: (line) => say(`  ${line}`),
        });
        return `worker ${r.workerId}`;
      });
    }
    const configReady = (await exists(configPath)) || (dryRun && token !== undefined);
    if (configReady && realSystem) {
      // `register` run as root writes a root-owned file the service user could not read.
      await steps.run(`give ${configPath} to ${SERVICE_USER} (mode 0600)`, async () => {
        await chmod(configPath, 0o600);
        if (owner) await chown(configPath, owner.uid, owner.gid);
      });
    }

    // 4. The unit, with ExecStart pointing at this node and this installed agent.
    const unitPath = at(UNIT_PATH);
    await steps.run(`write ${unitPath} (mode 0644) with ExecStart=${execLine(template, execPath, binPath)}`, async () => {
      await mkdir(dirname(unitPath), { recursive: true, mode: 0o755 });
      await writeFileAtomic(unitPath, unitText, 0o644);
    });

    // 5. systemd, when it is the running service manager of this very system.
    const why = !realSystem
      ? '--root: not the running system'
      : !systemdRunning()
        ? 'systemd is not running here (no /run/systemd/system)'
        : undefined;
    if (why !== undefined) {
      steps.skip(`systemctl daemon-reload; systemctl enable${opts.start ? ' --now' : ''} ${UNIT_NAME}`, why);
      if (realSystem) say(`once systemd runs: systemctl daemon-reload && systemctl enable --now ${UNIT_NAME}`);
    } else {
      await steps.run('systemctl daemon-reload', () => systemctl(['daemon-reload']));
      const startNow = opts.start && configReady;
      await steps.run(`systemctl enable${startNow ? ' --now' : ''} ${UNIT_NAME}`, () =>
        systemctl(['enable', ...(startNow ? ['--now'] : []), UNIT_NAME]),
      );
      if (!opts.start) say(`not started (--no-start): systemctl start ${UNIT_NAME}`);
    }
    if (!configReady) {
      say(
        `not registered yet (no ${configPath}): skypanel-agent register --control-plane URL --token-file FILE${realSystem ? `, then chown ${SERVICE_USER}: ${DEFAULT_CONFIG_PATH} && systemctl restart ${UNIT_NAME}` : ''}`,
      );
    }
    if (!dryRun)
      say(`installed${realSystem ? `: check it with skypanel-agent doctor; logs: journalctl -u ${UNIT_NAME}` : ` under ${root}`}`);
    return 0;
  } catch (err) {
    if (err instanceof StepFailed) return 1;
    throw err;
  }
}

export interface UninstallOptions {
  root?: string;
  dryRun: boolean;
  /** Also remove the state directory and the system user. */
  purge: boolean;
  say: Say;
}

/** `skypanel-agent uninstall`: stop, remove the unit and the config (token); keep state unless purging. */
export async function runUninstall(opts: UninstallOptions): Promise<number> {
  const { say, dryRun } = opts;
  const root = opts.root !== undefined ? resolve(opts.root) : undefined;
  const at = (p: string) => (root !== undefined ? join(root, p) : p);
  const realSystem = root === undefined;
  if (realSystem && !dryRun) requireRootUser('uninstall');
  say(`uninstalling skypanel-agent${root !== undefined ? ` under ${root}` : ''}${dryRun ? ' (dry run: nothing is changed)' : ''}`);
  const steps = new Steps(dryRun, say);
  const unitPath = at(UNIT_PATH);
  const withSystemd = realSystem && systemdRunning();
  try {
    if (withSystemd) {
      await steps.run(`systemctl disable --now ${UNIT_NAME}`, async () => {
        const r = await runCommand('systemctl', ['disable', '--now', UNIT_NAME], 90_000);
        // A unit that was never loaded is already as stopped and disabled as it gets.
        if (r.code !== 0 && !/not (be )?(found|loaded)|does not exist/i.test(r.stderr))
          throw new Error(describeFailure('systemctl', ['disable', '--now', UNIT_NAME], r));
        return r.code === 0 ? undefined : 'was not loaded';
      });
    } else {
      steps.skip(
        `systemctl disable --now ${UNIT_NAME}`,
        !realSystem ? '--root: not the running system' : 'systemd is not running here (no /run/systemd/system)',
      );
    }
    if (await exists(unitPath)) {
      await steps.run(`remove ${unitPath}`, async () => {
        assertOwnPath(unitPath);
        await rm(unitPath);
      });
    } else {
      say(`no unit at ${unitPath}`);
    }
    if (withSystemd) await steps.run('systemctl daemon-reload', () => systemctl(['daemon-reload']));
    const configDir = at(CONFIG_DIR);
    if (await exists(configDir)) {
      await steps.run(`remove ${configDir} (config.json with the worker token)`, async () => {
        assertOwnPath(configDir);
        await rm(configDir, { recursive: true, force: true });
      });
    } else {
      say(`no config directory at ${configDir}`);
    }
    const stateDir = at(STATE_DIR);
    if (!opts.purge) {
      say(`kept ${stateDir} (agent state; --purge removes it)`);
    } else if (await exists(stateDir)) {
      await steps.run(`remove ${stateDir} (--purge)`, async () => {
        assertOwnPath(stateDir);
        await rm(stateDir, { recursive: true, force: true });
      });
    }
    if (opts.purge && realSystem && (await lookupUser(SERVICE_USER))) {
      await steps.run(`remove system user ${SERVICE_USER} (--purge)`, async () => {
        const r = await runCommand('userdel', [SERVICE_USER], 30_000);
        if (r.code !== 0) throw new Error(describeFailure('userdel', [SERVICE_USER], r));
      });
    }
    say(
      'Swarm services were not touched: deployments keep running under dockerd. The panel still lists this worker until it is deleted there.',
    );
    return 0;
  } catch (err) {
    if (err instanceof StepFailed) return 1;
    throw err;
  }
}
