import { open, rename, mkdir, stat, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Write a file so that a crash leaves either the old or the new content, never a torn one:
 * write a temp file beside it, fsync, rename over, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const owner = await ownerFor(path, dir);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    // The mode passed to open() is masked by the umask; set it explicitly.
    await fh.chmod(mode);
    // root editing the service user's files (register, drain by hand) must not take them over.
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** When running as root: keep the existing file's owner, or take the directory's for a new file. */
async function ownerFor(path: string, dir: string): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const st = await stat(path).catch(() => stat(dir));
  return st.uid === 0 && st.gid === 0 ? undefined : { uid: st.uid, gid: st.gid };
}
