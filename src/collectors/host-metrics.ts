import { existsSync } from 'node:fs';
import { CpuSampler, type CpuSnapshot } from './cpu.js';
import { readDisk } from './disk.js';
import { readMemory } from './memory.js';
import { readCpuCores } from './host.js';

export interface Capacity {
  cpuCores: number;
  memoryMb: number;
  diskGb: number;
}

export interface HostLoad {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
}

/**
 * Stock SkyPanelV2 rejects a first registration outside these bounds. A host bigger than that
 * still has to register, so capacity is capped at the bound and the caller logs that it was.
 */
export const PANEL_CAPACITY_LIMITS: Capacity = { cpuCores: 256, memoryMb: 1_048_576, diskGb: 10_240 };

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** Docker's data root when known, else the nearest directory that exists. */
export function diskPathFor(dockerRootDir: string | undefined): string {
  for (const p of [dockerRootDir, '/var/lib/docker', '/']) {
    if (p && existsSync(p)) return p;
  }
  return '/';
}

export interface CapacityReading {
  capacity: Capacity;
  /** Keys whose true value exceeded what the panel accepts and was capped. */
  capped: (keyof Capacity)[];
}

export async function readCapacity(dockerRootDir: string | undefined): Promise<CapacityReading> {
  const [mem, disk] = await Promise.all([readMemory(), readDisk(diskPathFor(dockerRootDir))]);
  const raw: Capacity = {
    cpuCores: readCpuCores(),
    memoryMb: Math.floor(mem.totalBytes / MiB),
    diskGb: Math.max(0.01, Math.round((disk.totalBytes / GiB) * 100) / 100),
  };
  const capped: (keyof Capacity)[] = [];
  const capacity = { ...raw };
  for (const key of Object.keys(PANEL_CAPACITY_LIMITS) as (keyof Capacity)[]) {
    if (capacity[key] > PANEL_CAPACITY_LIMITS[key]) {
      capacity[key] = PANEL_CAPACITY_LIMITS[key];
      capped.push(key);
    }
  }
  return { capacity, capped };
}

/** Reads the current load each heartbeat: two /proc reads and one statfs, nothing spawned. */
export class HostLoadCollector {
  readonly #cpu: CpuSampler;

  constructor(cpu: CpuSampler = new CpuSampler()) {
    this.#cpu = cpu;
  }

  /** `from`: a CPU sample taken earlier (at process start), so the first figure's window began then. */
  prime(from?: CpuSnapshot): Promise<void> {
    return this.#cpu.prime(from);
  }

  async read(dockerRootDir: string | undefined): Promise<HostLoad> {
    const [cpuPercent, mem, disk] = await Promise.all([this.#cpu.sample(), readMemory(), readDisk(diskPathFor(dockerRootDir))]);
    return { cpuPercent, memoryPercent: mem.percent, diskPercent: disk.percent };
  }
}
