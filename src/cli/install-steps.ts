import { chmod, chown, lstat, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AgentError } from '../errors.js';
import { describeFailure, runCommand, type PasswdEntry } from './system.js';

/** The steps `install` and `uninstall` take on the filesystem and systemd, each printed as it goes. */

export type Say = (line: string) => void;

/** A failed step; already printed, so the command only has to exit 1. */
export class StepFailed extends Error {}

/**
 * Runs or, with --dry-run, only prints each action, in order. Every line names exactly what is
 * (or would be) changed, so a dry run is a faithful preview of a real one.
 */
export class Steps {
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

export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Create a directory (parents 0755), then force its mode and owner even when it already existed. */
export async function ensureDir(path: string, mode: number, owner: PasswdEntry | undefined): Promise<string | void> {
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

export async function systemctl(args: string[]): Promise<void> {
  const r = await runCommand('systemctl', args, 90_000);
  if (r.code !== 0) throw new Error(describeFailure('systemctl', args, r));
}

/** Refuse anything but the agent's own directories: a bad --root must never widen an rm -r. */
export function assertOwnPath(path: string): void {
  if (!path.startsWith('/') || !/\/skypanel-agent(\.service)?$/.test(path)) throw new Error(`refusing to remove ${path}`);
}
