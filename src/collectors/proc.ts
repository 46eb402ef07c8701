import { readFile } from 'node:fs/promises';

/** Host facts come from /proc and statfs: no child process is ever spawned to collect them. */
export const PROC_ROOT = process.env.SKYPANEL_AGENT_PROC_ROOT ?? '/proc';

export async function readProcFile(name: string, root = PROC_ROOT): Promise<string> {
  return readFile(`${root}/${name}`, 'utf8');
}
