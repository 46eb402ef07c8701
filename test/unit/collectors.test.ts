import { describe, expect, it } from 'vitest';
import { CpuSampler, MIN_CPU_WINDOW_MS, cpuPercentBetween, parseProcStat } from '../../src/collectors/cpu.js';
import { parseMeminfo, readMemory } from '../../src/collectors/memory.js';
import { readDisk } from '../../src/collectors/disk.js';
import { diskPathFor, readCapacity, HostLoadCollector, PANEL_CAPACITY_LIMITS } from '../../src/collectors/host-metrics.js';
import { parseOsRelease } from '../../src/collectors/host.js';

const stat = (user: number, idle: number, iowait = 0) => `cpu  ${user} 0 0 ${idle} ${iowait} 0 0 0 0 0\ncpu0 1 2 3 4\n`;

describe('cpu utilisation from /proc/stat samples', () => {
  it('parses the aggregate line and counts iowait as idle', () => {
    expect(parseProcStat(stat(100, 300, 50))).toEqual({ busy: 100, total: 450 });
  });

  it('reports busy share between two samples, not since boot', () => {
    expect(cpuPercentBetween(parseProcStat(stat(100, 100)), parseProcStat(stat(175, 125)))).toBe(75);
  });

  it('clamps to 0..100 and survives counters that did not move', () => {
    const s = parseProcStat(stat(10, 10));
    expect(cpuPercentBetween(s, s)).toBe(0);
  });

  /** A sampler over given /proc/stat texts on a clock the test moves; sleeping moves it too. */
  function fakeSampler(texts: string[]) {
    let now = 0;
    let ownUs = 0;
    const reads: number[] = [];
    const sampler = new CpuSampler(async () => (reads.push(now), texts.shift()!), {
      now: () => now,
      sleep: async (ms) => void (now += ms),
      ownCpuUs: () => ownUs,
    });
    return { sampler, reads, advance: (ms: number) => void (now += ms), spend: (us: number) => void (ownUs += us) };
  }

  it('the sampler reports utilisation since its previous call', async () => {
    const { sampler, advance } = fakeSampler([stat(0, 0), stat(50, 50), stat(50, 150)]);
    await sampler.prime();
    advance(30_000);
    expect(await sampler.sample()).toBe(50);
    advance(30_000);
    expect(await sampler.sample()).toBe(0);
  });

  it('the first figure after start-up is measured over at least a second, not the start-up itself', async () => {
    const { sampler, reads, advance } = fakeSampler([stat(0, 0), stat(80, 20), stat(90, 110)]);
    await sampler.prime();
    advance(25);
    // The start-up burst alone would read 80 %; the sampler waits until the window is a second long.
    expect(await sampler.sample()).toBe(80);
    expect(reads).toEqual([0, MIN_CPU_WINDOW_MS]);
    expect(sampler.lastWindowMs).toBe(MIN_CPU_WINDOW_MS);
    // PROTOCOL.md: two samples at least 1 s apart.
    expect(MIN_CPU_WINDOW_MS).toBeGreaterThanOrEqual(1_000);
  });

  it("takes the agent's own CPU time out of the window (1 tick = 10 ms)", async () => {
    const { sampler, advance, spend } = fakeSampler([stat(0, 0), stat(80, 20)]);
    await sampler.prime();
    advance(1_000);
    spend(500_000); // 50 of the 80 busy ticks were the agent starting up
    expect(await sampler.sample()).toBe(30);
  });

  it('starts the first window at a sample taken earlier (process start), waiting only for the rest of the second', async () => {
    const { sampler, reads, advance } = fakeSampler([stat(40, 60)]);
    advance(700);
    await sampler.prime({ times: parseProcStat(stat(0, 0)), ownUs: 0, at: 0 });
    expect(await sampler.sample()).toBe(40);
    expect(reads).toEqual([MIN_CPU_WINDOW_MS]);
  });

  it('a quick retry reports the last full-window figure instead of a sliver', async () => {
    const { sampler, reads, advance } = fakeSampler([stat(0, 0), stat(10, 90), stat(100, 100)]);
    await sampler.prime();
    advance(1_000);
    expect(await sampler.sample()).toBe(10);
    advance(200);
    expect(await sampler.sample()).toBe(10);
    expect(reads).toHaveLength(2);
    advance(900);
    expect(await sampler.sample()).toBe(90);
  });

  it('reads the real /proc/stat of this machine', async () => {
    const sampler = new CpuSampler();
    await sampler.prime();
    const v = await sampler.sample();
    expect(typeof v).toBe('number');
    expect(v).toBeGreaterThanOrEqual(0);
    expect(v).toBeLessThanOrEqual(100);
  });
});

describe('memory in use excluding page cache', () => {
  it('uses MemAvailable', () => {
    const m = parseMeminfo('MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    750 kB\nCached: 600 kB\n');
    expect(m.totalBytes).toBe(1000 * 1024);
    expect(m.usedBytes).toBe(250 * 1024);
    expect(m.percent).toBe(25);
  });

  it('falls back to free + buffers + cached on kernels without MemAvailable', () => {
    const m = parseMeminfo('MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 100 kB\nCached: 300 kB\n');
    expect(m.percent).toBe(50);
  });

  it('rejects a file without MemTotal', () => {
    expect(() => parseMeminfo('nothing')).toThrow(/MemTotal/);
  });

  it('reads real numbers from this machine', async () => {
    const m = await readMemory();
    expect(m.totalBytes).toBeGreaterThan(0);
    expect(m.percent).toBeGreaterThan(0);
    expect(m.percent).toBeLessThanOrEqual(100);
  });
});

describe('disk on the filesystem holding Docker data', () => {
  it('statfs gives total, used and a df-like percent', async () => {
    const d = await readDisk('/');
    expect(d.totalBytes).toBeGreaterThan(0);
    expect(d.usedBytes).toBeGreaterThan(0);
    expect(d.percent).toBeGreaterThan(0);
    expect(d.percent).toBeLessThanOrEqual(100);
  });

  it('falls back to an existing directory when the data root is missing', () => {
    expect(diskPathFor('/nonexistent/docker')).toMatch(/^\/(var\/lib\/docker)?$/);
  });
});

describe('capacity', () => {
  it('reports whole cores, MiB and GiB within what the panel accepts', async () => {
    const { capacity } = await readCapacity(undefined);
    expect(Number.isInteger(capacity.cpuCores)).toBe(true);
    expect(capacity.cpuCores).toBeGreaterThan(0);
    expect(Number.isInteger(capacity.memoryMb)).toBe(true);
    expect(capacity.diskGb).toBeGreaterThan(0);
    expect(capacity.diskGb).toBeLessThanOrEqual(PANEL_CAPACITY_LIMITS.diskGb);
  });

  it('load collector returns three numeric percents', async () => {
    const c = new HostLoadCollector();
    await c.prime();
    const load = await c.read(undefined);
    for (const v of Object.values(load)) {
      expect(typeof v).toBe('number');
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(100);
    }
  });
});

describe('os-release', () => {
  it('takes PRETTY_NAME without quotes', () => {
    expect(parseOsRelease('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')).toBe('Debian GNU/Linux 12 (bookworm)');
  });
});
