import { constants, existsSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './state/atomic-file.js';

/**
 * Draining is a marker file in the state directory, written by `skypanel-agent drain` on the same
 * host: it survives restarts, needs no API call into the running agent, and is checked with one
 * small read per heartbeat. A draining agent keeps running, updating and removing what it has,
 * but creates nothing new, and says so in its heartbeats.
 */
export const DRAIN_FILE = 'drain.json';

export interface DrainMarker {
  since: string;
  reason?: string;
}

export async function readDrain(stateDir: string): Promise<DrainMarker | null> {
  // Checked every heartbeat: a cheap existence test first, rather than a thrown ENOENT each time.
  if (!existsSync(join(stateDir, DRAIN_FILE))) return null;
  try {
    // Never through a symbolic link (ELOOP) or into a FIFO: such a marker is garbled, so it means draining.
    const fh = await open(join(stateDir, DRAIN_FILE), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    let text: string;
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size > 4096) throw new Error('not a small regular file');
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
    const parsed = JSON.parse(text) as Partial<DrainMarker> | null;
    if (parsed === null || typeof parsed !== 'object') throw new Error('not a JSON object');
    return {
      since: typeof parsed.since === 'string' ? parsed.since : new Date(0).toISOString(),
      ...(typeof parsed.reason === 'string' ? { reason: parsed.reason } : {}),
    };
  } catch (err) {
    // Absent means not draining; an unreadable or garbled marker still means someone asked to drain.
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? null : { since: new Date(0).toISOString() };
  }
}

export async function writeDrain(stateDir: string, reason?: string): Promise<DrainMarker> {
  const marker: DrainMarker = { since: new Date().toISOString(), ...(reason ? { reason } : {}) };
  await writeFileAtomic(join(stateDir, DRAIN_FILE), `${JSON.stringify(marker)}\n`, 0o600);
  return marker;
}

export async function clearDrain(stateDir: string): Promise<void> {
  await rm(join(stateDir, DRAIN_FILE), { force: true });
}
