import { describe, expect, it } from 'vitest';
import type { CgroupFs } from '../../src/swarm/cgroup-files.js';
import { createCgroupStatsSampler } from '../../src/swarm/container-stats-cgroup.js';
import type {
  ContainerStatsOptions,
  ContainerStatsSampler,
  EngineStats,
  ListedContainer,
  StatsSnapshot,
} from '../../src/swarm/container-stats-engine.js';
import { EngineError, type EngineClient, type EngineRequest } from '../../src/swarm/docker-client.js';
import { LABEL, ownershipFilter } from '../../src/domain/labels.js';

// ---- the kernel: an in-memory cgroup and proc tree ----

function errno(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

class MemFs implements CgroupFs {
  /** path → content, as a read at offset 0 regenerates it. */
  readonly files = new Map<string, string>();
  /** Directories that exist without files under them. */
  readonly dirs = new Set<string>();
  /** Open fds: the path, and the errno a read answers (ENODEV once its cgroup is removed). */
  readonly fds = new Map<number, { path: string; error?: string }>();
  /** Every open, in order. */
  readonly opened: string[] = [];
  /** Paths whose reads are refused. */
  readonly denied = new Set<string>();
  /** An errno for `list` of a directory (other than missing). */
  readonly listErrors = new Map<string, string>();
  #next = 3;

  open(path: string): number {
    if (this.denied.has(path)) throw errno('EACCES', `permission denied, open '${path}'`);
    if (!this.files.has(path)) throw errno('ENOENT', `no such file or directory, open '${path}'`);
    const fd = this.#next++;
    this.fds.set(fd, { path });
    this.opened.push(path);
    return fd;
  }

  pread(fd: number, buf: Buffer): number {
    const f = this.fds.get(fd);
    if (!f) throw errno('EBADF', 'bad file descriptor, read');
    if (f.error) throw errno(f.error, `read '${f.path}'`);
    const bytes = Buffer.from(this.files.get(f.path) ?? '', 'latin1');
    return bytes.copy(buf, 0, 0, Math.min(bytes.length, buf.length));
  }

  close(fd: number): void {
    if (!this.fds.delete(fd)) throw errno('EBADF', 'bad file descriptor, close');
  }

  list(dir: string): string[] {
    const code = this.listErrors.get(dir);
    if (code) throw errno(code, `scandir '${dir}'`);
    const out = new Set<string>();
    const prefix = `${dir}/`;
    for (const p of [...this.files.keys(), ...this.dirs]) if (p.startsWith(prefix)) out.add(p.slice(prefix.length).split('/')[0]!);
    if (out.size === 0 && !this.dirs.has(dir)) throw errno('ENOENT', `no such file or directory, scandir '${dir}'`);
    return [...out].sort();
  }

  exists(path: string): boolean {
    if (this.files.has(path) || this.dirs.has(path)) return true;
    for (const p of [...this.files.keys(), ...this.dirs]) if (p.startsWith(`${path}/`)) return true;
    return false;
  }

  readText(path: string): string {
    if (this.denied.has(path)) throw errno('EACCES', `permission denied, open '${path}'`);
    const t = this.files.get(path);
    if (t === undefined) throw errno('ENOENT', `no such file or directory, open '${path}'`);
    return t;
  }

  /** Removes a directory tree; the fds open on files under it answer `code` from now on, as the kernel's do. */
  removeTree(dir: string, code = 'ENODEV'): void {
    for (const p of [...this.files.keys()]) if (p.startsWith(`${dir}/`)) this.files.delete(p);
    this.dirs.delete(dir);
    this.breakOpen(dir, code);
  }

  /** The fds open on `path` (or under it) answer `code` from now on. */
  breakOpen(path: string, code = 'ENODEV'): void {
    for (const f of this.fds.values()) if (f.path === path || f.path.startsWith(`${path}/`)) f.error = code;
  }

  openPaths(): string[] {
    return [...this.fds.values()].map((f) => f.path).sort();
  }
}

// ---- dockerd: the Engine API answers the sampler uses ----

interface FakeContainer {
  id: string;
  labels: Record<string, string>;
  running: boolean;
  startedAt: string;
  created: string;
  pid: number;
  networkMode: string;
  sizeRw: number;
  stats: { cpuNs: number; usage: number; inactive: number; rx: number; tx: number };
}

class FakeEngine {
  info: Record<string, unknown> = { CgroupDriver: 'systemd', CgroupVersion: '2' };
  readonly containers = new Map<string, FakeContainer>();
  readonly calls: EngineRequest[] = [];
  /** Makes the next requests for `METHOD path` fail with this status. */
  readonly failures = new Map<string, number>();
  readAt = '2026-03-01T12:00:00.5Z';
  /** dockerd's clock, for the `Up …` status lines. */
  now = () => Date.parse('2026-03-01T12:00:00Z');

  readonly client = { request: async (req: EngineRequest) => this.#answer(req) } as unknown as EngineClient;

  /** `METHOD path` of every call since `from`. */
  since(from: number): string[] {
    return this.calls.slice(from).map((c) => `${c.method} ${c.path}`);
  }

  #answer(req: EngineRequest): unknown {
    this.calls.push(req);
    const failure = this.failures.get(`${req.method} ${req.path}`);
    if (failure !== undefined) throw new EngineError(failure, { message: 'injected' }, 'injected');
    if (req.method === 'GET' && req.path === '/info') return structuredClone(this.info);
    if (req.method === 'GET' && req.path === '/containers/json') return this.#list(req.query ?? {});
    const m = /^\/containers\/([^/]+)\/(json|stats)$/.exec(req.path);
    if (req.method === 'GET' && m) {
      const c = this.containers.get(decodeURIComponent(m[1]!));
      if (!c) throw new EngineError(404, { message: `No such container: ${m[1]}` }, `No such container: ${m[1]}`);
      return m[2] === 'json' ? this.#inspect(c) : this.#stats(c);
    }
    throw new Error(`unexpected call ${req.method} ${req.path}`);
  }

  #list(query: Record<string, unknown>): ListedContainer[] {
    const filters = JSON.parse(typeof query.filters === 'string' ? query.filters : '{}') as { label?: string[]; id?: string[] };
    const all = query.all === true || query.all === 'true' || query.all === 1;
    const size = query.size === true || query.size === 'true' || query.size === 1;
    const out: ListedContainer[] = [];
    for (const c of this.containers.values()) {
      if (!all && !c.running) continue;
      if (filters.id && !filters.id.some((f) => c.id.startsWith(f))) continue;
      const labelsMatch = (filters.label ?? []).every((f) => {
        const eq = f.indexOf('=');
        return eq < 0 ? f in c.labels : c.labels[f.slice(0, eq)] === f.slice(eq + 1);
      });
      if (!labelsMatch) continue;
      out.push({
        Id: c.id,
        Labels: { ...c.labels },
        State: c.running ? 'running' : 'exited',
        Status: c.running ? `Up ${humanDuration(this.now() - Date.parse(c.startedAt))}` : 'Exited (0) 2 seconds ago',
        Created: Math.floor(Date.parse(c.created) / 1000),
        ...(size ? { SizeRw: c.sizeRw } : {}),
      });
    }
    return out;
  }

  #inspect(c: FakeContainer): unknown {
    return {
      Id: c.id,
      Created: c.created,
      State: { Running: c.running, StartedAt: c.startedAt, Pid: c.running ? c.pid : 0 },
      HostConfig: { NetworkMode: c.networkMode },
    };
  }

  #stats(c: FakeContainer): EngineStats {
    if (!c.running) return { read: '0001-01-01T00:00:00Z' };
    const s = c.stats;
    return {
      read: this.readAt,
      cpu_stats: { cpu_usage: { total_usage: s.cpuNs } },
      memory_stats: { usage: s.usage, stats: { inactive_file: s.inactive } },
      networks: c.networkMode === 'host' ? null : { eth0: { rx_bytes: s.rx, tx_bytes: s.tx } },
    };
  }
}

/** Docker's HumanDuration, as in `docker ps` status lines (the part this fake needs). */
function humanDuration(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec < 1) return 'Less than a second';
  if (sec < 60) return `${sec} seconds`;
  const min = Math.floor(sec / 60);
  if (min === 1) return 'About a minute';
  if (min < 60) return `${min} minutes`;
  const h = Math.round(sec / 3600);
  return h === 1 ? 'About an hour' : `${h} hours`;
}

// ---- a worker host: both, kept consistent ----

const ROOT = '/sys/fs/cgroup';
const PROC = '/proc';
const WORKER = 'wkr-1';

const idOf = (n: number) => n.toString(16).padStart(4, '0').repeat(16);

interface Counters {
  cpuUsec: number;
  memory: number;
  inactive: number;
  rx: number;
  tx: number;
}

interface Spec {
  id: string;
  labels?: Record<string, string>;
  pid?: number;
  startedAt?: string;
  networkMode?: string;
  running?: boolean;
  counters?: Partial<Counters>;
  /** Write /proc/<pid>/cgroup naming this id (default: the container's own). */
  procCgroupId?: string;
}

function ours(deployment: string | undefined, extra: Record<string, string> = {}): Record<string, string> {
  const l: Record<string, string> = {
    [LABEL.managed]: 'true',
    [LABEL.workerId]: WORKER,
    [LABEL.serviceId]: `svc-of-${deployment ?? 'none'}`,
    [LABEL.organizationId]: 'org-7',
    'com.docker.swarm.task.id': 'x2p3ph0d8c0y6m6l7e2z1q9ab',
    ...extra,
  };
  if (deployment !== undefined) l[LABEL.deploymentId] = deployment;
  return l;
}

const netDev = (rx: number, tx: number) =>
  [
    'Inter-|   Receive                                                |  Transmit',
    ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
    '    lo:     640       8    0    0    0     0          0         0      640       8    0    0    0     0       0          0',
    `  eth0: ${String(rx).padStart(7)}      90    0    0    0     0          0         0  ${String(tx).padStart(7)}      45    0    0    0     0       0          0`,
    '',
  ].join('\n');

/** cgroup v2 host (systemd or cgroupfs driver) with dockerd. */
class Host {
  readonly fs = new MemFs();
  readonly engine = new FakeEngine();
  readonly clock = { wall: Date.parse('2026-03-01T12:00:00Z'), mono: 1_000 };
  workerId = WORKER;
  #pid = 4000;
  #counters = new Map<string, Counters>();

  constructor(readonly driver: 'systemd' | 'cgroupfs' = 'systemd') {
    this.engine.info = { CgroupDriver: driver, CgroupVersion: '2', ServerVersion: '27.3.1' };
    this.engine.now = () => this.clock.wall;
    this.fs.files.set(`${ROOT}/cgroup.controllers`, 'cpuset cpu io memory hugetlb pids rdma misc\n');
    if (driver === 'systemd') {
      // Other units live under system.slice too.
      this.fs.files.set(`${ROOT}/system.slice/docker.service/cgroup.procs`, '812\n');
      this.fs.files.set(`${ROOT}/system.slice/containerd.service/cgroup.procs`, '640\n');
      this.fs.files.set(`${ROOT}/system.slice/docker.socket/cgroup.procs`, '');
    }
  }

  get parent(): string {
    return this.driver === 'systemd' ? `${ROOT}/system.slice` : `${ROOT}/docker`;
  }

  dir(id: string): string {
    return this.driver === 'systemd' ? `${this.parent}/docker-${id}.scope` : `${this.parent}/${id}`;
  }

  /** A running container: its cgroup, its init process, and dockerd's record of it. */
  add(spec: Spec): FakeContainer {
    const running = spec.running ?? true;
    const c: FakeContainer = {
      id: spec.id,
      labels: spec.labels ?? ours('dep-1'),
      running,
      startedAt: spec.startedAt ?? '2026-03-01T11:00:00.123456789Z',
      created: '2026-03-01T10:59:59.5Z',
      pid: spec.pid ?? this.#pid++,
      networkMode: spec.networkMode ?? 'overlay-net',
      sizeRw: 4096,
      stats: { cpuNs: 0, usage: 0, inactive: 0, rx: 0, tx: 0 },
    };
    this.engine.containers.set(c.id, c);
    if (running) {
      const procId = spec.procCgroupId ?? c.id;
      const cg = this.driver === 'systemd' ? `/system.slice/docker-${procId}.scope` : `/docker/${procId}`;
      this.fs.files.set(`${PROC}/${c.pid}/cgroup`, `0::${cg}\n`);
      this.set(c.id, { cpuUsec: 1_500_000, memory: 10_000_000, inactive: 2_000_000, rx: 5_000, tx: 3_000, ...spec.counters });
    }
    return c;
  }

  /** New counter values: the kernel regenerates the files, the Engine reports the same. */
  set(id: string, counters: Partial<Counters>): void {
    const c = { ...(this.#counters.get(id) ?? { cpuUsec: 0, memory: 0, inactive: 0, rx: 0, tx: 0 }), ...counters };
    this.#counters.set(id, c);
    const d = this.dir(id);
    this.fs.files.set(
      `${d}/cpu.stat`,
      `usage_usec ${c.cpuUsec}\nuser_usec ${Math.floor(c.cpuUsec / 2)}\nsystem_usec ${Math.ceil(c.cpuUsec / 2)}\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n`,
    );
    this.fs.files.set(`${d}/memory.current`, `${c.memory}\n`);
    this.fs.files.set(
      `${d}/memory.stat`,
      `anon 4096000\nfile 6000000\nfile_mapped 100\ninactive_anon 0\nactive_anon 4096000\ninactive_file ${c.inactive}\nactive_file 1000\nunevictable 0\n`,
    );
    const fc = this.engine.containers.get(id);
    if (fc) {
      this.fs.files.set(`${PROC}/${fc.pid}/net/dev`, netDev(c.rx, c.tx));
      fc.stats = { cpuNs: c.cpuUsec * 1000, usage: c.memory, inactive: c.inactive, rx: c.rx, tx: c.tx };
    }
  }

  /** Stopped and removed: the cgroup and the process are gone, and so is dockerd's record. */
  remove(id: string): void {
    const c = this.engine.containers.get(id)!;
    this.fs.removeTree(this.dir(id));
    this.fs.removeTree(`${PROC}/${c.pid}`, 'ESRCH');
    this.engine.containers.delete(id);
  }

  /** Restarted in place: same id, a new cgroup of the same name (old fds answer ENODEV), a new pid and start. */
  restart(id: string, startedAt: string, counters: Partial<Counters>): void {
    const c = this.engine.containers.get(id)!;
    this.fs.removeTree(this.dir(id));
    this.fs.removeTree(`${PROC}/${c.pid}`, 'ESRCH');
    this.#counters.delete(id);
    c.pid = this.#pid++;
    c.startedAt = startedAt;
    const cg = this.driver === 'systemd' ? `/system.slice/docker-${id}.scope` : `/docker/${id}`;
    this.fs.files.set(`${PROC}/${c.pid}/cgroup`, `0::${cg}\n`);
    this.set(id, { cpuUsec: 0, memory: 0, inactive: 0, rx: 0, tx: 0, ...counters });
  }

  sampler(opts: Partial<ContainerStatsOptions> = {}): Required<ContainerStatsSampler> {
    return closable(
      createCgroupStatsSampler(this.engine.client, {
        workerId: () => this.workerId,
        now: () => this.clock.wall,
        mono: () => this.clock.mono,
        cgroupRoot: ROOT,
        procRoot: PROC,
        fs: this.fs,
        ...opts,
      }),
    );
  }

  /** Time passes between samples (less than the storage interval unless told). */
  tick(ms = 15_000): void {
    this.clock.wall += ms;
    this.clock.mono += ms;
  }
}

/** The cgroup sampler holds files open: it must have close(). */
function closable(s: ContainerStatsSampler): Required<ContainerStatsSampler> {
  const close = s.close;
  if (!close) throw new Error('the cgroup sampler has no close()');
  return { sample: () => s.sample(), close: () => close.call(s) };
}

/** Lets background work (the storage-size list) settle between samples. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

const byId = (s: StatsSnapshot) => new Map(s.containers.map((c) => [c.containerId, c]));

const A = idOf(0xa1);
const B = idOf(0xb2);
const C = idOf(0xc3);
const F = idOf(0xf0);

// ---- cases ----

describe('cgroup stats sampler: steady state', () => {
  it('after the first sample, readings come from the open files with zero Engine calls', async () => {
    const host = new Host();
    host.add({
      id: A,
      labels: ours('dep-1'),
      startedAt: '2026-03-01T11:00:00.250Z',
      counters: { cpuUsec: 1_500_000, memory: 10_000_000, inactive: 2_000_000, rx: 5_000, tx: 3_000 },
    });
    host.add({
      id: B,
      labels: ours('dep-2', { [LABEL.serviceId]: 'svc-b', [LABEL.organizationId]: 'org-b' }),
      startedAt: '2026-03-01T11:30:00Z',
    });
    const sampler = host.sampler();

    const first = await sampler.sample();
    // /info once, one list for both new ids, one inspect each, and the background size list.
    expect(host.engine.since(0).sort()).toEqual(
      ['GET /info', 'GET /containers/json', `GET /containers/${A}/json`, `GET /containers/${B}/json`, 'GET /containers/json'].sort(),
    );
    const discovery = host.engine.calls.find((c) => c.path === '/containers/json' && c.query?.all === true)!;
    expect(JSON.parse(discovery.query!.filters as string)).toEqual({ label: ownershipFilter(WORKER), id: [A, B] });
    expect(first.failed).toEqual({ count: 0 });
    expect(first.via).toEqual({ cgroup: 2, engine: 0 });
    expect(first.listedAtMs).toBe(host.clock.wall);
    expect(first.wallMs).toBe(host.clock.wall);
    expect(first.monoMs).toBe(host.clock.mono);
    expect(byId(first).get(A)).toEqual({
      containerId: A,
      deploymentId: 'dep-1',
      serviceId: 'svc-of-dep-1',
      organizationId: 'org-7',
      startedAtMs: Date.parse('2026-03-01T11:00:00.250Z'),
      cpuNs: 1_500_000_000,
      memoryBytes: 8_000_000,
      networkBytes: 8_000,
      storageBytes: undefined,
    });
    expect(byId(first).get(B)).toMatchObject({
      deploymentId: 'dep-2',
      serviceId: 'svc-b',
      organizationId: 'org-b',
      startedAtMs: Date.parse('2026-03-01T11:30:00Z'),
    });

    await settle();
    const before = host.engine.calls.length;
    for (let i = 1; i <= 5; i++) {
      host.tick();
      host.set(A, { cpuUsec: 1_500_000 + i * 100_000, rx: 5_000 + i, memory: 11_000_000 });
      const s = await sampler.sample();
      expect(s.via).toEqual({ cgroup: 2, engine: 0 });
      expect(s.wallMs).toBe(host.clock.wall);
      expect(byId(s).get(A)).toMatchObject({
        cpuNs: (1_500_000 + i * 100_000) * 1000,
        networkBytes: 8_000 + i,
        memoryBytes: 9_000_000,
        storageBytes: 4096,
      });
    }
    expect(host.engine.since(before)).toEqual([]);
    // Files opened once: 4 per container (cpu.stat, memory.current, memory.stat, net/dev).
    expect(host.fs.opened).toHaveLength(8);
    expect(host.fs.fds.size).toBe(8);
    sampler.close();
  });

  it('the storage interval brings one size list, in the background', async () => {
    const host = new Host();
    host.add({ id: A });
    const sampler = host.sampler({ storageIntervalMs: 60_000 });
    await sampler.sample();
    await settle();
    host.engine.containers.get(A)!.sizeRw = 8192;
    const before = host.engine.calls.length;
    host.tick(30_000);
    await sampler.sample();
    expect(host.engine.since(before)).toEqual([]);
    host.tick(30_000);
    await sampler.sample();
    const sizeCalls = host.engine.calls.slice(before);
    expect(sizeCalls.map((c) => `${c.method} ${c.path}`)).toEqual(['GET /containers/json']);
    expect(sizeCalls[0]!.query).toMatchObject({ size: true });
    expect(JSON.parse(sizeCalls[0]!.query!.filters as string)).toEqual({ label: ownershipFilter(WORKER) });
    await settle();
    host.tick(1_000);
    expect(byId(await sampler.sample()).get(A)!.storageBytes).toBe(8192);
    sampler.close();
  });

  it('reads the cgroup v1 layout (cgroupfs driver): cpuacct.usage, usage_in_bytes minus total_inactive_file', async () => {
    const fs = new MemFs();
    const engine = new FakeEngine();
    engine.info = { CgroupDriver: 'cgroupfs', CgroupVersion: '1' };
    fs.files.set(`${ROOT}/cpu,cpuacct/cpuacct.usage`, '999999999999\n');
    fs.files.set(`${ROOT}/memory/memory.usage_in_bytes`, '8000000000\n');
    const cpuDir = `${ROOT}/cpu,cpuacct/docker/${A}`;
    const memDir = `${ROOT}/memory/docker/${A}`;
    fs.files.set(`${cpuDir}/cpuacct.usage`, '19975725123\n');
    fs.files.set(`${memDir}/memory.usage_in_bytes`, '4206592\n');
    fs.files.set(
      `${memDir}/memory.stat`,
      'cache 2461696\nrss 1744896\ninactive_file 1\ntotal_cache 2461696\ntotal_inactive_file 1900544\ntotal_active_file 557056\n',
    );
    fs.files.set(`${PROC}/777/cgroup`, `12:memory:/docker/${A}\n4:cpu,cpuacct:/docker/${A}\n1:name=systemd:/docker/${A}\n`);
    fs.files.set(`${PROC}/777/net/dev`, netDev(100, 23));
    engine.containers.set(A, {
      id: A,
      labels: ours('dep-v1'),
      running: true,
      startedAt: '2026-03-01T11:00:00Z',
      created: '2026-03-01T10:00:00Z',
      pid: 777,
      networkMode: 'bridge',
      sizeRw: 0,
      stats: { cpuNs: 0, usage: 0, inactive: 0, rx: 0, tx: 0 },
    });
    const sampler = closable(
      createCgroupStatsSampler(engine.client, {
        workerId: () => WORKER,
        now: () => 1,
        mono: () => 1,
        cgroupRoot: ROOT,
        procRoot: PROC,
        fs,
      }),
    );
    const s = await sampler.sample();
    expect(s.containers).toEqual([
      {
        containerId: A,
        deploymentId: 'dep-v1',
        serviceId: 'svc-of-dep-v1',
        organizationId: 'org-7',
        startedAtMs: Date.parse('2026-03-01T11:00:00Z'),
        cpuNs: 19975725123,
        memoryBytes: 4206592 - 1900544,
        networkBytes: 123,
        storageBytes: undefined,
      },
    ]);
    expect(s.via).toEqual({ cgroup: 1, engine: 0 });
    sampler.close();
    expect(fs.fds.size).toBe(0);
  });
});

describe('cgroup stats sampler: which containers are metered', () => {
  it('a foreign container is asked about once, then never again', async () => {
    const host = new Host();
    host.add({ id: A });
    host.add({ id: F, labels: { 'com.example.app': 'db' } }); // made by hand
    host.add({ id: C, labels: { ...ours('dep-9'), [LABEL.workerId]: 'another-worker' } }); // another worker's
    const sampler = host.sampler();
    const first = await sampler.sample();
    expect(first.containers.map((c) => c.containerId)).toEqual([A]);
    const discovery = host.engine.calls.filter((c) => c.path === '/containers/json' && c.query?.all === true);
    expect(discovery).toHaveLength(1);
    expect(JSON.parse(discovery[0]!.query!.filters as string).id.sort()).toEqual([A, C, F].sort());
    // Neither was inspected nor had a file opened.
    expect(host.engine.since(0)).not.toContain(`GET /containers/${F}/json`);
    expect(host.engine.since(0)).not.toContain(`GET /containers/${C}/json`);
    expect(host.fs.opened.filter((p) => p.includes(F) || p.includes(C))).toEqual([]);

    await settle();
    const before = host.engine.calls.length;
    for (let i = 0; i < 3; i++) {
      host.tick();
      const s = await sampler.sample();
      expect(s.containers.map((c) => c.containerId)).toEqual([A]);
      expect(s.failed.count).toBe(0);
    }
    expect(host.engine.since(before)).toEqual([]);
    sampler.close();
  });

  it('a container of ours without a deployment label is not metered (nor inspected, nor opened)', async () => {
    const host = new Host();
    host.add({ id: A, labels: ours(undefined) });
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.containers).toEqual([]);
    expect(s.failed).toEqual({ count: 0 });
    expect(host.engine.since(0)).not.toContain(`GET /containers/${A}/json`);
    expect(host.fs.opened).toEqual([]);
    await settle();
    const before = host.engine.calls.length;
    host.tick();
    expect((await sampler.sample()).containers).toEqual([]);
    expect(host.engine.since(before)).toEqual([]);
  });

  it('a new container appearing later costs one list (its id only) and one inspect', async () => {
    const host = new Host();
    host.add({ id: A });
    const sampler = host.sampler();
    await sampler.sample();
    await settle();
    host.tick();
    await sampler.sample();

    host.add({ id: B, labels: ours('dep-2'), startedAt: '2026-03-01T12:00:10Z' });
    host.tick();
    const before = host.engine.calls.length;
    const s = await sampler.sample();
    expect(host.engine.since(before)).toEqual(['GET /containers/json', `GET /containers/${B}/json`]);
    const list = host.engine.calls[before]!;
    expect(list.query).toMatchObject({ all: true });
    expect(JSON.parse(list.query!.filters as string)).toEqual({ label: ownershipFilter(WORKER), id: [B] });
    expect([...byId(s).keys()].sort()).toEqual([A, B].sort());
    expect(byId(s).get(B)!.startedAtMs).toBe(Date.parse('2026-03-01T12:00:10Z'));
    sampler.close();
  });

  it('a slow Engine does not hold up the sample: known containers are read at once, the new one from the next sample on', async () => {
    const host = new Host();
    host.add({ id: A });
    const sampler = host.sampler();
    await sampler.sample();
    await settle();

    // dockerd stalls (a burst of container starts): the list that would classify B hangs.
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const answer = host.engine.client.request.bind(host.engine.client);
    (host.engine.client as unknown as { request: EngineClient['request'] }).request = async <T>(req: EngineRequest): Promise<T> => {
      if (req.path === '/containers/json') await stalled;
      return answer<T>(req);
    };
    host.add({ id: B, labels: ours('dep-2'), startedAt: '2026-03-01T12:00:10Z' });
    host.tick();
    const t0 = performance.now();
    const during = await sampler.sample();
    expect(performance.now() - t0).toBeLessThan(5_000); // bounded (the wait is 0.5 s), not until dockerd answers
    expect(during.containers.map((c) => c.containerId)).toEqual([A]);
    expect(during.failed).toEqual({ count: 0 });

    release();
    await settle();
    host.tick();
    const after = await sampler.sample();
    expect([...byId(after).keys()].sort()).toEqual([A, B].sort());
    expect(byId(after).get(B)!.startedAtMs).toBe(Date.parse('2026-03-01T12:00:10Z'));
    sampler.close();
  });

  it('a container of ours not running yet when found is asked about again at the next sample', async () => {
    const host = new Host();
    const c = host.add({ id: A });
    c.running = false; // in the tree, but dockerd still says it is starting
    const sampler = host.sampler();
    const first = await sampler.sample();
    expect(first.containers).toEqual([]);
    expect(first.failed.count).toBe(0);
    expect(host.fs.opened).toEqual([]);
    c.running = true;
    host.tick();
    const before = host.engine.calls.length;
    const second = await sampler.sample();
    expect(host.engine.since(before)).toEqual(['GET /containers/json', `GET /containers/${A}/json`]);
    expect(second.containers.map((x) => x.containerId)).toEqual([A]);
    sampler.close();
  });
});

describe('cgroup stats sampler: containers that come and go', () => {
  it('a container that disappears from the tree is forgotten and its files closed', async () => {
    const host = new Host();
    host.add({ id: A });
    const b = host.add({ id: B, labels: ours('dep-2') });
    const sampler = host.sampler();
    await sampler.sample();
    await settle();
    expect(host.fs.openPaths().filter((p) => p.includes(B) || p.startsWith(`${PROC}/${b.pid}/`))).toHaveLength(4);

    host.remove(B);
    host.tick();
    const before = host.engine.calls.length;
    const s = await sampler.sample();
    expect(s.containers.map((c) => c.containerId)).toEqual([A]);
    expect(s.failed).toEqual({ count: 0 });
    expect(host.engine.since(before)).toEqual([]);
    expect(host.fs.openPaths().filter((p) => p.includes(B) || p.startsWith(`${PROC}/${b.pid}/`))).toEqual([]);
    expect(host.fs.fds.size).toBe(4);
    sampler.close();
  });

  it('a container removed between two samples while still listed answers ENODEV: dropped, not failed', async () => {
    const host = new Host();
    host.add({ id: A });
    const sampler = host.sampler();
    await sampler.sample();
    await settle();
    // The cgroup is gone for the open files, though the directory entry was still listed.
    host.fs.breakOpen(host.dir(A), 'ENODEV');
    host.tick();
    const s = await sampler.sample();
    expect(s.containers).toEqual([]);
    expect(s.failed).toEqual({ count: 0 });
    expect(host.fs.fds.size).toBe(0);
  });

  it('restart in place: that sample drops it (no Engine call), the next reading carries the new start', async () => {
    const host = new Host();
    host.add({ id: A, startedAt: '2026-03-01T11:00:00Z', counters: { cpuUsec: 9_000_000 } });
    host.add({ id: B, labels: ours('dep-2') });
    const sampler = host.sampler();
    const first = await sampler.sample();
    expect(byId(first).get(A)!.startedAtMs).toBe(Date.parse('2026-03-01T11:00:00Z'));
    await settle();

    host.restart(A, '2026-03-01T12:00:07Z', { cpuUsec: 20_000, memory: 3_000_000, inactive: 0, rx: 10, tx: 20 });
    host.tick();
    let before = host.engine.calls.length;
    const during = await sampler.sample();
    expect(during.containers.map((c) => c.containerId)).toEqual([B]);
    expect(during.failed).toEqual({ count: 0 });
    expect(host.engine.since(before)).toEqual([]);
    expect(host.fs.fds.size).toBe(4); // A's old files closed

    host.tick();
    before = host.engine.calls.length;
    const after = await sampler.sample();
    expect(host.engine.since(before)).toEqual(['GET /containers/json', `GET /containers/${A}/json`]);
    expect(byId(after).get(A)).toMatchObject({
      startedAtMs: Date.parse('2026-03-01T12:00:07Z'),
      cpuNs: 20_000_000,
      memoryBytes: 3_000_000,
      networkBytes: 30,
    });
    expect(host.fs.fds.size).toBe(8);

    host.tick();
    before = host.engine.calls.length;
    await sampler.sample();
    expect(host.engine.since(before)).toEqual([]);
    sampler.close();
  });

  it('the parent directory missing (no container ran since dockerd started) is an empty snapshot, not an error', async () => {
    const host = new Host('cgroupfs'); // <root>/docker appears with the first container
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s).toEqual({
      wallMs: host.clock.wall,
      monoMs: host.clock.mono,
      listedAtMs: host.clock.wall,
      containers: [],
      failed: { count: 0 },
      via: { cgroup: 0, engine: 0 },
    });
    // /info, and the first storage-size list (ownership labels only): nothing else.
    expect(host.engine.since(0)).toEqual(['GET /info', 'GET /containers/json']);
    expect(JSON.parse(host.engine.calls[1]!.query!.filters as string)).toEqual({ label: ownershipFilter(WORKER) });
    expect(host.engine.calls[1]!.query).toMatchObject({ size: true });

    host.add({ id: A });
    host.tick();
    const t = await sampler.sample();
    expect(t.containers.map((c) => c.containerId)).toEqual([A]);
    expect(host.fs.opened).toContain(`${ROOT}/docker/${A}/cpu.stat`);

    // …and when it goes away again with containers tracked: they are forgotten and closed.
    host.remove(A); // the last one: <root>/docker is empty, and (in this fake) gone
    host.tick();
    const u = await sampler.sample();
    expect(u.containers).toEqual([]);
    expect(u.failed.count).toBe(0);
    expect(host.fs.fds.size).toBe(0);
    sampler.close();
  });

  it('a parent directory that cannot be read (not "gone") rejects the sample', async () => {
    const host = new Host();
    host.fs.listErrors.set(`${ROOT}/system.slice`, 'EACCES');
    await expect(host.sampler().sample()).rejects.toMatchObject({ code: 'EACCES' });
  });
});

describe('cgroup stats sampler: the Engine path, per container', () => {
  it('a pid whose /proc/<pid>/cgroup does not name the container is read through the Engine stats endpoint', async () => {
    const host = new Host();
    host.add({ id: A });
    // The agent in its own pid namespace: pid 4242 here is some other process.
    const b = host.add({
      id: B,
      labels: ours('dep-2'),
      pid: 4242,
      procCgroupId: idOf(0x99),
      counters: { cpuUsec: 7_000_000, memory: 5_000, inactive: 1_000, rx: 1, tx: 2 },
    });
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.via).toEqual({ cgroup: 1, engine: 1, note: `pid 4242 of ${B.slice(0, 12)} is not visible in ${PROC}` });
    expect(byId(s).get(B)).toMatchObject({
      deploymentId: 'dep-2',
      startedAtMs: Date.parse(b.startedAt),
      cpuNs: 7_000_000_000,
      memoryBytes: 4_000,
      networkBytes: 3,
    });
    expect(host.fs.opened.filter((p) => p.includes(B) || p.startsWith(`${PROC}/4242/`))).toEqual([]);
    await settle();

    // Steady state: the Engine sampler's list and one stats call for it (A stays on its files).
    for (let i = 0; i < 2; i++) {
      host.tick();
      const before = host.engine.calls.length;
      const t = await sampler.sample();
      expect(host.engine.since(before)).toEqual(['GET /containers/json', `GET /containers/${B}/stats`]);
      expect(host.engine.calls[before + 1]!.query).toEqual({ stream: false, 'one-shot': true });
      expect(t.via).toMatchObject({ cgroup: 1, engine: 1 });
      expect(t.containers).toHaveLength(2);
    }
    sampler.close();
  });

  it('a container on the Engine path restarted in place carries its new start (the status line gives it away)', async () => {
    const host = new Host();
    host.add({ id: B, labels: ours('dep-2'), pid: 4242, procCgroupId: idOf(0x99), startedAt: '2026-03-01T11:00:00Z' });
    const sampler = host.sampler();
    expect(byId(await sampler.sample()).get(B)!.startedAtMs).toBe(Date.parse('2026-03-01T11:00:00Z'));
    await settle();
    host.tick();
    host.restart(B, '2026-03-01T12:00:10Z', { cpuUsec: 1_000 });
    // The restarted run's init is again a pid that is not the container's in this namespace.
    host.fs.files.set(`${PROC}/${host.engine.containers.get(B)!.pid}/cgroup`, `0::/elsewhere\n`);
    const after = await sampler.sample();
    expect(byId(after).get(B)).toMatchObject({ startedAtMs: Date.parse('2026-03-01T12:00:10Z'), cpuNs: 1_000_000 });
    sampler.close();
  });

  it('a container of ours outside the cgroup parent (own cgroup-parent) is found by the size list and read through the Engine, until it goes', async () => {
    const host = new Host();
    host.add({ id: A });
    host.add({ id: C, labels: ours('dep-3') });
    host.fs.removeTree(host.dir(C)); // its cgroup is somewhere this layout does not look
    const sampler = host.sampler();
    const first = await sampler.sample();
    expect(first.containers.map((c) => c.containerId)).toEqual([A]);
    await settle(); // the first size list (due at once) sees C running and not in the tree

    host.tick();
    const second = await sampler.sample();
    expect(byId(second).get(C)).toMatchObject({ deploymentId: 'dep-3', storageBytes: 4096 });
    expect(second.via).toEqual({ cgroup: 1, engine: 1, note: `1 container(s) of this worker are not under ${host.parent}` });

    host.engine.containers.delete(C); // removed
    host.tick();
    const third = await sampler.sample();
    expect(third.containers.map((c) => c.containerId)).toEqual([A]);
    // With nothing left outside, no more Engine calls.
    host.tick();
    const before = host.engine.calls.length;
    await sampler.sample();
    expect(host.engine.since(before)).toEqual([]);
    sampler.close();
  });

  it('an unreadable /proc/<pid>/cgroup sends the container through the Engine path with a note', async () => {
    const host = new Host();
    const a = host.add({ id: A });
    host.fs.denied.add(`${PROC}/${a.pid}/cgroup`);
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.via).toEqual({ cgroup: 0, engine: 1, note: `${PROC}/${a.pid} is not readable` });
    expect(s.containers).toHaveLength(1);
    expect(host.fs.opened).toEqual([]);
  });

  it('a cgroup file that cannot be opened while the cgroup exists sends it through the Engine path', async () => {
    const host = new Host();
    host.add({ id: A });
    host.fs.files.delete(`${host.dir(A)}/memory.current`); // memory controller not enabled for it
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.via).toEqual({ cgroup: 0, engine: 1, note: `${host.dir(A)}/memory.current is not readable` });
    expect(host.fs.fds.size).toBe(0); // the files opened before it were closed
  });

  it('a container gone (404) on the Engine path is dropped, not failed', async () => {
    const host = new Host();
    host.add({ id: A, pid: 4242, procCgroupId: idOf(0x99) });
    const sampler = host.sampler();
    expect((await sampler.sample()).containers).toHaveLength(1);
    host.engine.containers.delete(A); // dockerd forgot it; the directory entry lingers
    host.tick();
    const s = await sampler.sample();
    expect(s.containers).toEqual([]);
    expect(s.failed).toEqual({ count: 0 });
  });

  it('an Engine error on the stats call counts as failed with its text', async () => {
    const host = new Host();
    host.add({ id: A, pid: 4242, procCgroupId: idOf(0x99) });
    const sampler = host.sampler();
    await sampler.sample();
    host.engine.failures.set(`GET /containers/${A}/stats`, 500);
    host.tick();
    const s = await sampler.sample();
    expect(s.containers).toEqual([]);
    expect(s.failed).toEqual({ count: 1, error: 'HTTP 500: injected' });
  });

  it("host network (or another container's): networkBytes 0 and no net/dev opened", async () => {
    const host = new Host();
    const a = host.add({ id: A, networkMode: 'host', counters: { rx: 999, tx: 999 } });
    const b = host.add({ id: B, labels: ours('dep-2'), networkMode: `container:${A}`, counters: { rx: 999, tx: 999 } });
    const c = host.add({ id: C, labels: ours('dep-3'), networkMode: 'bridge', counters: { rx: 40, tx: 2 } });
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(byId(s).get(A)!.networkBytes).toBe(0);
    expect(byId(s).get(B)!.networkBytes).toBe(0);
    expect(byId(s).get(C)!.networkBytes).toBe(42);
    expect(byId(s).get(A)!.cpuNs).toBeGreaterThan(0);
    expect(host.fs.opened).not.toContain(`${PROC}/${a.pid}/net/dev`);
    expect(host.fs.opened).not.toContain(`${PROC}/${b.pid}/net/dev`);
    expect(host.fs.opened).toContain(`${PROC}/${c.pid}/net/dev`);
    expect(host.fs.fds.size).toBe(3 + 3 + 4);
    expect(s.via).toEqual({ cgroup: 3, engine: 0 });
    sampler.close();
  });
});

describe('cgroup stats sampler: no usable layout', () => {
  it('an unknown cgroup driver sends every sample through the Engine sampler, with the reason in via.note', async () => {
    const host = new Host();
    host.engine.info = { CgroupDriver: 'weird', CgroupVersion: '2' };
    host.add({ id: A, counters: { cpuUsec: 2_000_000, memory: 1_000, inactive: 100, rx: 1, tx: 1 } });
    const sampler = host.sampler();
    const s = await sampler.sample();
    const note = 'cgroup driver "weird" is not one this sampler knows';
    expect(s.via).toEqual({ cgroup: 0, engine: 1, note });
    expect(byId(s).get(A)).toMatchObject({ deploymentId: 'dep-1', cpuNs: 2_000_000_000, memoryBytes: 900, networkBytes: 2 });
    expect(host.engine.since(0).filter((c) => c === 'GET /info')).toHaveLength(1);
    await settle();
    for (let i = 0; i < 2; i++) {
      host.tick();
      const before = host.engine.calls.length;
      const t = await sampler.sample();
      expect(t.via).toEqual({ cgroup: 0, engine: 1, note });
      expect(host.engine.since(before)).toEqual(['GET /containers/json', `GET /containers/${A}/stats`]);
    }
    expect(host.fs.opened).toEqual([]);
    sampler.close();
  });

  it('no cgroup v2 filesystem at the root: the Engine path too', async () => {
    const host = new Host();
    host.fs.files.delete(`${ROOT}/cgroup.controllers`);
    host.add({ id: A });
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.via).toEqual({ cgroup: 0, engine: 1, note: `no cgroup v2 filesystem at ${ROOT}` });
    expect(host.fs.opened).toEqual([]);
  });
});

describe('cgroup stats sampler: lifecycle', () => {
  it('a change of worker id resets what is tracked: files closed, every container asked about again', async () => {
    const host = new Host();
    host.add({ id: A });
    const sampler = host.sampler();
    expect((await sampler.sample()).containers).toHaveLength(1);
    await settle();

    host.workerId = 'wkr-2';
    host.tick();
    let before = host.engine.calls.length;
    const other = await sampler.sample();
    expect(other.containers).toEqual([]);
    expect(host.fs.fds.size).toBe(0);
    const list = host.engine.calls.slice(before).find((c) => c.path === '/containers/json' && c.query?.all === true)!;
    expect(JSON.parse(list.query!.filters as string)).toEqual({ label: ownershipFilter('wkr-2'), id: [A] });

    host.workerId = WORKER;
    host.tick();
    before = host.engine.calls.length;
    const back = await sampler.sample();
    expect(back.containers.map((c) => c.containerId)).toEqual([A]);
    expect(host.engine.since(before)).toEqual(['GET /containers/json', `GET /containers/${A}/json`]);
    expect(host.fs.fds.size).toBe(4);
    sampler.close();
  });

  it('close() closes every fd; a later sample opens them again', async () => {
    const host = new Host();
    host.add({ id: A });
    host.add({ id: B, labels: ours('dep-2') });
    const sampler = host.sampler();
    await sampler.sample();
    await settle();
    expect(host.fs.fds.size).toBe(8);
    sampler.close();
    expect(host.fs.fds.size).toBe(0);
    sampler.close(); // twice is harmless

    host.tick();
    const before = host.engine.calls.length;
    const s = await sampler.sample();
    expect(s.containers).toHaveLength(2);
    expect(host.fs.fds.size).toBe(8);
    // /info is not asked again: the layout is kept.
    expect(host.engine.since(before).sort()).toEqual(
      ['GET /containers/json', `GET /containers/${A}/json`, `GET /containers/${B}/json`].sort(),
    );
    sampler.close();
  });

  it('a failed discovery list counts the new containers as failed and is retried at the next sample', async () => {
    const host = new Host();
    host.add({ id: A });
    host.add({ id: B, labels: ours('dep-2') });
    host.engine.failures.set('GET /containers/json', 500);
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.containers).toEqual([]);
    expect(s.failed).toEqual({ count: 2, error: 'HTTP 500: injected' });
    host.engine.failures.clear();
    host.tick();
    const t = await sampler.sample();
    expect(t.containers).toHaveLength(2);
    expect(t.failed).toEqual({ count: 0 });
    sampler.close();
  });

  it('a failed inspect is retried at the next sample', async () => {
    const host = new Host();
    host.add({ id: A });
    host.engine.failures.set(`GET /containers/${A}/json`, 500);
    const sampler = host.sampler();
    const s = await sampler.sample();
    expect(s.containers).toEqual([]);
    expect(s.failed).toEqual({ count: 1, error: 'HTTP 500: injected' });
    host.engine.failures.clear();
    host.tick();
    expect((await sampler.sample()).containers).toHaveLength(1);
    sampler.close();
  });
});
