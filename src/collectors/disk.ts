import { statfs } from 'node:fs/promises';
import { clampPercent } from './cpu.js';

export interface DiskFacts {
  path: string;
  totalBytes: number;
  usedBytes: number;
  /** Like df: used / (used + available to unprivileged users), so the root reserve counts as unavailable. */
  percent: number;
}

/** statfs(2) on the filesystem holding `path` (Docker's data root): one syscall, no `df` child. */
export async function readDisk(path: string): Promise<DiskFacts> {
  const s = await statfs(path);
  const total = s.blocks * s.bsize;
  const used = (s.blocks - s.bfree) * s.bsize;
  const avail = s.bavail * s.bsize;
  const denom = used + avail;
  return { path, totalBytes: total, usedBytes: used, percent: denom > 0 ? clampPercent((used / denom) * 100) : 0 };
}
