import {
  ContainerCounterFiles,
  CounterFileError,
  GONE_CODES,
  cgroupLayout,
  newReadBuffer,
  nodeCgroupFs,
  type CgroupLayout,
} from './cgroup-files.js';
import {
  DEFAULT_STORAGE_INTERVAL_MS,
  StorageSizes,
  createEngineStatsSampler,
  errorText,
  inspectRun,
  listOwned,
  isMetered,
  readingOf,
  type ContainerReading,
  type ContainerStatsOptions,
  type ContainerStatsSampler,
  type EngineClient,
  type StatsSnapshot,
} from './container-stats-engine.js';
import { LABEL } from '../domain/labels.js';

/**
 * The usage sampler that reads the kernel's counters itself: the same numbers `docker stats`
 * shows (dockerd reads these very files for it), without asking dockerd.
 *
 * Steady state costs one readdir of the Docker cgroup parent and three or four positional reads
 * per container, on files kept open: no Engine API call, no JSON, no child process. The Engine API
 * is asked only when the set of containers in the tree changes: one `GET /containers/json` with an
 * id filter for the new ones (whose are they?), then one inspect per new container of this worker
 * (start time and init pid). Writable-layer sizes come from the Engine API every storage interval,
 * as on the Engine path. Measured on this machine (Docker 20.10, cgroup v1, 100 containers), see
 * the README's figures: the Engine path spent ~17 CPU s/h in the agent at a 15 s interval.
 *
 * A container whose files cannot be used (another cgroup parent, no host /proc, a pid that is not
 * the container's because the agent has its own pid namespace) is read through the Engine API,
 * per container, so one odd container never costs the others their cheap path; the snapshot's
 * `via` says how many went which way.
 */

/**
 * How long a sample waits for the Engine to say whose the containers new to the tree are, before it
 * reads the others without them: a dockerd slowed by a burst of starts must not stall (and so
 * leave a gap in) the metering of every container already known. Those it did not wait for are
 * read from the next sample on; their start time is exact, so no usage is lost.
 */
const DISCOVERY_WAIT_MS = 500;

function waitAtMost(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
}

/** How one container in the cgroup tree is read. */
type Tracked =
  | { kind: 'foreign' }
  | { kind: 'files'; labels: Record<string, string>; startedAtMs: number; files: ContainerCounterFiles }
  /** Read by the Engine sampler (which also notices a restart in place, from the status line). */
  | { kind: 'engine'; reason: string };

export function createCgroupStatsSampler(client: EngineClient, opts: ContainerStatsOptions): ContainerStatsSampler {
  const fs = opts.fs ?? nodeCgroupFs;
  const root = opts.cgroupRoot ?? '/sys/fs/cgroup';
  const proc = opts.procRoot ?? '/proc';
  const now = opts.now ?? Date.now;
  const mono = opts.mono ?? (() => performance.now());
  const storage = new StorageSizes(opts.storageIntervalMs ?? DEFAULT_STORAGE_INTERVAL_MS);
  const io = newReadBuffer();
  const tracked = new Map<string, Tracked>();
  let layout: CgroupLayout | undefined;
  let fallback: ContainerStatsSampler | undefined;
  let trackedFor: string | undefined;
  /**
   * Running containers of this worker that are not in the tree (a daemon with its own
   * cgroup-parent, say), as last seen by a list: the periodic size list finds them, the Engine
   * pass then reads them every sample for as long as it still finds them.
   */
  let outside = new Set<string>();
  const viaFiles = (id: string) => {
    const k = tracked.get(id)?.kind;
    return k === 'files' || k === 'foreign';
  };
  // Reads what the files cannot: `engine` entries and the outside ones.
  const engineSide = createEngineStatsSampler(client, opts, undefined, viaFiles);

  const forget = (id: string) => {
    const t = tracked.get(id);
    if (t?.kind === 'files') t.files.close();
    tracked.delete(id);
  };
  /** Bumped by forgetAll: a discovery begun before must not add to what is tracked after. */
  let epoch = 0;
  let discovering: Promise<void> | undefined;
  /** A discovery's failure, counted by the sample that sees it end. */
  let discoveryFailure: { error: string; ids: string[] } | undefined;
  const forgetAll = () => {
    epoch++;
    for (const id of [...tracked.keys()]) forget(id);
    outside = new Set();
  };

  /** The layout, or the Engine sampler when the files are of no use on this host (decided once). */
  const choose = async (): Promise<CgroupLayout | ContainerStatsSampler> => {
    if (layout) return layout;
    if (fallback) return fallback;
    const info = await client.request<{ CgroupDriver?: unknown; CgroupVersion?: unknown }>({ method: 'GET', path: '/info' });
    const l = cgroupLayout(info ?? {}, root, fs);
    if ('unusable' in l) return (fallback = createEngineStatsSampler(client, opts, l.unusable));
    return (layout = l);
  };

  /** Opens a new container of this worker; the Engine path when its files will not do. */
  const open = async (
    l: CgroupLayout,
    id: string,
    labels: Record<string, string>,
    createdSec: number | undefined,
  ): Promise<Tracked | undefined> => {
    const run = await inspectRun(client, id, createdSec);
    if (!run || !run.running) return undefined; // stopped meanwhile: the next sample sees the tree without it
    const engine = (reason: string): Tracked => ({ kind: 'engine', reason });
    // The pid is in dockerd's pid namespace: it is only ours to read if its cgroup names the container.
    let netPath: string | undefined;
    try {
      if (run.pid <= 0 || !fs.readText(`${proc}/${run.pid}/cgroup`).includes(id))
        return engine(`pid ${run.pid} of ${id.slice(0, 12)} is not visible in ${proc}`);
      // On the host's network (or another container's) it has no counters of its own, and the
      // Engine reports none either: the host's interfaces must not be billed to it.
      if (run.ownNetwork) netPath = `${proc}/${run.pid}/net/dev`;
    } catch {
      return engine(`${proc}/${run.pid} is not readable`);
    }
    try {
      return { kind: 'files', labels, startedAtMs: run.startedAtMs, files: new ContainerCounterFiles(fs, l, id, netPath) };
    } catch (err) {
      if (err instanceof CounterFileError && GONE_CODES.has(err.code) && fs.exists(l.dirOf(id))) {
        return engine(`${err.path} is not readable`);
      }
      if (err instanceof CounterFileError && GONE_CODES.has(err.code)) return undefined; // went away between inspect and open
      return engine(errorText(err));
    }
  };

  /** Classifies the ids new to the tree: one list call for all of them, one inspect per container of ours. */
  const discover = async (l: CgroupLayout, ids: string[], workerId: string): Promise<string | undefined> => {
    const at = epoch;
    const keep = (id: string, t: Tracked) => {
      if (epoch === at) tracked.set(id, t);
      else if (t.kind === 'files') t.files.close(); // forgotten meanwhile (closed, or a new worker id)
    };
    // `all`: a container of ours that is still starting is not running yet, and must not be taken for a stranger.
    const owned = new Map((await listOwned(client, workerId, { all: true, ids })).map((c) => [c.Id, c]));
    let firstError: string | undefined;
    for (const id of ids) {
      const c = owned.get(id);
      if (!c) {
        keep(id, { kind: 'foreign' });
        continue;
      }
      if (!c.Labels?.[LABEL.deploymentId]) {
        keep(id, { kind: 'foreign' }); // ours but of no deployment: never metered
        continue;
      }
      try {
        const t = await open(l, id, c.Labels ?? {}, c.Created);
        if (t) keep(id, t);
      } catch (err) {
        firstError ??= errorText(err); // retried next sample
      }
    }
    return firstError;
  };

  /** Starts classifying `fresh` (unless a discovery is under way) and waits for it a bounded time. */
  const discoverBounded = async (l: CgroupLayout, fresh: string[], workerId: string): Promise<void> => {
    if (fresh.length > 0 && !discovering) {
      discovering = discover(l, fresh, workerId)
        .catch((err: unknown) => errorText(err))
        .then((error) => {
          if (error !== undefined) discoveryFailure = { error, ids: fresh };
        })
        .finally(() => {
          discovering = undefined;
        });
    }
    if (discovering) await waitAtMost(discovering, DISCOVERY_WAIT_MS);
  };

  const sampleFiles = async (l: CgroupLayout): Promise<StatsSnapshot> => {
    const workerId = opts.workerId();
    if (trackedFor !== workerId) {
      forgetAll(); // ownership is by worker id: a new one makes every classification stale
      trackedFor = workerId;
    }
    const listedAtMs = now();
    let entries: string[];
    try {
      entries = fs.list(l.parent);
    } catch (err) {
      // No container has run since the daemon started: the parent is created with the first one.
      if (!GONE_CODES.has((err as { code?: string }).code ?? '')) throw err;
      entries = [];
    }
    const inTree = new Set<string>();
    for (const e of entries) {
      const id = l.idOf(e);
      if (id) inTree.add(id);
    }
    for (const id of tracked.keys()) if (!inTree.has(id)) forget(id);
    const fresh: string[] = [];
    for (const id of inTree) if (!tracked.has(id)) fresh.push(id);
    const failed: StatsSnapshot['failed'] = { count: 0 };
    await discoverBounded(l, fresh, workerId);
    if (discoveryFailure) {
      const { error, ids } = discoveryFailure;
      discoveryFailure = undefined;
      const unread = ids.filter((id) => inTree.has(id) && !tracked.has(id)).length;
      if (unread > 0) {
        failed.count += unread;
        failed.error ??= error;
      }
    }
    storage.retain((id) => tracked.has(id) || outside.has(id));
    storage.refreshIfDue(
      mono(),
      () => listOwned(client, workerId, { size: true }),
      (sized) => {
        for (const c of sized) if (isMetered(c) && !tracked.has(c.Id) && !fs.exists(l.dirOf(c.Id))) outside.add(c.Id);
      },
    );

    const containers: ContainerReading[] = [];
    let note: string | undefined;
    let engineKind = 0;
    for (const [id, t] of tracked) {
      if (t.kind === 'foreign') continue;
      if (t.kind === 'engine') {
        engineKind++;
        note ??= t.reason;
        continue;
      }
      try {
        containers.push(readingOf(id, t.labels, t.startedAtMs, t.files.read(io), storage.get(id)));
      } catch (err) {
        // ENODEV: the run behind these files ended (stopped, or restarted in place with a new
        // cgroup of the same name). Forgotten now, it is rediscovered, with its new start time,
        // at the next sample if it is still there.
        forget(id);
        if (err instanceof CounterFileError && GONE_CODES.has(err.code)) continue;
        failed.count++;
        failed.error ??= errorText(err);
      }
    }
    const wallMs = now();
    const monoMs = mono();
    const via: NonNullable<StatsSnapshot['via']> = { cgroup: containers.length, engine: 0 };
    if (engineKind > 0 || outside.size > 0) {
      // The few the files cannot serve wait for the daemon's collector tick; the file readings keep their own instant.
      const e = await engineSide.sample();
      const seenOutside = new Set<string>();
      for (const c of e.containers) {
        if (!tracked.has(c.containerId)) seenOutside.add(c.containerId);
        containers.push({ ...c, storageBytes: storage.get(c.containerId) ?? c.storageBytes });
      }
      outside = seenOutside;
      via.engine = e.containers.length;
      failed.count += e.failed.count;
      if (e.failed.error !== undefined) failed.error ??= e.failed.error;
      if (seenOutside.size > 0) note ??= `${seenOutside.size} container(s) of this worker are not under ${l.parent}`;
    }
    if (note !== undefined) via.note = note;
    return { wallMs, monoMs, listedAtMs, containers, failed, via };
  };

  return {
    async sample(): Promise<StatsSnapshot> {
      const how = await choose();
      return 'parent' in how ? sampleFiles(how) : how.sample();
    },
    close(): void {
      forgetAll();
      fallback?.close?.();
    },
  };
}
