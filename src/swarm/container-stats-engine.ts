import { LABEL, ownershipFilter } from '../domain/labels.js';
import { mapLimited } from '../util/map-limited.js';
import type { MeterReading } from '../ports.js';
import { usageLessInactive, type CgroupFs } from './cgroup-files.js';
import type { EngineClient } from './docker-client.js';

/**
 * Cumulative resource counters of this worker's containers read through the Engine API: the
 * numbers `docker stats` shows. The path that works everywhere (agent in a container, unknown
 * cgroup layout), and the fallback of the cgroup sampler (container-stats-cgroup.ts), which reads
 * the same counters from the files for a fraction of the cost.
 *
 * Cost per sample (measured on Docker 20.10 / API 1.41, cgroup v1):
 * - one `GET /containers/json?filters=label…` for the list (running containers of this worker);
 * - one `GET /containers/{id}/stats?stream=false&one-shot=true` per container, all in flight at
 *   once (bounded): `one-shot` skips the daemon's 1 s priming read, but the answer still waits for
 *   the daemon's shared collector tick (≤ 1 s of wall time, no CPU), so a whole sample takes
 *   about a second however many containers there are; each answer is ~2 KB of JSON to parse, and
 *   the daemon spends as much again reading cgroups and netlink for it;
 * - one `GET /containers/{id}/json` only the first time a container id is seen (its exact start
 *   time), and again when its status line says it restarted in place;
 * - every `storageIntervalMs` (default 5 min) one `GET /containers/json?size=true`, which makes
 *   the daemon walk every writable layer: expensive, hence the slower cadence, and run in the
 *   background so it never delays a sample. Between two such reads a container's writable-layer
 *   size is the last one measured (a new container counts no storage until its first
 *   measurement, at most one storage interval after it started).
 *
 * The agent's services mount no volumes (see service-spec.ts), so storage is the writable layer;
 * named volumes would need `GET /system/df`, far more expensive, and are not read.
 */

export type { EngineClient };

/** One container's cumulative counters at a sample: the meter's own input type. */
export type ContainerReading = MeterReading;

export interface StatsSnapshot {
  /** Wall-clock time the counters were read, epoch ms. */
  wallMs: number;
  /** The same instant on the process's monotonic clock (performance.now()). */
  monoMs: number;
  /** Wall-clock time just before the container set was read (list or cgroup directory). */
  listedAtMs: number;
  containers: ContainerReading[];
  /** Containers known but not read (errors other than "gone"), with the first error. */
  failed: { count: number; error?: string };
  /** How the readings were taken: from the cgroup/proc files or through the Engine API, and why not the files. */
  via?: { cgroup: number; engine: number; note?: string };
}

export interface ContainerStatsSampler {
  sample(): Promise<StatsSnapshot>;
  /** Releases open files (the cgroup path); a later sample opens again what it needs. */
  close?(): void;
}

export interface ContainerStatsOptions {
  workerId(): string;
  /** Writable-layer sizes are read at most this often; default 5 min. */
  storageIntervalMs?: number;
  /** Engine API calls in flight at once; default 32. */
  concurrency?: number;
  now?: () => number;
  mono?: () => number;
  /** `auto` (default): the cgroup files where readable, else the Engine API; `engine`: the Engine API only. */
  source?: 'auto' | 'engine';
  /** Mount point of the host's cgroup filesystem; default /sys/fs/cgroup. */
  cgroupRoot?: string;
  /** The host's /proc (init pids from the Engine API are in its pid namespace); default /proc. */
  procRoot?: string;
  /** File operations (tests stand in for the kernel with it). */
  fs?: CgroupFs;
}

export const DEFAULT_STORAGE_INTERVAL_MS = 5 * 60_000;

export interface ListedContainer {
  Id: string;
  Labels?: Record<string, string> | null;
  State?: string;
  Status?: string;
  Created?: number;
  SizeRw?: number;
}

export interface EngineStats {
  read?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: { usage?: number; stats?: Record<string, number | undefined> };
  networks?: Record<string, { rx_bytes?: number; tx_bytes?: number } | undefined> | null;
}

/** Memory in use from a stats answer: the cgroup v1 key first, then v2's (see usageLessInactive). */
export function memoryInUse(m: EngineStats['memory_stats']): number {
  const usage = finite(m?.usage);
  const stats = m?.stats ?? {};
  const v1 = stats.total_inactive_file;
  return usageLessInactive(usage, v1 !== undefined && v1 < usage ? v1 : stats.inactive_file);
}

export interface ParsedStats {
  readMs: number;
  cpuNs: number;
  memoryBytes: number;
  networkBytes: number;
}

/** Parses one stats answer; undefined when the container was not running (zero read time). */
export function parseEngineStats(s: EngineStats): ParsedStats | undefined {
  const readMs = s.read ? Date.parse(s.read) : NaN;
  if (!Number.isFinite(readMs) || readMs < Date.UTC(2000, 0, 1)) return undefined;
  let networkBytes = 0;
  for (const n of Object.values(s.networks ?? {})) networkBytes += finite(n?.rx_bytes) + finite(n?.tx_bytes);
  return { readMs, cpuNs: finite(s.cpu_stats?.cpu_usage?.total_usage), memoryBytes: memoryInUse(s.memory_stats), networkBytes };
}

/**
 * Upper bound, in ms, of the uptime in a `docker ps` status line ("Up 5 minutes (healthy)"),
 * after Docker's HumanDuration; undefined when the line says nothing usable.
 */
export function uptimeUpperBoundMs(status: string | undefined): number | undefined {
  const m = /^Up (Less than a second|About a minute|About an hour|(\d+) (second|minute|hour|day|week|month)s?)\b/.exec(status ?? '');
  if (!m) return undefined;
  const S = 1000,
    M = 60 * S,
    H = 60 * M,
    D = 24 * H;
  if (m[1] === 'Less than a second') return S;
  if (m[1] === 'About a minute') return 2 * M;
  if (m[1] === 'About an hour') return 1.5 * H;
  const n = Number(m[2]);
  switch (m[3]) {
    case 'second':
      return (n + 1) * S;
    case 'minute':
      return (n + 1) * M;
    case 'hour':
      return (n + 0.5) * H; // HumanDuration rounds hours
    case 'day':
      return (n + 1) * D;
    case 'week':
      return (n + 1) * 7 * D;
    default:
      return (n + 1) * 30 * D;
  }
}

function finite(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

/** HTTP status of an Engine API error, when it has one. */
export function statusCodeOf(err: unknown): number | undefined {
  const e = err as { statusCode?: unknown; status?: unknown } | null;
  const c = e?.statusCode ?? e?.status;
  return typeof c === 'number' ? c : undefined;
}

export function errorText(err: unknown): string {
  return String((err as Error)?.message ?? err).slice(0, 300);
}

// ---- Engine API calls ----

/** This worker's containers: running ones, or also stopped ones with `all`; optionally only these ids. */
export function listOwned(
  client: EngineClient,
  workerId: string,
  opts: { size?: boolean; all?: boolean; ids?: readonly string[] } = {},
): Promise<ListedContainer[]> {
  const filters: Record<string, string[]> = { label: ownershipFilter(workerId) };
  if (opts.ids) filters.id = [...opts.ids];
  const query: Record<string, string | boolean> = { filters: JSON.stringify(filters) };
  if (opts.size) query.size = true;
  if (opts.all) query.all = true;
  return client.request<ListedContainer[]>({ method: 'GET', path: '/containers/json', query });
}

/** A listed container of this worker that the meter reads: it has a deployment and is running (or paused). */
export function isMetered(c: ListedContainer): boolean {
  return Boolean(c.Labels?.[LABEL.deploymentId]) && (c.State === undefined || c.State === 'running' || c.State === 'paused');
}

export interface RunInfo {
  running: boolean;
  /** State.StartedAt, epoch ms (the Created time when StartedAt is unusable). */
  startedAtMs: number;
  /** State.Pid: the container's init process in the daemon's pid namespace; 0 when not running. */
  pid: number;
  /** False on the host's network or another container's (`host`, `container:<id>`): no interfaces of its own. */
  ownNetwork: boolean;
}

/** One inspect; undefined when the container is gone (404). */
export async function inspectRun(client: EngineClient, id: string, createdSec = 0): Promise<RunInfo | undefined> {
  let info: { Created?: string; State?: { Running?: boolean; StartedAt?: string; Pid?: number }; HostConfig?: { NetworkMode?: string } };
  try {
    info = await client.request({ method: 'GET', path: `/containers/${encodeURIComponent(id)}/json` });
  } catch (err) {
    if (statusCodeOf(err) === 404) return undefined;
    throw err;
  }
  const t = Date.parse(info.State?.StartedAt ?? '');
  const mode = info.HostConfig?.NetworkMode;
  const created = Date.parse(info.Created ?? '');
  const fallback = Number.isFinite(created) ? created : createdSec * 1000;
  return {
    running: info.State?.Running === true,
    startedAtMs: Number.isFinite(t) && t > Date.UTC(2000, 0, 1) ? t : fallback,
    pid: typeof info.State?.Pid === 'number' ? info.State.Pid : 0,
    ownNetwork: !(mode === 'host' || mode?.startsWith('container:')),
  };
}

/** One container's counters from `GET /containers/{id}/stats`; 'gone' when it no longer exists or stopped. */
export async function engineStatsOf(client: EngineClient, id: string): Promise<ParsedStats | 'gone'> {
  let raw: EngineStats;
  try {
    raw = await client.request<EngineStats>({
      method: 'GET',
      path: `/containers/${encodeURIComponent(id)}/stats`,
      query: { stream: false, 'one-shot': true },
    });
  } catch (err) {
    if (statusCodeOf(err) === 404) return 'gone';
    throw err;
  }
  return parseEngineStats(raw) ?? 'gone';
}

export function readingOf(
  id: string,
  labels: Record<string, string>,
  startedAtMs: number,
  c: Pick<ParsedStats, 'cpuNs' | 'memoryBytes' | 'networkBytes'>,
  storageBytes: number | undefined,
): ContainerReading {
  return {
    containerId: id,
    deploymentId: labels[LABEL.deploymentId]!,
    serviceId: labels[LABEL.serviceId] ?? '',
    organizationId: labels[LABEL.organizationId] ?? '',
    startedAtMs,
    cpuNs: c.cpuNs,
    memoryBytes: c.memoryBytes,
    networkBytes: c.networkBytes,
    storageBytes,
  };
}

/**
 * Writable-layer sizes, refreshed in the background at most every `everyMs` (a slow size walk never
 * delays a sample); a failure keeps the last values. `onList` sees each successful list (the cgroup
 * sampler checks it against the tree).
 */
export class StorageSizes {
  readonly #sizes = new Map<string, number>();
  readonly #everyMs: number;
  #at = Number.NEGATIVE_INFINITY;
  #reading: Promise<void> | undefined;

  constructor(everyMs: number) {
    this.#everyMs = everyMs;
  }

  get(id: string): number | undefined {
    return this.#sizes.get(id);
  }

  /** Forgets the sizes of containers not in `live`. */
  retain(live: (id: string) => boolean): void {
    for (const id of this.#sizes.keys()) if (!live(id)) this.#sizes.delete(id);
  }

  refreshIfDue(mono: number, list: () => Promise<ListedContainer[]>, onList?: (listed: ListedContainer[]) => void): void {
    if (this.#reading || mono - this.#at < this.#everyMs) return;
    this.#at = mono;
    this.#reading = list()
      .then((sized) => {
        for (const c of sized) if (typeof c.SizeRw === 'number' && c.SizeRw >= 0) this.#sizes.set(c.Id, c.SizeRw);
        onList?.(sized);
      })
      .catch(() => undefined)
      .finally(() => {
        this.#reading = undefined;
      });
  }
}

/** Slack for the daemon's and our clocks and the status line's one-second resolution. */
const RESTART_SLACK_MS = 3_000;

/**
 * The Engine API path: one list and one stats call per container per sample. `skip` leaves out
 * containers someone else reads (the cgroup sampler's, when this one covers its leftovers).
 */
export function createEngineStatsSampler(
  client: EngineClient,
  opts: ContainerStatsOptions,
  note?: string,
  skip?: (id: string) => boolean,
): ContainerStatsSampler {
  const now = opts.now ?? Date.now;
  const mono = opts.mono ?? (() => performance.now());
  const concurrency = opts.concurrency ?? 32;
  const startedAt = new Map<string, number>();
  const storage = new StorageSizes(opts.storageIntervalMs ?? DEFAULT_STORAGE_INTERVAL_MS);

  const startOf = async (c: ListedContainer, at: number): Promise<number> => {
    const known = startedAt.get(c.Id);
    const upper = uptimeUpperBoundMs(c.Status);
    // Restarted in place (same id, new cgroup): its status line is younger than the start we know.
    if (known !== undefined && !(upper !== undefined && known < at - upper - RESTART_SLACK_MS)) return known;
    const run = await inspectRun(client, c.Id, c.Created);
    if (!run) throw Object.assign(new Error(`container ${c.Id} is gone`), { statusCode: 404 });
    startedAt.set(c.Id, run.startedAtMs);
    return run.startedAtMs;
  };

  return {
    async sample(): Promise<StatsSnapshot> {
      const wallBefore = now();
      const listed = (await listOwned(client, opts.workerId())).filter((c) => isMetered(c) && !skip?.(c.Id));
      const live = new Set(listed.map((c) => c.Id));
      for (const id of startedAt.keys()) if (!live.has(id)) startedAt.delete(id);
      storage.retain((id) => live.has(id));
      storage.refreshIfDue(mono(), () => listOwned(client, opts.workerId(), { size: true }));

      const results = await mapLimited(listed, concurrency, async (c) => {
        const started = await startOf(c, wallBefore);
        return { c, started, parsed: await engineStatsOf(client, c.Id) };
      });

      const wallAfter = now();
      const monoAfter = mono();
      const containers: ContainerReading[] = [];
      const failed: StatsSnapshot['failed'] = { count: 0 };
      let latestRead = Number.NEGATIVE_INFINITY;
      for (const r of results) {
        if (r.status === 'rejected') {
          // 404: the container went away between the list and the read, which is ordinary churn.
          if (statusCodeOf(r.reason) === 404) continue;
          failed.count++;
          failed.error ??= errorText(r.reason);
          continue;
        }
        const { c, started, parsed } = r.value;
        if (parsed === 'gone') continue; // stopped meanwhile
        latestRead = Math.max(latestRead, parsed.readMs);
        containers.push(readingOf(c.Id, c.Labels ?? {}, started, parsed, storage.get(c.Id)));
      }
      // The counters were read at the daemon's collector tick, up to a second before the answers
      // arrived: that instant (bounded by this call's own span) is the sample's time.
      const wallMs = Number.isFinite(latestRead) ? Math.min(wallAfter, Math.max(wallBefore, latestRead)) : wallAfter;
      const via: NonNullable<StatsSnapshot['via']> = { cgroup: 0, engine: containers.length };
      if (note !== undefined) via.note = note;
      return { wallMs, monoMs: monoAfter - (wallAfter - wallMs), listedAtMs: wallBefore, containers, failed, via };
    },
  };
}
