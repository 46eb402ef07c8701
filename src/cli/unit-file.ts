import { realpath, stat } from 'node:fs/promises';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentError } from '../errors.js';

/**
 * The systemd unit `install` writes (and the .deb ships): the template's ExecStart line filled in
 * with this node and this agent, and whether the service user can run those two at all.
 */

/** The unit template ships in the package beside dist/ (package.json `files`). */
export const UNIT_TEMPLATE_PATH = fileURLToPath(new URL('../../systemd/skypanel-agent.service', import.meta.url));
const PACKAGE_BIN = fileURLToPath(new URL('../../bin/skypanel-agent', import.meta.url));

/** ProtectHome=yes hides these from the service: node and the agent must not live there. */
const HIDDEN_FROM_SERVICE = ['/root', '/home', '/run/user'];

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
