import { readProcFile } from './proc.js';
import { clampPercent } from './cpu.js';

export interface MemoryFacts {
  totalBytes: number;
  /** In use by processes: total minus MemAvailable, so page cache and reclaimable slab do not count. */
  usedBytes: number;
  percent: number;
}

export function parseMeminfo(text: string): MemoryFacts {
  const kb = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kb('MemTotal');
  if (!total) throw new Error('/proc/meminfo has no MemTotal');
  // MemAvailable exists since Linux 3.14; older kernels get the classic free + buffers + cached estimate.
  const available = kb('MemAvailable') ?? (kb('MemFree') ?? 0) + (kb('Buffers') ?? 0) + (kb('Cached') ?? 0);
  const used = Math.max(0, total - available);
  return { totalBytes: total, usedBytes: used, percent: clampPercent((used / total) * 100) };
}

export async function readMemory(): Promise<MemoryFacts> {
  return parseMeminfo(await readProcFile('meminfo'));
}
