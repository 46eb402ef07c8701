import type Docker from 'dockerode';
import { LABEL, ownershipFilter } from '../domain/labels.js';
import { mapLimited } from '../agent/executor.js';
import type { MeterReading } from '../agent/usage-meter.js';

/**
 * Cumulative resource counters of this worker's containers, read through the Engine API: the
 * numbers `docker stats` shows, without a child process.
 *
 * Cost per sample (measured on Docker 20.10 / API 1.41, cgroup v1):
 * - one `GET /containers/json?filters=label…` for the list (running containers of this worker);
 * - one `GET /containers/{id}/stats?stream=false&one-shot=true` per container, all in flight at
 *   once (bounded): `one-shot` skips the daemon's 1 s priming read, but the answer still waits for
 *   the daemon's shared collector tick (≤ 1 s of wall time, no CPU), so a whole sample takes
 *   about a second however many containers there are;
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
 *
 * Reading the cgroup files directly would avoid the collector wait, but the layout differs by
 * cgroup version and driver (v1 cgroupfs here: /sys/fs/cgroup/<ctl>/docker/<id>; systemd:
 * docker-<id>.scope; v2 unified), network counters are not in cgroups at all (they need the
 * container's /proc/<pid>/net/dev) and an agent running in a container may not see them: the
 * Engine API is the one path that works everywhere and matches `docker stats`.
 */

/** One container's cumulative counters at a sample: the meter's own input type. */
export type ContainerReading = MeterReading;

export interface StatsSnapshot {
  /** Wall-clock time the counters were read (the daemon's read time), epoch ms. */
  wallMs: number;
  /** The same instant on the process's monotonic clock (performance.now()). */
  monoMs: number;
  /** Wall-clock time just before the container list was read. */
  listedAtMs: number;
  containers: ContainerReading[];
  /** Containers listed but not read (errors other than "gone"), with the first error. */
  failed: { count: number; error?: string };
}

export interface ContainerStatsSampler {
  sample(): Promise<StatsSnapshot>;
}

export interface ContainerStatsOptions {
  workerId(): string;
  /** Writable-layer sizes are read at most this often; default 5 min. */
  storageIntervalMs?: number;
  /** Stats calls in flight at once; default 32. */
  concurrency?: number;
  now?: () => number;
  mono?: () => number;
}

export const DEFAULT_STORAGE_INTERVAL_MS = 5 * 60_000;

interface ListedContainer {
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

/** Memory in use as `docker stats` computes it (CLI ≥ 20.10): usage minus inactive file cache. */
export function memoryInUse(m: EngineStats['memory_stats']): number {
  const usage = finite(m?.usage);
  const stats = m?.stats ?? {};
  const v1 = stats.total_inactive_file;
  if (v1 !== undefined && v1 < usage) return usage - v1;
  const v2 = stats.inactive_file;
  if (v2 !== undefined && v2 < usage) return usage - v2;
  return usage;
}

/** Parses one stats answer; undefined when the container was not running (zero read time). */
export function parseEngineStats(s: EngineStats): { readMs: number; cpuNs: number; memoryBytes: number; networkBytes: number } | undefined {
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
  const S = 1000, M = 60 * S, H = 60 * M, D = 24 * H;
  if (m[1] === 'Less than a second') return S;
  if (m[1] === 'About a minute') return 2 * M;
  if (m[1] === 'About an hour') return 1.5 * H;
  const n = Number(m[2]);
  switch (m[3]) {
    case 'second': return (n + 1) * S;
    case 'minute': return (n + 1) * M;
    case 'hour': return (n + 0.5) * H; // HumanDuration rounds hours
    case 'day': return (n + 1) * D;
    case 'week': return (n + 1) * 7 * D;
    default: return (n + 1) * 30 * D;
  }
}

function finite(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

function statusCodeOf(err: unknown): number | undefined {
  return (err as { statusCode?: number }).statusCode;
}

/** Slack for the daemon's and our clocks and the status line's one-second resolution. */
const RESTART_SLACK_MS = 3_000;

export function createContainerStatsSampler(docker: Docker, opts: ContainerStatsOptions): ContainerStatsSampler {
  const now = opts.now ?? Date.now;
  const mono = opts.mono ?? (() => performance.now());
  const storageEvery = opts.storageIntervalMs ?? DEFAULT_STORAGE_INTERVAL_MS;
  const concurrency = opts.concurrency ?? 32;
  const startedAt = new Map<string, number>();
  const storage = new Map<string, number>();
  let storageAt = Number.NEGATIVE_INFINITY;
  let storageRead: Promise<void> | undefined;

  const filters = () => JSON.stringify({ label: ownershipFilter(opts.workerId()) });

  const readStorage = async (): Promise<void> => {
    storageAt = mono();
    const sized = (await docker.listContainers({ size: true, filters: filters() })) as ListedContainer[];
    for (const c of sized) if (typeof c.SizeRw === 'number' && c.SizeRw >= 0) storage.set(c.Id, c.SizeRw);
  };

  const startOf = async (c: ListedContainer, at: number): Promise<number> => {
    const known = startedAt.get(c.Id);
    const upper = uptimeUpperBoundMs(c.Status);
    // Restarted in place (same id, new cgroup): its status line is younger than the start we know.
    if (known !== undefined && !(upper !== undefined && known < at - upper - RESTART_SLACK_MS)) return known;
    const info = (await docker.getContainer(c.Id).inspect()) as { State?: { StartedAt?: string } };
    const t = Date.parse(info.State?.StartedAt ?? '');
    const value = Number.isFinite(t) && t > Date.UTC(2000, 0, 1) ? t : (c.Created ?? 0) * 1000;
    startedAt.set(c.Id, value);
    return value;
  };

  return {
    async sample(): Promise<StatsSnapshot> {
      const wallBefore = now();
      const listed = ((await docker.listContainers({ filters: filters() })) as ListedContainer[]).filter(
        (c) => c.Labels?.[LABEL.deploymentId] && (c.State === undefined || c.State === 'running' || c.State === 'paused'),
      );
      const live = new Set(listed.map((c) => c.Id));
      for (const id of startedAt.keys()) if (!live.has(id)) startedAt.delete(id);
      for (const id of storage.keys()) if (!live.has(id)) storage.delete(id);

      // Sizes are refreshed in the background (a slow size walk never delays a sample): readings
      // carry the sizes known when they are taken; a failure keeps the last values.
      if (!storageRead && mono() - storageAt >= storageEvery) {
        storageRead = readStorage()
          .catch(() => undefined)
          .finally(() => {
            storageRead = undefined;
          });
      }

      const results = await mapLimited(listed, concurrency, async (c) => {
        const started = await startOf(c, wallBefore);
        const raw = (await docker.getContainer(c.Id).stats({ stream: false, 'one-shot': true })) as unknown as EngineStats;
        return { c, started, parsed: parseEngineStats(raw) };
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
          failed.error ??= String((r.reason as Error)?.message ?? r.reason).slice(0, 300);
          continue;
        }
        const { c, started, parsed } = r.value;
        if (!parsed) continue; // stopped meanwhile
        latestRead = Math.max(latestRead, parsed.readMs);
        const labels = c.Labels ?? {};
        containers.push({
          containerId: c.Id,
          deploymentId: labels[LABEL.deploymentId]!,
          serviceId: labels[LABEL.serviceId] ?? '',
          organizationId: labels[LABEL.organizationId] ?? '',
          startedAtMs: started,
          cpuNs: parsed.cpuNs,
          memoryBytes: parsed.memoryBytes,
          networkBytes: parsed.networkBytes,
          storageBytes: storage.get(c.Id),
        });
      }
      // The counters were read at the daemon's collector tick, up to a second before the answers
      // arrived: that instant (bounded by this call's own span) is the sample's time.
      const wallMs = Number.isFinite(latestRead) ? Math.min(wallAfter, Math.max(wallBefore, latestRead)) : wallAfter;
      return { wallMs, monoMs: monoAfter - (wallAfter - wallMs), listedAtMs: wallBefore, containers, failed };
    },
  };
}
