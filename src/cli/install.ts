import { chmod, chown, mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
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
import { assertOwnPath, ensureDir, exists, StepFailed, Steps, systemctl, type Say } from './install-steps.js';
import { execLine, renderUnit, resolveBinPath, UNIT_TEMPLATE_PATH, unreachableForService } from './unit-file.js';

export const CONFIG_DIR = dirname(DEFAULT_CONFIG_PATH);
export const STATE_DIR = DEFAULT_STATE_DIR;
export const UNIT_PATH = join(UNIT_DIR, UNIT_NAME);

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
