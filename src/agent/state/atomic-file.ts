import { open, rename, mkdir, lstat, stat, unlink } from 'node:fs/promises';
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
  try {
    // rename replaces whatever is at `path`, a symbolic link included, and never writes through it.
    await rename(tmp, path);
  } catch (err) {
    // On a full disk a leftover temp file would hold the very space the next attempt needs.
    await unlink(tmp).catch(() => {});
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * When running as root: keep the existing file's owner, or take the directory's for a new file.
 * lstat, not stat: a symbolic link put in the file's place must not hand its target's owner (say,
 * another user's file) to the new file; a link, like any non-regular file, counts as absent, and
 * so does a hard link (a second name for a file someone else may own).
 */
async function ownerFor(path: string, dir: string): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const existing = await lstat(path).catch(() => undefined);
  const st = existing?.isFile() && existing.nlink === 1 ? existing : await stat(dir);
  return st.uid === 0 && st.gid === 0 ? undefined : { uid: st.uid, gid: st.gid };
}
