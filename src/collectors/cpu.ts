import { readProcFile } from './proc.js';

export interface CpuTimes {
  /** Jiffies spent doing anything but idling or waiting for I/O. */
  busy: number;
  total: number;
}

/** Parse the aggregate `cpu` line of /proc/stat. iowait counts as idle: the CPU was free to run work. */
export function parseProcStat(text: string): CpuTimes {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('/proc/stat has no aggregate cpu line');
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user/nice]
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  const idleAll = idle + iowait;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idleAll };
}

export function cpuPercentBetween(prev: CpuTimes, next: CpuTimes): number {
  const total = next.total - prev.total;
  if (total <= 0) return 0;
  return clampPercent(((next.busy - prev.busy) / total) * 100);
}

export function clampPercent(v: number): number {
  if (!Number.isFinite(v)) return 0;
  return Math.round(Math.min(100, Math.max(0, v)) * 100) / 100;
}

/**
 * CPU utilisation from successive /proc/stat samples (not load average, which counts
 * runnable and D-state tasks, not utilisation). Each call reports the utilisation since the previous
 * call; the sampler primes itself on construction so the first heartbeat already has a real figure.
 */
export class CpuSampler {
  #prev: CpuTimes | undefined;
  readonly #read: () => Promise<string>;

  constructor(read: () => Promise<string> = () => readProcFile('stat')) {
    this.#read = read;
  }

  async prime(): Promise<void> {
    this.#prev = parseProcStat(await this.#read());
  }

  async sample(): Promise<number> {
    const next = parseProcStat(await this.#read());
    const prev = this.#prev;
    this.#prev = next;
    return prev ? cpuPercentBetween(prev, next) : 0;
  }
}
