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

/** /proc/stat counts USER_HZ ticks, 1/100 s on every architecture Linux and node run on. */
const TICKS_PER_US = 100 / 1e6;

/** Busy share of all CPUs between two samples, less `ownCpuUs` (CPU time the agent itself used meanwhile). */
export function cpuPercentBetween(prev: CpuTimes, next: CpuTimes, ownCpuUs = 0): number {
  const total = next.total - prev.total;
  if (total <= 0) return 0;
  const busy = Math.max(0, next.busy - prev.busy - ownCpuUs * TICKS_PER_US);
  return clampPercent((busy / total) * 100);
}

/** This process's CPU time so far (user + system), in microseconds. */
export function ownCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** A /proc/stat reading, with the agent's own CPU time and the time (performance.now()) at that moment. */
export interface CpuSnapshot {
  times: CpuTimes;
  ownUs: number;
  at: number;
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
  /** ownCpuUs unless given (tests). */
  ownCpuUs?: () => number;
}

/**
 * CPU utilisation from successive /proc/stat samples (not load average, which counts runnable and
 * D-state tasks, not utilisation), by everything but the agent itself: its own CPU time over the
 * window is taken out, which in steady state is next to nothing (a few ms per heartbeat) but keeps
 * its start-up out of the first figure. Each call reports the utilisation since the previous one,
 * over at least `minWindowMs`: the first call waits out the rest of that window since prime() (the
 * CLI primes with a sample taken as the process started, so the wait overlaps start-up), and a call
 * that comes sooner than that after the previous one (a quick retry) repeats the previous figure.
 */
export class CpuSampler {
  #prev: CpuSnapshot | undefined;
  #last: number | undefined;
  #lastWindowMs: number | undefined;
  readonly #read: () => Promise<string>;
  readonly #minWindowMs: number;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #ownUs: () => number;

  constructor(read: () => Promise<string> = () => readProcFile('stat'), opts: CpuSamplerOptions = {}) {
    this.#read = read;
    this.#minWindowMs = opts.minWindowMs ?? MIN_CPU_WINDOW_MS;
    this.#now = opts.now ?? (() => performance.now());
    this.#sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#ownUs = opts.ownCpuUs ?? ownCpuUs;
  }

  /** Takes the first sample now, or starts from `from` (a sample taken earlier, at process start). */
  async prime(from?: CpuSnapshot): Promise<void> {
    this.#prev = from ?? (await this.#snapshot());
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
    const next = await this.#snapshot();
    this.#prev = next;
    this.#lastWindowMs = next.at - prev.at;
    this.#last = cpuPercentBetween(prev.times, next.times, next.ownUs - prev.ownUs);
    return this.#last;
  }

  async #snapshot(): Promise<CpuSnapshot> {
    const times = parseProcStat(await this.#read());
    return { times, ownUs: this.#ownUs(), at: this.#now() };
  }
}
