import { describe, expect, it } from 'vitest';
import {
  ContainerCounterFiles,
  CounterFileError,
  GONE_CODES,
  cgroupLayout,
  netDevBytes,
  newReadBuffer,
  statKey,
  statValue,
  uintAt,
  type CgroupFs,
  type CgroupLayout,
} from '../../src/swarm/cgroup-files.js';

// ---- real-looking file contents ----

/** cgroup v1 memory.stat of a leaf cgroup (kernel 5.4): per-cgroup keys, then the hierarchical `total_` ones. */
const V1_MEMORY_STAT = [
  'cache 2461696',
  'rss 1744896',
  'rss_huge 0',
  'shmem 0',
  'mapped_file 1081344',
  'dirty 0',
  'writeback 0',
  'pgpgin 2541',
  'pgpgout 1514',
  'pgfault 3234',
  'pgmajfault 12',
  'inactive_anon 0',
  'active_anon 1757184',
  'inactive_file 1892352',
  'active_file 557056',
  'unevictable 0',
  'hierarchical_memory_limit 9223372036854771712',
  'total_cache 2461696',
  'total_rss 1744896',
  'total_rss_huge 0',
  'total_shmem 0',
  'total_mapped_file 1081344',
  'total_inactive_anon 0',
  'total_active_anon 1757184',
  'total_inactive_file 1900544',
  'total_active_file 557056',
  'total_unevictable 0',
  '',
].join('\n');

/** cgroup v2 memory.stat (kernel 5.15), abridged: `anon_thp` is a suffix-extended `anon`, `inactive_file` contains `active_file`. */
const V2_MEMORY_STAT = [
  'anon 1204224',
  'file 4505600',
  'kernel_stack 16384',
  'pagetables 49152',
  'percpu 0',
  'sock 0',
  'shmem 0',
  'file_mapped 1892352',
  'file_dirty 0',
  'file_writeback 0',
  'swapcached 0',
  'anon_thp 0',
  'file_thp 0',
  'shmem_thp 0',
  'inactive_anon 0',
  'active_anon 1204224',
  'inactive_file 3366912',
  'active_file 1138688',
  'unevictable 0',
  'slab_reclaimable 151384',
  'slab_unreclaimable 105336',
  'slab 256720',
  'workingset_refault_anon 0',
  'workingset_refault_file 0',
  'pgfault 4719',
  'pgmajfault 0',
  '',
].join('\n');

const V2_CPU_STAT = [
  'usage_usec 8329113',
  'user_usec 5466454',
  'system_usec 2862659',
  'core_sched.force_idle_usec 0',
  'nr_periods 0',
  'nr_throttled 0',
  'throttled_usec 0',
  'nr_bursts 0',
  'burst_usec 0',
  '',
].join('\n');

const NET_DEV = [
  'Inter-|   Receive                                                |  Transmit',
  ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
  '    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0',
  '  eth0: 1048576     900    0    0    0     0          0         0   524288     450    0    0    0     0       0          0',
  '  eth1:    2000      20    0    0    0     0          0         0     3000      30    0    0    0     0       0          0',
  '',
].join('\n');
const NET_DEV_TOTAL = 1048576 + 524288 + 2000 + 3000;

const buf = (s: string) => Buffer.from(s, 'latin1');

/** A buffer that held `before` (a longer, earlier read) and now holds `now` at offset 0, as a reused read buffer does. */
function reused(before: string, now: string): { b: Buffer; len: number } {
  const b = Buffer.alloc(Math.max(before.length, now.length) + 16, 0x41);
  b.write(before, 0, 'latin1');
  const len = b.write(now, 0, 'latin1');
  return { b, len };
}

// ---- parsers ----

describe('uintAt', () => {
  it('reads the digits at `from`, after blanks, and stops at a non-digit or at `end`', () => {
    const b = buf('x  \t12345 67\n');
    expect(uintAt(b, 1, b.length)).toBe(12345);
    expect(uintAt(b, 4, b.length)).toBe(12345);
    expect(uintAt(b, 4, 7)).toBe(123); // `end` cuts the number
    expect(uintAt(b, 9, b.length)).toBe(67);
  });

  it('is NaN when there is no digit before `end`', () => {
    const b = buf('key   \n1');
    expect(uintAt(b, 3, b.length)).toBeNaN(); // blanks then a newline
    expect(uintAt(b, 0, b.length)).toBeNaN(); // a letter
    expect(uintAt(b, 3, 6)).toBeNaN(); // only blanks before end
    expect(uintAt(b, 7, 7)).toBeNaN(); // empty range, though a digit lies just past it
  });
});

describe('statValue / statKey', () => {
  it('statKey is `\\nkey ` in latin1', () => {
    expect(statKey('inactive_file')).toEqual(buf('\ninactive_file '));
  });

  it('cgroup v1 memory.stat: total_inactive_file, not the per-cgroup inactive_file nor total_active_file', () => {
    const b = buf(V1_MEMORY_STAT);
    expect(statValue(b, b.length, statKey('total_inactive_file'))).toBe(1900544);
    expect(statValue(b, b.length, statKey('inactive_file'))).toBe(1892352);
    expect(statValue(b, b.length, statKey('total_active_file'))).toBe(557056);
    expect(statValue(b, b.length, statKey('cache'))).toBe(2461696); // first line: no newline before it
    expect(statValue(b, b.length, statKey('total_swap'))).toBeUndefined();
  });

  it('cgroup v2 memory.stat: a key that is a prefix or suffix of another is matched exactly', () => {
    const b = buf(V2_MEMORY_STAT);
    expect(statValue(b, b.length, statKey('inactive_file'))).toBe(3366912);
    expect(statValue(b, b.length, statKey('active_file'))).toBe(1138688); // not the `active_file` inside `inactive_file`
    expect(statValue(b, b.length, statKey('file'))).toBe(4505600); // not file_mapped, file_dirty, …
    expect(statValue(b, b.length, statKey('anon'))).toBe(1204224); // the first line
    expect(statValue(b, b.length, statKey('slab'))).toBe(256720); // after slab_reclaimable, slab_unreclaimable
    expect(statValue(b, b.length, statKey('thp'))).toBeUndefined();
  });

  it('a first line that only starts like the key is not the key', () => {
    const b = buf('anon_thp 7\nanon 42\n');
    expect(statValue(b, b.length, statKey('anon'))).toBe(42);
    expect(statValue(b, b.length, statKey('anon_thp'))).toBe(7);
  });

  it('cgroup v2 cpu.stat: usage_usec on the first line, user_usec and system_usec apart', () => {
    const b = buf(V2_CPU_STAT);
    expect(statValue(b, b.length, statKey('usage_usec'))).toBe(8329113);
    expect(statValue(b, b.length, statKey('user_usec'))).toBe(5466454);
    expect(statValue(b, b.length, statKey('system_usec'))).toBe(2862659);
    expect(statValue(b, b.length, statKey('throttled_usec'))).toBe(0); // a zero is a value
  });

  it('a key without a number is undefined', () => {
    const b = buf('usage_usec \nuser_usec x\n');
    expect(statValue(b, b.length, statKey('usage_usec'))).toBeUndefined();
    expect(statValue(b, b.length, statKey('user_usec'))).toBeUndefined();
    const empty = buf('');
    expect(statValue(empty, 0, statKey('usage_usec'))).toBeUndefined();
  });

  it('stale bytes past `len` in a reused buffer never match', () => {
    // The earlier read had inactive_file; the current one does not.
    const { b, len } = reused(V2_MEMORY_STAT, 'anon 5\nfile 6\n');
    expect(b.includes(statKey('inactive_file'))).toBe(true);
    expect(statValue(b, len, statKey('inactive_file'))).toBeUndefined();
    expect(statValue(b, len, statKey('file'))).toBe(6);

    // The key's newline is the current read's last byte; the key's text is stale.
    const straddle = reused('a 1\nusage_usec 99\n', 'a 1\n');
    expect(statValue(straddle.b, straddle.len, statKey('usage_usec'))).toBeUndefined();

    // The key is current but its number continues into stale digits: only the current ones count.
    const cut = reused('x 0\nusage_usec 123456789\n', 'x 0\nusage_usec 12');
    expect(statValue(cut.b, cut.len, statKey('usage_usec'))).toBe(12);

    // First-line key: a stale first line longer than the current content does not match.
    const first = reused('usage_usec 5\n', 'us');
    expect(statValue(first.b, first.len, statKey('usage_usec'))).toBeUndefined();
  });
});

describe('netDevBytes', () => {
  it('sums rx and tx bytes over every interface but lo', () => {
    const b = buf(NET_DEV);
    expect(netDevBytes(b, b.length)).toBe(NET_DEV_TOTAL);
  });

  it('reads a counter glued to the colon (wide numbers on older kernels) and a file without a trailing newline', () => {
    const text = NET_DEV.replace('  eth0: 1048576', '  eth0:1048576').replace(/\n$/, '');
    const b = buf(text);
    expect(netDevBytes(b, b.length)).toBe(NET_DEV_TOTAL);
  });

  it('only lo, or only the headers, is 0', () => {
    const lines = NET_DEV.split('\n');
    const onlyLo = buf(`${lines.slice(0, 3).join('\n')}\n`);
    expect(netDevBytes(onlyLo, onlyLo.length)).toBe(0);
    const headers = buf(`${lines.slice(0, 2).join('\n')}\n`);
    expect(netDevBytes(headers, headers.length)).toBe(0);
    expect(netDevBytes(buf(''), 0)).toBe(0);
  });

  it('an interface whose name merely starts with lo is counted', () => {
    const text = `${NET_DEV}  lo0x:     10       1    0    0    0     0          0         0       5       1    0    0    0     0       0          0\n`;
    const b = buf(text);
    expect(netDevBytes(b, b.length)).toBe(NET_DEV_TOTAL + 15);
  });

  it('stale lines past `len` in a reused buffer are not counted', () => {
    const lines = NET_DEV.split('\n');
    const withoutEth1 = `${lines.slice(0, 4).join('\n')}\n`;
    const { b, len } = reused(NET_DEV, withoutEth1);
    expect(netDevBytes(b, len)).toBe(1048576 + 524288);
    // Shorter than the two header lines now: nothing, whatever follows in the buffer.
    const short = reused(NET_DEV, 'Inter-|\n');
    expect(netDevBytes(short.b, short.len)).toBe(0);
  });
});

// ---- layouts ----

/** Only `exists` matters to cgroupLayout. */
function existsFs(paths: string[]): CgroupFs {
  const set = new Set(paths);
  const no = () => {
    throw new Error('not used');
  };
  return { open: no, pread: no, close: no, list: no, readText: no, exists: (p) => set.has(p) };
}

const ROOT = '/sys/fs/cgroup';
const ID = '4f1a9c0e7b2d3a5f6e8c9b0a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e';
const V2_FS = existsFs([`${ROOT}/cgroup.controllers`]);
const V1_FS = existsFs([`${ROOT}/cpu,cpuacct/cpuacct.usage`, `${ROOT}/memory/memory.usage_in_bytes`]);

function usable(l: CgroupLayout | { unusable: string }): CgroupLayout {
  if ('unusable' in l) throw new Error(`unusable: ${l.unusable}`);
  return l;
}

describe('cgroupLayout', () => {
  it('v2, cgroupfs: <root>/docker/<id>', () => {
    const l = usable(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '2' }, ROOT, V2_FS));
    expect(l).toMatchObject({ version: 2, driver: 'cgroupfs', parent: `${ROOT}/docker` });
    expect(l.dirOf(ID)).toBe(`${ROOT}/docker/${ID}`);
    expect(l.cpuFile(ID)).toBe(`${ROOT}/docker/${ID}/cpu.stat`);
    expect(l.memoryFile(ID)).toBe(`${ROOT}/docker/${ID}/memory.current`);
    expect(l.memoryStatFile(ID)).toBe(`${ROOT}/docker/${ID}/memory.stat`);
    expect(l.idOf(ID)).toBe(ID);
    expect(l.idOf(`docker-${ID}.scope`)).toBeUndefined();
    expect(l.idOf(ID.slice(0, 12))).toBeUndefined();
    expect(l.idOf(ID.toUpperCase())).toBeUndefined();
    expect(l.idOf('cgroup.procs')).toBeUndefined();
  });

  it('v2, systemd: <root>/system.slice/docker-<id>.scope; other units are no container', () => {
    const l = usable(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: '2' }, ROOT, V2_FS));
    expect(l).toMatchObject({ version: 2, driver: 'systemd', parent: `${ROOT}/system.slice` });
    const dir = `${ROOT}/system.slice/docker-${ID}.scope`;
    expect(l.dirOf(ID)).toBe(dir);
    expect(l.cpuFile(ID)).toBe(`${dir}/cpu.stat`);
    expect(l.memoryFile(ID)).toBe(`${dir}/memory.current`);
    expect(l.memoryStatFile(ID)).toBe(`${dir}/memory.stat`);
    expect(l.idOf(`docker-${ID}.scope`)).toBe(ID);
    for (const other of [
      'docker.service',
      'containerd.service',
      'docker.socket',
      ID,
      `docker-${ID}.mount`,
      `docker-${ID.slice(1)}.scope`,
      `docker-${ID}x.scope`,
      'docker-.scope',
    ]) {
      expect(l.idOf(other), other).toBeUndefined();
    }
  });

  it('v1, cgroupfs: cpuacct and memory hierarchies, docker/<id>; the co-mounted cpu,cpuacct is found', () => {
    const l = usable(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, ROOT, V1_FS));
    expect(l).toMatchObject({ version: 1, driver: 'cgroupfs', parent: `${ROOT}/cpu,cpuacct/docker` });
    expect(l.dirOf(ID)).toBe(`${ROOT}/cpu,cpuacct/docker/${ID}`);
    expect(l.cpuFile(ID)).toBe(`${ROOT}/cpu,cpuacct/docker/${ID}/cpuacct.usage`);
    expect(l.memoryFile(ID)).toBe(`${ROOT}/memory/docker/${ID}/memory.usage_in_bytes`);
    expect(l.memoryStatFile(ID)).toBe(`${ROOT}/memory/docker/${ID}/memory.stat`);
    expect(l.idOf(ID)).toBe(ID);
    expect(l.idOf(`docker-${ID}.scope`)).toBeUndefined();
  });

  it('v1, systemd: system.slice/docker-<id>.scope; the `cpuacct` name is preferred when it exists', () => {
    const fs = existsFs([`${ROOT}/cpuacct/cpuacct.usage`, `${ROOT}/cpu,cpuacct/cpuacct.usage`, `${ROOT}/memory/memory.usage_in_bytes`]);
    const l = usable(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: '1' }, ROOT, fs));
    const scope = `docker-${ID}.scope`;
    expect(l).toMatchObject({ version: 1, driver: 'systemd', parent: `${ROOT}/cpuacct/system.slice` });
    expect(l.dirOf(ID)).toBe(`${ROOT}/cpuacct/system.slice/${scope}`);
    expect(l.cpuFile(ID)).toBe(`${ROOT}/cpuacct/system.slice/${scope}/cpuacct.usage`);
    expect(l.memoryFile(ID)).toBe(`${ROOT}/memory/system.slice/${scope}/memory.usage_in_bytes`);
    expect(l.memoryStatFile(ID)).toBe(`${ROOT}/memory/system.slice/${scope}/memory.stat`);
    expect(l.idOf(scope)).toBe(ID);
    expect(l.idOf(ID)).toBeUndefined();
  });

  it('a numeric CgroupVersion works as the string does', () => {
    expect(usable(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: 2 }, ROOT, V2_FS)).version).toBe(2);
  });

  it('CgroupVersion missing or empty (Engine < 20.10) means v1', () => {
    expect(usable(cgroupLayout({ CgroupDriver: 'cgroupfs' }, ROOT, V1_FS)).version).toBe(1);
    expect(usable(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '' }, ROOT, V1_FS)).version).toBe(1);
    // …and so a v2-only host with such an answer has no v1 hierarchies to use.
    expect(cgroupLayout({ CgroupDriver: 'cgroupfs' }, ROOT, V2_FS)).toHaveProperty('unusable');
  });

  it('unusable: an unknown or missing driver, an unknown version', () => {
    const weird = cgroupLayout({ CgroupDriver: 'weird', CgroupVersion: '2' }, ROOT, V2_FS);
    expect(weird).toEqual({ unusable: 'cgroup driver "weird" is not one this sampler knows' });
    expect(cgroupLayout({ CgroupVersion: '2' }, ROOT, V2_FS)).toHaveProperty('unusable');
    expect(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: '3' }, ROOT, V2_FS)).toEqual({
      unusable: 'cgroup version "3" is not one this sampler knows',
    });
  });

  it('unusable: v2 without a cgroup2 filesystem at the root (an agent in a container without the host one)', () => {
    expect(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: '2' }, ROOT, existsFs([]))).toEqual({
      unusable: `no cgroup v2 filesystem at ${ROOT}`,
    });
    expect(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: '2' }, ROOT, V1_FS)).toHaveProperty('unusable');
  });

  it('unusable: v1 without cpuacct, or without memory', () => {
    const expected = { unusable: `no cgroup v1 cpuacct and memory hierarchies under ${ROOT}` };
    expect(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, ROOT, existsFs([]))).toEqual(expected);
    expect(
      cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, ROOT, existsFs([`${ROOT}/memory/memory.usage_in_bytes`])),
    ).toEqual(expected);
    expect(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, ROOT, existsFs([`${ROOT}/cpu,cpuacct/cpuacct.usage`]))).toEqual(
      expected,
    );
    expect(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, ROOT, V2_FS)).toEqual(expected);
  });
});

// ---- ContainerCounterFiles ----

function errno(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

/** Files as the kernel serves them: each pread regenerates the text; a path can be made to answer an errno. */
class FakeFs implements CgroupFs {
  readonly files = new Map<string, string>();
  readonly open_ = new Map<number, string>();
  readonly failing = new Map<string, string>();
  readonly closed: number[] = [];
  preads = 0;
  #next = 10;

  open(path: string): number {
    if (!this.files.has(path)) throw errno('ENOENT', `ENOENT: no such file or directory, open '${path}'`);
    const fd = this.#next++;
    this.open_.set(fd, path);
    return fd;
  }

  pread(fd: number, b: Buffer): number {
    this.preads++;
    const path = this.open_.get(fd);
    if (path === undefined) throw errno('EBADF');
    const code = this.failing.get(path);
    if (code) throw errno(code, `${code}: read '${path}'`);
    const bytes = Buffer.from(this.files.get(path) ?? '', 'latin1');
    return bytes.copy(b, 0, 0, Math.min(bytes.length, b.length));
  }

  close(fd: number): void {
    if (!this.open_.delete(fd)) throw errno('EBADF');
    this.closed.push(fd);
  }

  list(): string[] {
    throw new Error('not used');
  }

  exists(path: string): boolean {
    return this.files.has(path);
  }

  readText(path: string): string {
    const t = this.files.get(path);
    if (t === undefined) throw errno('ENOENT');
    return t;
  }
}

const V2_LAYOUT = usable(cgroupLayout({ CgroupDriver: 'systemd', CgroupVersion: '2' }, ROOT, V2_FS));
const V1_LAYOUT = usable(cgroupLayout({ CgroupDriver: 'cgroupfs', CgroupVersion: '1' }, ROOT, V1_FS));
const NET = '/proc/4242/net/dev';

function v2Files(fs = new FakeFs(), memoryStat = V2_MEMORY_STAT): FakeFs {
  fs.files.set(V2_LAYOUT.cpuFile(ID), V2_CPU_STAT);
  fs.files.set(V2_LAYOUT.memoryFile(ID), '5709824\n');
  fs.files.set(V2_LAYOUT.memoryStatFile(ID), memoryStat);
  fs.files.set(NET, NET_DEV);
  return fs;
}

describe('ContainerCounterFiles', () => {
  it('cgroup v2: cpu from usage_usec in ns, memory as usage minus inactive_file, network from net/dev', () => {
    const fs = v2Files();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, NET);
    expect(files.hasNetwork).toBe(true);
    expect(fs.open_.size).toBe(4);
    const io = newReadBuffer();
    expect(files.read(io)).toEqual({ cpuNs: 8329113 * 1000, memoryBytes: 5709824 - 3366912, networkBytes: NET_DEV_TOTAL });
    expect(files.readCpu(io)).toBe(8329113 * 1000);
    // The same open files give the kernel's new numbers at the next read.
    fs.files.set(V2_LAYOUT.cpuFile(ID), V2_CPU_STAT.replace('usage_usec 8329113', 'usage_usec 9000000'));
    expect(files.read(io).cpuNs).toBe(9_000_000_000);
    expect(fs.open_.size).toBe(4);
    files.close();
  });

  it('cgroup v1: cpuacct.usage in ns, memory as usage_in_bytes minus total_inactive_file; no network file → 0', () => {
    const fs = new FakeFs();
    fs.files.set(V1_LAYOUT.cpuFile(ID), '19975725123\n');
    fs.files.set(V1_LAYOUT.memoryFile(ID), '4206592\n');
    fs.files.set(V1_LAYOUT.memoryStatFile(ID), V1_MEMORY_STAT);
    const files = new ContainerCounterFiles(fs, V1_LAYOUT, ID, undefined);
    expect(files.hasNetwork).toBe(false);
    expect(fs.open_.size).toBe(3);
    expect(files.read(newReadBuffer())).toEqual({ cpuNs: 19975725123, memoryBytes: 4206592 - 1900544, networkBytes: 0 });
    files.close();
  });

  it('memory is the whole usage when inactive_file is missing or not smaller', () => {
    const io = newReadBuffer();
    const a = new ContainerCounterFiles(v2Files(undefined, 'anon 1\nfile 2\n'), V2_LAYOUT, ID, undefined);
    expect(a.read(io).memoryBytes).toBe(5709824);
    const b = new ContainerCounterFiles(v2Files(undefined, 'anon 1\ninactive_file 9999999\n'), V2_LAYOUT, ID, undefined);
    expect(b.read(io).memoryBytes).toBe(5709824);
  });

  it('one shared buffer: a short file read after a long one parses only its own bytes', () => {
    // memory.stat (long) is read before net/dev; an empty inactive_file-less stat after a long one must not see the old key.
    const fs = v2Files();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, NET);
    const io = newReadBuffer();
    files.read(io); // fills the buffer with long contents
    fs.files.set(V2_LAYOUT.memoryStatFile(ID), 'anon 1\n');
    expect(files.read(io).memoryBytes).toBe(5709824);
  });

  it('grows the buffer for a file bigger than 16 KiB and reads it whole', () => {
    const padding = Array.from({ length: 800 }, (_, i) => `padding_counter_${i} ${i}`).join('\n');
    const big = `${padding}\ninactive_file 1000\n`;
    expect(big.length).toBeGreaterThan(16 * 1024);
    const fs = v2Files(undefined, big);
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, undefined);
    const io = newReadBuffer();
    expect(io.buf.length).toBe(16 * 1024);
    expect(files.read(io).memoryBytes).toBe(5709824 - 1000);
    expect(io.buf.length).toBeGreaterThanOrEqual(big.length);
    // Grown once: the next read needs one pread per file.
    const before = fs.preads;
    expect(files.read(io).memoryBytes).toBe(5709824 - 1000);
    expect(fs.preads - before).toBe(3);
  });

  it('a file of exactly the buffer size is read again into a bigger buffer (a full buffer may be a cut one)', () => {
    const fs = v2Files();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, undefined);
    const io = { buf: Buffer.alloc(V2_CPU_STAT.length) };
    expect(files.readCpu(io)).toBe(8329113 * 1000);
    expect(io.buf.length).toBe(2 * V2_CPU_STAT.length);
  });

  it('ENODEV on read (cgroup removed while open) is a CounterFileError with code ENODEV and the path', () => {
    const fs = v2Files();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, NET);
    fs.failing.set(V2_LAYOUT.cpuFile(ID), 'ENODEV');
    const io = newReadBuffer();
    let err: unknown;
    try {
      files.read(io);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CounterFileError);
    expect(err).toMatchObject({ code: 'ENODEV', path: V2_LAYOUT.cpuFile(ID), name: 'CounterFileError' });
    expect(GONE_CODES.has((err as CounterFileError).code)).toBe(true);
    expect(() => files.readCpu(io)).toThrowError(expect.objectContaining({ code: 'ENODEV' }));
    // The memory file alike.
    fs.failing.clear();
    fs.failing.set(V2_LAYOUT.memoryStatFile(ID), 'ENODEV');
    expect(() => files.read(io)).toThrowError(expect.objectContaining({ code: 'ENODEV', path: V2_LAYOUT.memoryStatFile(ID) }));
    files.close();
  });

  it('an error without an errno code is EIO; content that is no number is EBADMSG', () => {
    const fs = v2Files();
    const io = newReadBuffer();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, undefined);
    fs.pread = () => {
      throw new Error('boom');
    };
    expect(() => files.read(io)).toThrowError(expect.objectContaining({ code: 'EIO' }));

    const garbled = v2Files();
    garbled.files.set(V2_LAYOUT.cpuFile(ID), 'user_usec 1\n'); // no usage_usec
    expect(() => new ContainerCounterFiles(garbled, V2_LAYOUT, ID, undefined).read(io)).toThrowError(
      expect.objectContaining({ code: 'EBADMSG' }),
    );
    const garbledMemory = v2Files();
    garbledMemory.files.set(V2_LAYOUT.memoryFile(ID), 'max\n');
    expect(() => new ContainerCounterFiles(garbledMemory, V2_LAYOUT, ID, undefined).read(io)).toThrowError(
      expect.objectContaining({ code: 'EBADMSG' }),
    );
  });

  it('a file that cannot be opened: CounterFileError for that path, and the files opened before it are closed', () => {
    const fs = v2Files();
    fs.files.delete(V2_LAYOUT.memoryStatFile(ID));
    let err: unknown;
    try {
      new ContainerCounterFiles(fs, V2_LAYOUT, ID, NET);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CounterFileError);
    expect(err).toMatchObject({ code: 'ENOENT', path: V2_LAYOUT.memoryStatFile(ID) });
    expect(fs.open_.size).toBe(0);
    expect(fs.closed).toHaveLength(2);
  });

  it('close closes every fd once, is idempotent, and a read after it is EBADF', () => {
    const fs = v2Files();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, NET);
    const fds = [...fs.open_.keys()];
    expect(fds).toHaveLength(4);
    files.close();
    expect(fs.open_.size).toBe(0);
    expect([...fs.closed].sort()).toEqual([...fds].sort());
    files.close();
    expect(fs.closed).toHaveLength(4);
    expect(() => files.read(newReadBuffer())).toThrowError(expect.objectContaining({ code: 'EBADF' }));
  });

  it('close goes on past an fd that fails to close', () => {
    const fs = v2Files();
    const files = new ContainerCounterFiles(fs, V2_LAYOUT, ID, NET);
    const [first] = [...fs.open_.keys()];
    fs.close(first!); // closed behind its back: its close now throws EBADF
    expect(() => files.close()).not.toThrow();
    expect(fs.open_.size).toBe(0);
  });
});
