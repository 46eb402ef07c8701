import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

/** What `install`, `uninstall` and `doctor` share about the host's service manager and users. */
export const UNIT_NAME = 'skypanel-agent.service';
export const UNIT_DIR = '/etc/systemd/system';
export { SERVICE_USER } from '../agent/config-schema.js';

export interface CommandResult {
  /** Exit code; null when the command could not be started, was killed, or timed out. */
  code: number | null;
  stdout: string;
  stderr: string;
  /** Why it did not run to completion (ENOENT, timed out, signal), when it did not. */
  error?: string;
}

/** Run a command without a shell, bounded in time; never throws. */
export function runCommand(cmd: string, args: string[], timeoutMs = 60_000): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: string | null };
        if (typeof e.code === 'number') return resolve({ code: e.code, stdout, stderr });
        const why = e.killed
          ? `no answer within ${timeoutMs} ms`
          : typeof e.code === 'string'
            ? e.code
            : e.signal
              ? `killed by ${e.signal}`
              : e.message;
        resolve({ code: null, stdout, stderr, error: why });
      },
    );
  });
}

/** One line describing a failed command, for operators. */
export function describeFailure(cmd: string, args: string[], r: CommandResult): string {
  const what = [cmd, ...args].join(' ');
  const detail = (r.stderr || r.stdout).trim().split('\n').filter(Boolean).slice(-1)[0];
  return `${what} failed (${r.error ?? `exit ${r.code}`})${detail ? `: ${detail}` : ''}`;
}

/** systemd is the running service manager exactly when this directory exists (sd_booted(3)). */
export function systemdRunning(): boolean {
  return existsSync('/run/systemd/system');
}

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
}

/** A user from the system's user database (NSS, so not only /etc/passwd); undefined when absent. */
export async function lookupUser(name: string): Promise<PasswdEntry | undefined> {
  const r = await runCommand('getent', ['passwd', name], 10_000);
  if (r.code !== 0) return undefined;
  const f = r.stdout.trim().split(':');
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (f[0] !== name || !Number.isInteger(uid) || !Number.isInteger(gid)) return undefined;
  return { name, uid, gid };
}

export async function groupExists(name: string): Promise<boolean> {
  return (await runCommand('getent', ['group', name], 10_000)).code === 0;
}

/** `User=` of an installed unit file's text, if it sets one. */
export function unitUser(unitText: string): string | undefined {
  const m = /^\s*User\s*=\s*(\S+)\s*$/m.exec(unitText);
  return m?.[1];
}
