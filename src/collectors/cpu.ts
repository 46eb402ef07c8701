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
 * The shortest window a CPU figure is measured over. A shorter one mostly measures whatever ran in
 * it: the first heartbeat, sampled over the agent's own start-up, read 40–83 % on hosts at ~10 %
 * (SkyPanelV2 marks a worker unhealthy above 90 %).
 */
export const MIN_CPU_WINDOW_MS = 1_000;

export interface CpuSamplerOptions {
  /** MIN_CPU_WINDOW_MS unless given. */
  minWindowMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * CPU utilisation from successive /proc/stat samples (not load average, which counts
 * runnable and D-state tasks, not utilisation). Each call reports the utilisation since the previous
 * one, over at least `minWindowMs`: the first call after prime() waits out the rest of that window
 * (about a second after the agent starts, once), and a call that comes sooner than that after the
 * previous one (a quick retry) reports the previous figure instead of a sliver.
 */
export class CpuSampler {
  #prev: { times: CpuTimes; at: number } | undefined;
  #last: number | undefined;
  #lastWindowMs: number | undefined;
  readonly #read: () => Promise<string>;
  readonly #minWindowMs: number;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(read: () => Promise<string> = () => readProcFile('stat'), opts: CpuSamplerOptions = {}) {
    this.#read = read;
    this.#minWindowMs = opts.minWindowMs ?? MIN_CPU_WINDOW_MS;
    this.#now = opts.now ?? (() => performance.now());
    this.#sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  }

  async prime(): Promise<void> {
    this.#prev = { times: parseProcStat(await this.#read()), at: this.#now() };
  }

  /** How long the window of the latest figure was, in ms (undefined before the first). */
  get lastWindowMs(): number | undefined {
    return this.#lastWindowMs;
  }

  async sample(): Promise<number> {
    if (this.#prev === undefined) await this.prime();
    const prev = this.#prev!;
    const short = this.#minWindowMs - (this.#now() - prev.at);
    if (short > 0) {
      if (this.#last !== undefined) return this.#last;
      await this.#sleep(short);
    }
    const next = { times: parseProcStat(await this.#read()), at: this.#now() };
    this.#prev = next;
    this.#lastWindowMs = next.at - prev.at;
    this.#last = cpuPercentBetween(prev.times, next.times);
    return this.#last;
  }
}
