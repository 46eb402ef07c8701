import * as nodeFs from 'node:fs';

/**
 * Where Docker puts a container's cgroup, and how to read its counters from the open files cheaply.
 *
 * Layouts (Docker's default cgroup parent; `GET /info` reports CgroupVersion and CgroupDriver):
 * - v1, cgroupfs: `<root>/cpuacct/docker/<id>/cpuacct.usage`, `<root>/memory/docker/<id>/memory.{usage_in_bytes,stat}`
 * - v1, systemd:  the same under `system.slice/docker-<id>.scope` instead of `docker/<id>`
 * - v2, cgroupfs: `<root>/docker/<id>/{cpu.stat,memory.current,memory.stat}`
 * - v2, systemd:  `<root>/system.slice/docker-<id>.scope/…`
 * A daemon with another `cgroup-parent` is not found here: the sampler sees its containers missing
 * from the tree and reads them through the Engine API.
 *
 * Reading: each counter file stays open and is re-read with a positional read at offset 0 (a seq
 * file regenerates its text then), into one shared buffer, parsed from the bytes with indexOf and
 * digit loops: no string, no regex, no allocation per read in steady state. A cgroup removed while
 * its files are open (container stopped or restarted in place: same id, new cgroup) answers ENODEV.
 */

/** The few file operations used, so tests can stand in for the kernel's behaviour (ENODEV). */
export interface CgroupFs {
  open(path: string): number;
  /** Reads from offset 0 into buf; returns the byte count. */
  pread(fd: number, buf: Buffer): number;
  close(fd: number): void;
  list(dir: string): string[];
  exists(path: string): boolean;
  /** A small file's whole text (read once per container run, never per sample). */
  readText(path: string): string;
}

export const nodeCgroupFs: CgroupFs = {
  open: (path) => nodeFs.openSync(path, 'r'),
  pread: (fd, buf) => nodeFs.readSync(fd, buf, 0, buf.length, 0),
  close: (fd) => nodeFs.closeSync(fd),
  list: (dir) => nodeFs.readdirSync(dir),
  exists: (path) => nodeFs.existsSync(path),
  readText: (path) => nodeFs.readFileSync(path, 'latin1'),
};

export interface CgroupLayout {
  version: 1 | 2;
  driver: 'cgroupfs' | 'systemd';
  /** Listed once per sample: one entry per running container (and other units under systemd). */
  parent: string;
  /** The container id a directory entry of `parent` names, or undefined. */
  idOf(entry: string): string | undefined;
  cpuFile(id: string): string;
  memoryFile(id: string): string;
  memoryStatFile(id: string): string;
  /** The container's cgroup directory (its existence says the container is in this tree). */
  dirOf(id: string): string;
}

const ID = /^[0-9a-f]{64}$/;

/**
 * The layout for a daemon's `GET /info` answer, or a reason why the tree cannot be used (no
 * cgroup filesystem mounted at `root`, as in a container without the host's, or an unknown driver).
 */
export function cgroupLayout(
  info: { CgroupDriver?: unknown; CgroupVersion?: unknown },
  root: string,
  fs: CgroupFs = nodeCgroupFs,
): CgroupLayout | { unusable: string } {
  const driver = info.CgroupDriver;
  // Engines before 20.10 do not report the version: those only ran on v1.
  const version =
    info.CgroupVersion === undefined || info.CgroupVersion === null || info.CgroupVersion === '' ? '1' : String(info.CgroupVersion);
  if (driver !== 'cgroupfs' && driver !== 'systemd')
    return { unusable: `cgroup driver ${JSON.stringify(driver)} is not one this sampler knows` };
  const under = (ctl: string) => (driver === 'cgroupfs' ? `${ctl}/docker` : `${ctl}/system.slice`);
  const name = (id: string) => (driver === 'cgroupfs' ? id : `docker-${id}.scope`);
  const idOf =
    driver === 'cgroupfs'
      ? (e: string) => (ID.test(e) ? e : undefined)
      : (e: string) => (e.startsWith('docker-') && e.endsWith('.scope') && ID.test(e.slice(7, -6)) ? e.slice(7, -6) : undefined);
  if (version === '2') {
    if (!fs.exists(`${root}/cgroup.controllers`)) return { unusable: `no cgroup v2 filesystem at ${root}` };
    const dir = (id: string) => `${under(root)}/${name(id)}`;
    return {
      version: 2,
      driver,
      parent: under(root),
      idOf,
      dirOf: dir,
      cpuFile: (id) => `${dir(id)}/cpu.stat`,
      memoryFile: (id) => `${dir(id)}/memory.current`,
      memoryStatFile: (id) => `${dir(id)}/memory.stat`,
    };
  }
  if (version !== '1') return { unusable: `cgroup version ${JSON.stringify(version)} is not one this sampler knows` };
  // cpuacct is usually co-mounted with cpu (`cpu,cpuacct`) and reached through a `cpuacct` symlink.
  const cpuacct = ['cpuacct', 'cpu,cpuacct', 'cpuacct,cpu'].map((c) => `${root}/${c}`).find((p) => fs.exists(`${p}/cpuacct.usage`));
  if (!cpuacct || !fs.exists(`${root}/memory/memory.usage_in_bytes`))
    return { unusable: `no cgroup v1 cpuacct and memory hierarchies under ${root}` };
  return {
    version: 1,
    driver,
    parent: under(cpuacct),
    idOf,
    dirOf: (id) => `${under(cpuacct)}/${name(id)}`,
    cpuFile: (id) => `${under(cpuacct)}/${name(id)}/cpuacct.usage`,
    memoryFile: (id) => `${under(`${root}/memory`)}/${name(id)}/memory.usage_in_bytes`,
    memoryStatFile: (id) => `${under(`${root}/memory`)}/${name(id)}/memory.stat`,
  };
}

// ---- parsing from bytes ----

const NL = 0x0a;
const SPACE = 0x20;
const COLON = 0x3a;

/** The unsigned integer at `from` (after blanks), or NaN when there is none before `end`. */
export function uintAt(buf: Buffer, from: number, end: number): number {
  let i = from;
  while (i < end && (buf[i] === SPACE || buf[i] === 0x09)) i++;
  let v = 0;
  const start = i;
  for (; i < end; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9) break;
    v = v * 10 + d;
  }
  return i === start ? Number.NaN : v;
}

/** The value of `key` (given with its trailing space) in a `key value` per line file, or undefined. */
export function statValue(buf: Buffer, len: number, key: Buffer): number | undefined {
  let at: number;
  if (len >= key.length - 1 && buf.compare(key, 1, key.length, 0, key.length - 1) === 0) {
    at = 0; // the key is on the first line (no newline before it)
  } else {
    at = buf.indexOf(key);
    // Bytes past `len` are a previous, longer read's: a match there is stale.
    if (at < 0 || at + key.length > len) return undefined;
    at += 1;
  }
  const v = uintAt(buf, at + key.length - 1, len);
  return Number.isNaN(v) ? undefined : v;
}

/** `\nkey ` as a needle for statValue. */
export function statKey(key: string): Buffer {
  return Buffer.from(`\n${key} `, 'latin1');
}

/**
 * rx + tx bytes over every interface but `lo`, from /proc/<pid>/net/dev:
 * two header lines, then `  name: rxBytes rxPackets … (8 rx fields) txBytes …`.
 */
export function netDevBytes(buf: Buffer, len: number): number {
  let total = 0;
  let line = buf.indexOf(NL);
  if (line < 0 || line >= len) return 0;
  line = buf.indexOf(NL, line + 1);
  while (line >= 0 && line + 1 < len) {
    const start = line + 1;
    let end = buf.indexOf(NL, start);
    if (end < 0 || end > len) end = len;
    const colon = buf.indexOf(COLON, start);
    if (colon > start && colon < end) {
      let n = start;
      while (buf[n] === SPACE) n++;
      const isLo = colon - n === 2 && buf[n] === 0x6c && buf[n + 1] === 0x6f; // "lo"
      if (!isLo) {
        let i = colon + 1;
        for (let field = 0; field < 9 && i < end; field++) {
          while (i < end && buf[i] === SPACE) i++;
          const v = uintAt(buf, i, end);
          if (field === 0 || field === 8) total += Number.isNaN(v) ? 0 : v;
          while (i < end && buf[i] !== SPACE) i++;
        }
      }
    }
    line = end < len ? end : -1;
  }
  return total;
}

/** Memory in use as `docker stats` computes it (CLI ≥ 20.10): usage minus inactive file cache, when smaller. */
export function usageLessInactive(usage: number, inactive: number | undefined): number {
  return inactive !== undefined && inactive < usage ? usage - inactive : usage;
}

// ---- one container's open counter files ----

export interface CounterReading {
  cpuNs: number;
  memoryBytes: number;
  networkBytes: number;
}

const V1_INACTIVE = statKey('total_inactive_file');
const V2_INACTIVE = statKey('inactive_file');
const V2_USAGE_USEC = statKey('usage_usec');

/** Thrown by open/read: `code` is the errno name (ENODEV: the cgroup went away). */
export class CounterFileError extends Error {
  constructor(
    readonly code: string,
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'CounterFileError';
  }
}

function codeOf(err: unknown): string {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'string' ? c : 'EIO';
}

/** Errors that mean "this cgroup or process is gone", not "cannot read". */
export const GONE_CODES: ReadonlySet<string> = new Set(['ENODEV', 'ENOENT', 'ESRCH']);

/**
 * The open files of one container run. The network file is /proc/<pid>/net/dev of its init
 * process: it pins the container's network namespace while open, so it is closed as soon as the
 * cgroup files report the run ended (the sampler reads those first).
 */
export class ContainerCounterFiles {
  readonly #fs: CgroupFs;
  readonly #version: 1 | 2;
  readonly #fds: number[] = [];
  readonly #paths: string[] = [];
  #closed = false;

  /** Opens cpu, memory and memory.stat, and the network file when `netPath` is given; throws CounterFileError. */
  constructor(fs: CgroupFs, layout: CgroupLayout, id: string, netPath: string | undefined) {
    this.#fs = fs;
    this.#version = layout.version;
    const paths = [layout.cpuFile(id), layout.memoryFile(id), layout.memoryStatFile(id)];
    if (netPath !== undefined) paths.push(netPath);
    try {
      for (const p of paths) {
        this.#paths.push(p);
        this.#fds.push(fs.open(p));
      }
    } catch (err) {
      this.close();
      const p = this.#paths.at(-1)!;
      throw new CounterFileError(codeOf(err), p, `${p}: ${(err as Error).message}`);
    }
  }

  get hasNetwork(): boolean {
    return this.#fds.length === 4;
  }

  /** CPU only (a cheap probe that the run still exists); throws CounterFileError. */
  readCpu(io: ReadBuffer): number {
    const len = this.#read(io, 0);
    return this.#version === 1 ? uintAt(io.buf, 0, len) : (statValue(io.buf, len, V2_USAGE_USEC) ?? Number.NaN) * 1000;
  }

  /** All counters; network is 0 without a network file. Throws CounterFileError. */
  read(io: ReadBuffer): CounterReading {
    const cpuNs = this.readCpu(io);
    let len = this.#read(io, 1);
    const usage = uintAt(io.buf, 0, len);
    len = this.#read(io, 2);
    const inactive = statValue(io.buf, len, this.#version === 1 ? V1_INACTIVE : V2_INACTIVE);
    let networkBytes = 0;
    if (this.#fds.length === 4) networkBytes = netDevBytes(io.buf, this.#read(io, 3));
    if (!Number.isFinite(cpuNs) || !Number.isFinite(usage)) {
      const bad = this.#paths[Number.isFinite(cpuNs) ? 1 : 0]!;
      throw new CounterFileError('EBADMSG', bad, `unexpected content in ${bad}`);
    }
    const memoryBytes = usageLessInactive(usage, inactive);
    return { cpuNs, memoryBytes, networkBytes };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fd of this.#fds) {
      try {
        this.#fs.close(fd);
      } catch {
        // already closed: nothing to release
      }
    }
  }

  #read(io: ReadBuffer, i: number): number {
    if (this.#closed) throw new CounterFileError('EBADF', this.#paths[i]!, 'read after close');
    for (;;) {
      let n: number;
      try {
        n = this.#fs.pread(this.#fds[i]!, io.buf);
      } catch (err) {
        throw new CounterFileError(codeOf(err), this.#paths[i]!, `${this.#paths[i]}: ${(err as Error).message}`);
      }
      if (n < io.buf.length || io.buf.length >= MAX_BUFFER) return n;
      io.buf = Buffer.allocUnsafe(io.buf.length * 2); // a file larger than the buffer: grow once and read again
    }
  }
}

const MAX_BUFFER = 1024 * 1024;

/** The one buffer every read goes into (grown when a file does not fit). */
export interface ReadBuffer {
  buf: Buffer;
}

export function newReadBuffer(): ReadBuffer {
  return { buf: Buffer.allocUnsafe(16 * 1024) };
}
