import type { Stats } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { userInfo } from 'node:os';
import { AgentError } from '../../errors.js';
import { SERVICE_USER } from '../config-schema.js';

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');

/**
 * The checks ssh's StrictModes makes before trusting a key file, for the files that hold the
 * worker token (the config, --token-file): readable by the owner only; owned by the user running
 * the agent or by root; in a directory owned by one of them that group and others cannot write
 * (else anyone who can write there can swap the file for their own). As root the service user
 * `install` creates is trusted too: `install` hands it the config, and root runs `status` and
 * `drain` against that file. Throws SKP_ERR_CONFIG_INSECURE naming the file and the fix.
 */
export async function assertPrivateFile(path: string, st: Stats, label: string): Promise<void> {
  if ((st.mode & 0o077) !== 0) {
    throw new AgentError(
      'SKP_ERR_CONFIG_INSECURE',
      `${label} ${path} has mode ${octal(st.mode)} and holds the worker token; refusing it. Fix: chmod 600 ${path}`,
    );
  }
  const me = process.getuid?.();
  if (me === undefined) return;
  if (!(await trustedOwner(st.uid, me))) {
    throw new AgentError(
      'SKP_ERR_CONFIG_INSECURE',
      `${label} ${path} is owned by uid ${st.uid}, not by the user running the agent (${userName()}, uid ${me}) or root; refusing it. Fix: chown ${me} ${path}`,
    );
  }
  const dir = dirname(await realpath(path).catch(() => path));
  const ds = await stat(dir);
  if (!(await trustedOwner(ds.uid, me))) {
    throw new AgentError(
      'SKP_ERR_CONFIG_INSECURE',
      `${label} ${path} is in ${dir}, owned by uid ${ds.uid}, not by the user running the agent (uid ${me}) or root; refusing it. Fix: chown ${me} ${dir}, or move the file`,
    );
  }
  if ((ds.mode & 0o022) !== 0) {
    throw new AgentError(
      'SKP_ERR_CONFIG_INSECURE',
      `${label} ${path} is in ${dir}, which group or others can write (mode ${octal(ds.mode)}): anyone who can write there can replace it; refusing it. Fix: chmod go-w ${dir}, or move the file`,
    );
  }
}

async function trustedOwner(uid: number, me: number): Promise<boolean> {
  if (uid === me || uid === 0) return true;
  return me === 0 && uid === (await serviceUserUid());
}

/** The service user's uid from /etc/passwd (`useradd --system` puts it there); no child process. */
async function serviceUserUid(): Promise<number | undefined> {
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  const line = passwd.split('\n').find((l) => l.startsWith(`${SERVICE_USER}:`));
  const uid = Number(line?.split(':')[2]);
  return Number.isInteger(uid) ? uid : undefined;
}

function userName(): string {
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}
