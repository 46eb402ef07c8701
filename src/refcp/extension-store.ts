import { randomBytes } from 'node:crypto';
import { strongEtag } from '../protocol/etag.js';
import type { StatusReport } from '../protocol/status-report.js';
import { usageKey, type UsageAck, type UsageRecord } from '../protocol/usage.js';
import { UUID_PATTERN } from './pg-columns.js';
import type { ReferenceControlPlaneOptions, StatusReportRecord } from './types.js';

/**
 * State behind the protocol extensions stock SkyPanelV2 lacks: the desired set per worker, the
 * status reports and the usage records the agent sent. Kept per worker id, whether or not that
 * worker has registered yet.
 */

export interface DeploymentsControl {
  /** Whether the /api/ extension routes are served (option `extensions`, default true). */
  readonly extensions: boolean;
  /** Bearer token of the /admin/ routes. */
  readonly adminToken: string;
  /** The complete desired set of a worker, served as given: no validation, so hostile rows reach the agent. */
  setDeployments(workerId: string, deployments: unknown[]): void;
  /** Serve exactly this text as the 200 body of the worker's GET .../deployments (ETag over it). */
  setDeploymentsBody(workerId: string, rawBody: string): void;
  /** The array last given to setDeployments; [] when nothing was set; undefined while a raw body is served. */
  deploymentsOf(workerId: string): unknown[] | undefined;
  /** The strong ETag the worker's GET .../deployments answers with now. */
  deploymentsEtagOf(workerId: string): string;
  /** Every accepted distinct status report of a worker, in arrival order (bounded, oldest dropped). */
  reportsOf(workerId: string): readonly StatusReportRecord[];
  /** The latest report per deployment, by arrival. */
  deploymentStatusOf(workerId: string): ReadonlyMap<string, StatusReport>;
  /** Usage records by `deploymentId|periodStart` (see usageKey). */
  usageOf(workerId: string): ReadonlyMap<string, UsageRecord>;
  /** Status reports acknowledged but not counted because (deploymentId, bootId, seq) was seen before; all workers. */
  readonly duplicateReports: number;
  /** Usage records acknowledged but not counted because their period was already final; all workers. */
  readonly duplicateUsage: number;
}

export interface WorkerExtensionState {
  deployments: unknown[] | undefined;
  body: string;
  etag: string;
  /** Every deployment id ever assigned: reports for these are accepted even after unassignment. */
  everAssigned: Set<string>;
  reports: StatusReportRecord[];
  reportKeys: Set<string>;
  /** Approximate bytes held by `reports` (logs and messages dominate). */
  reportBytes: number;
  deploymentStatus: Map<string, StatusReport>;
  usage: Map<string, UsageRecord>;
  duplicateReports: number;
  duplicateUsage: number;
}

export const DEFAULT_MAX_REPORTS = 50_000;
/** Per worker: 50 000 reports with 64 KiB of logs each would be 3 GiB, so bytes are capped too. */
export const MAX_REPORT_BYTES = 64 * 1024 * 1024;
const MAX_ASSIGNED_IDS = 100_000;
const EMPTY_BODY = deploymentsBody([]);

function deploymentsBody(deployments: unknown[]): string {
  return JSON.stringify({ success: true, data: { deployments } });
}

/** Worker ids are uuids compared case-insensitively, like the `container_workers.id` column. */
export function workerKey(workerId: string): string {
  return UUID_PATTERN.test(workerId) ? workerId.toLowerCase() : workerId;
}

function idsIn(rows: unknown): string[] {
  if (!Array.isArray(rows)) return [];
  return rows.flatMap((row: unknown) => {
    const id = row !== null && typeof row === 'object' ? (row as Record<string, unknown>).id : undefined;
    return typeof id === 'string' ? [id] : [];
  });
}

function idsInRawBody(rawBody: string): string[] {
  try {
    const parsed = JSON.parse(rawBody) as { data?: { deployments?: unknown } } | null;
    return idsIn(parsed?.data?.deployments);
  } catch {
    return [];
  }
}

/** Strings counted as UTF-16 (what they occupy in memory), plus a fixed overhead per record. */
function sizeOf(report: StatusReport): number {
  return 512 + 2 * ((report.deploymentLogs?.length ?? 0) + (report.message?.length ?? 0) + (report.publicUrl?.length ?? 0));
}

function dropOldest<K>(collection: Set<K> | Map<K, unknown>, max: number): void {
  while (collection.size > max) collection.delete(collection.keys().next().value as K);
}

export class ExtensionStore implements DeploymentsControl {
  readonly extensions: boolean;
  readonly adminToken: string;
  readonly #state = new Map<string, WorkerExtensionState>();
  readonly #maxReports: number;
  #duplicateReports = 0;
  #duplicateUsage = 0;

  constructor(opts: ReferenceControlPlaneOptions) {
    this.extensions = opts.extensions ?? true;
    this.adminToken = opts.adminToken ?? randomBytes(32).toString('hex');
    if (!/^[\x21-\x7e]{16,}$/.test(this.adminToken)) {
      throw new RangeError('adminToken must be at least 16 printable ASCII characters without spaces');
    }
    this.#maxReports = opts.maxReports ?? DEFAULT_MAX_REPORTS;
    if (!Number.isInteger(this.#maxReports) || this.#maxReports < 1) throw new RangeError('maxReports must be a positive integer');
  }

  get duplicateReports(): number {
    return this.#duplicateReports;
  }

  get duplicateUsage(): number {
    return this.#duplicateUsage;
  }

  /** The state of a worker, created empty on first use. */
  stateOf(workerId: string): WorkerExtensionState {
    const key = workerKey(workerId);
    let state = this.#state.get(key);
    if (state === undefined) {
      state = {
        deployments: [],
        body: EMPTY_BODY,
        etag: strongEtag(EMPTY_BODY),
        everAssigned: new Set(),
        reports: [],
        reportKeys: new Set(),
        reportBytes: 0,
        deploymentStatus: new Map(),
        usage: new Map(),
        duplicateReports: 0,
        duplicateUsage: 0,
      };
      this.#state.set(key, state);
    }
    return state;
  }

  /** Worker ids (normalised) that have any extension state. */
  knownWorkerIds(): string[] {
    return [...this.#state.keys()];
  }

  setDeployments(workerId: string, deployments: unknown[]): void {
    if (!Array.isArray(deployments)) throw new TypeError('deployments must be an array');
    // Serialised now, so the body and its ETag stay put even if the caller mutates the array later.
    this.#serve(workerId, deployments, deploymentsBody(deployments), idsIn(deployments));
  }

  setDeploymentsBody(workerId: string, rawBody: string): void {
    if (typeof rawBody !== 'string') throw new TypeError('rawBody must be a string');
    this.#serve(workerId, undefined, rawBody, idsInRawBody(rawBody));
  }

  #serve(workerId: string, deployments: unknown[] | undefined, body: string, ids: string[]): void {
    const state = this.stateOf(workerId);
    state.deployments = deployments;
    state.body = body;
    state.etag = strongEtag(body);
    for (const id of ids) {
      state.everAssigned.delete(id);
      state.everAssigned.add(id);
    }
    dropOldest(state.everAssigned, MAX_ASSIGNED_IDS);
    this.desiredChanged(workerKey(workerId));
  }

  /** Called after a worker's desired set was replaced (key: workerKey of its id). */
  protected desiredChanged(_key: string): void {}

  deploymentsOf(workerId: string): unknown[] | undefined {
    const state = this.#peek(workerId);
    return state === undefined ? [] : state.deployments;
  }

  deploymentsEtagOf(workerId: string): string {
    return this.#peek(workerId)?.etag ?? strongEtag(EMPTY_BODY);
  }

  reportsOf(workerId: string): readonly StatusReportRecord[] {
    return this.#peek(workerId)?.reports ?? [];
  }

  deploymentStatusOf(workerId: string): ReadonlyMap<string, StatusReport> {
    return this.#peek(workerId)?.deploymentStatus ?? new Map();
  }

  usageOf(workerId: string): ReadonlyMap<string, UsageRecord> {
    return this.#peek(workerId)?.usage ?? new Map();
  }

  /** Stores a validated report; false when it repeats one already received. */
  recordReport(workerId: string, deploymentId: string, report: StatusReport, now: Date): boolean {
    const state = this.stateOf(workerId);
    const key = JSON.stringify([deploymentId, report.bootId, report.seq]);
    if (state.reportKeys.has(key)) {
      state.duplicateReports++;
      this.#duplicateReports++;
      return false;
    }
    state.reportKeys.add(key);
    state.reports.push({ deploymentId, report, receivedAt: now });
    state.reportBytes += sizeOf(report);
    state.deploymentStatus.delete(deploymentId);
    state.deploymentStatus.set(deploymentId, report);
    // Oldest first, always keeping the newest, until both the count and the byte budget hold.
    let drop = 0;
    for (let bytes = state.reportBytes; drop < state.reports.length - 1; drop++) {
      if (state.reports.length - drop <= this.#maxReports && bytes <= MAX_REPORT_BYTES) break;
      bytes -= sizeOf(state.reports[drop]!.report);
    }
    for (const old of state.reports.splice(0, drop)) {
      state.reportBytes -= sizeOf(old.report);
      state.reportKeys.delete(JSON.stringify([old.deploymentId, old.report.bootId, old.report.seq]));
    }
    dropOldest(state.deploymentStatus, this.#maxReports);
    return true;
  }

  /**
   * Stores validated usage records. A record is new, or updates its period while the stored one is
   * still open (`complete: false`); a record identical to the stored one, or one for a period already
   * final, is a duplicate: acknowledged, not counted.
   */
  recordUsage(workerId: string, records: readonly UsageRecord[]): UsageAck {
    const state = this.stateOf(workerId);
    const ack: UsageAck = { accepted: 0, duplicates: 0 };
    for (const record of records) {
      const key = usageKey(record);
      const stored = state.usage.get(key);
      if (stored !== undefined && (stored.complete || JSON.stringify(stored) === JSON.stringify(record))) {
        ack.duplicates++;
        continue;
      }
      state.usage.set(key, record);
      ack.accepted++;
    }
    state.duplicateUsage += ack.duplicates;
    this.#duplicateUsage += ack.duplicates;
    dropOldest(state.usage, this.#maxReports);
    return ack;
  }

  #peek(workerId: string): WorkerExtensionState | undefined {
    return this.#state.get(workerKey(workerId));
  }
}
