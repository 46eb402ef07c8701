import type { HeartbeatOutcome, HeartbeatRecord } from '../heartbeat-loop.js';
import { registerStateGauges, type StateGaugeSources } from './state-gauges.js';
import { renderProcessMetrics as renderProcessMetricsWith } from './process-metrics.js';

/**
 * A minimal Prometheus registry rendering text exposition format 0.0.4. Written here instead of
 * using prom-client because the agent runs on every worker node and its footprint matters.
 *
 * Runtime calls (inc, set, observe) never throw: they run inside the agent's loops, which must
 * survive anything. Mistakes in names are caught once, at registration.
 */

export type Labels<L extends string> = { readonly [K in L]: string };

/** Beyond this many label combinations a metric drops new series: a bug must not grow memory without bound. */
const DEFAULT_MAX_SERIES = 64;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

function labelText(pairs: readonly (readonly [string, string])[]): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  maxSeries?: number;
}

abstract class Metric<L extends string, S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  protected readonly series = new Map<string, { labels: readonly (readonly [string, string])[]; state: S }>();
  readonly #maxSeries: number;

  constructor(opts: MetricOptions<L>, reserved: readonly string[] = []) {
    if (!METRIC_NAME.test(opts.name)) throw new Error(`invalid metric name ${JSON.stringify(opts.name)}`);
    for (const l of opts.labelNames ?? []) {
      if (!LABEL_NAME.test(l) || l.startsWith('__') || reserved.includes(l))
        throw new Error(`invalid label name ${JSON.stringify(l)} on ${opts.name}`);
    }
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames ?? [];
    this.#maxSeries = opts.maxSeries ?? DEFAULT_MAX_SERIES;
  }

  protected abstract initial(): S;

  /** The state for one label combination, or undefined once the series cap is reached. */
  protected stateFor(labels: Partial<Labels<L>> | undefined): S | undefined {
    // Missing labels become "" rather than throwing, for the reason in the file comment.
    const pairs = this.labelNames.map((k) => [k, String(labels?.[k] ?? '')] as const);
    const key = pairs.map(([, v]) => v).join('\u0000');
    let entry = this.series.get(key);
    if (!entry) {
      if (this.series.size >= this.#maxSeries) return undefined;
      entry = { labels: pairs, state: this.initial() };
      this.series.set(key, entry);
    }
    return entry.state;
  }

  reset(): void {
    this.series.clear();
  }

  protected abstract samples(): string[];

  render(): string {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`, ...this.samples()].join('\n') + '\n';
  }
}

export class Counter<L extends string = never> extends Metric<L, { value: number }> {
  readonly type = 'counter';
  readonly #collect: (() => number) | undefined;

  /** `collect`: a count kept elsewhere (e.g. the usage outbox's dropped records), read at render. */
  constructor(opts: MetricOptions<L> & { collect?: () => number }) {
    super(opts);
    this.#collect = opts.collect;
  }

  protected initial() {
    return { value: 0 };
  }

  inc(labels?: Labels<L>, by = 1): void {
    // Counters only go up; a negative or non-finite increment is a bug, ignored rather than thrown.
    if (!(by >= 0) || !Number.isFinite(by)) return;
    const s = this.stateFor(labels);
    if (s) s.value += by;
  }

  /** Creates the series at 0 so rate() sees it before the first increment. */
  init(labels?: Labels<L>): void {
    this.stateFor(labels);
  }

  get(labels?: Labels<L>): number {
    return this.stateFor(labels)?.value ?? 0;
  }

  protected samples(): string[] {
    if (this.#collect) {
      try {
        const v = this.#collect();
        const s = this.stateFor(undefined);
        if (s && Number.isFinite(v) && v >= s.value) s.value = v;
      } catch {
        // keep the last value: a counter must not go down or vanish because a source failed
      }
    }
    if (this.labelNames.length === 0 && this.series.size === 0) this.stateFor(undefined);
    return [...this.series.values()].map((e) => `${this.name}${labelText(e.labels)} ${formatValue(e.state.value)}`);
  }
}

export interface GaugeSample<L extends string> {
  labels?: Labels<L>;
  value: number;
}

export class Gauge<L extends string = never> extends Metric<L, { value: number }> {
  readonly type = 'gauge';
  readonly #collect: (() => number | GaugeSample<L>[]) | undefined;

  constructor(opts: MetricOptions<L> & { collect?: () => number | GaugeSample<L>[] }) {
    super(opts);
    this.#collect = opts.collect;
  }

  protected initial() {
    return { value: 0 };
  }

  set(labels: Labels<L> | undefined, value: number): void {
    const s = this.stateFor(labels);
    if (s) s.value = value;
  }

  inc(labels?: Labels<L>, by = 1): void {
    const s = this.stateFor(labels);
    if (s) s.value += by;
  }

  get(labels?: Labels<L>): number {
    return this.stateFor(labels)?.value ?? 0;
  }

  protected samples(): string[] {
    if (this.#collect) {
      // A collect callback is the source of truth: earlier values (e.g. a status no deployment has any more) must vanish.
      let got: number | GaugeSample<L>[];
      try {
        got = this.#collect();
      } catch {
        return [];
      }
      this.reset();
      if (typeof got === 'number') this.set(undefined, got);
      else for (const s of got) this.set(s.labels, s.value);
    }
    if (this.labelNames.length === 0 && this.series.size === 0) this.stateFor(undefined);
    return [...this.series.values()].map((e) => `${this.name}${labelText(e.labels)} ${formatValue(e.state.value)}`);
  }
}

export class Histogram<L extends string = never> extends Metric<L, { counts: number[]; sum: number; count: number }> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(opts: MetricOptions<L> & { buckets: readonly number[] }) {
    super(opts, ['le']);
    const b = [...opts.buckets];
    if (b.length === 0 || b.some((x, i) => !Number.isFinite(x) || (i > 0 && x <= b[i - 1]!))) {
      throw new Error(`histogram ${opts.name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = b;
  }

  protected initial() {
    return { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
  }

  observe(labels: Labels<L> | undefined, value: number): void {
    if (!Number.isFinite(value)) return;
    const s = this.stateFor(labels);
    if (!s) return;
    // Stored per bucket (non-cumulative) so observe is one increment; render accumulates.
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.counts[i]! += 1;
    s.sum += value;
    s.count += 1;
  }

  protected samples(): string[] {
    if (this.labelNames.length === 0 && this.series.size === 0) this.stateFor(undefined);
    const out: string[] = [];
    for (const { labels, state } of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += state.counts[i]!;
        out.push(`${this.name}_bucket${labelText([...labels, ['le', formatValue(b)]])} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${labelText([...labels, ['le', '+Inf']])} ${state.count}`);
      out.push(`${this.name}_sum${labelText(labels)} ${formatValue(state.sum)}`);
      out.push(`${this.name}_count${labelText(labels)} ${state.count}`);
    }
    return out;
  }
}

interface Renderable {
  readonly name: string;
  render(): string;
}

export class Registry {
  readonly #metrics = new Map<string, Renderable>();
  readonly #processMetrics: boolean;

  constructor(opts: { processMetrics?: boolean } = {}) {
    this.#processMetrics = opts.processMetrics ?? true;
  }

  #add<M extends Renderable>(m: M): M {
    if (this.#metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.#metrics.set(m.name, m);
    return m;
  }

  counter<L extends string = never>(opts: MetricOptions<L> & { collect?: () => number }): Counter<L> {
    return this.#add(new Counter<L>(opts));
  }

  gauge<L extends string = never>(opts: MetricOptions<L> & { collect?: () => number | GaugeSample<L>[] }): Gauge<L> {
    return this.#add(new Gauge<L>(opts));
  }

  histogram<L extends string = never>(opts: MetricOptions<L> & { buckets: readonly number[] }): Histogram<L> {
    return this.#add(new Histogram<L>(opts));
  }

  render(): string {
    const parts = [...this.#metrics.values()].map((m) => m.render());
    if (this.#processMetrics) parts.push(renderProcessMetrics());
    return parts.join('');
  }
}

/** The process and Node.js metrics (prom-client's names); see process-metrics.ts. */
export function renderProcessMetrics(): string {
  return renderProcessMetricsWith(formatValue);
}

/** Exhaustive on purpose: a new outcome fails to compile here, so every result series is pre-created. */
const OUTCOMES: Record<HeartbeatOutcome, true> = {
  accepted: true,
  rejected: true,
  unauthorized: true,
  'not-found': true,
  'rate-limited': true,
  unavailable: true,
  timeout: true,
  network: true,
  'invalid-response': true,
  'collect-failed': true,
};

/** Deployment statuses come from Docker and the panel; anything odd collapses to "other" to keep cardinality bounded. */
export function statusLabel(status: string): string {
  return /^[a-z][a-z_-]{0,31}$/.test(status) ? status : 'other';
}

export interface AgentMetricsSources extends StateGaugeSources {
  /** Deployment count per observed status, read at scrape time (e.g. StatusView.deployments). */
  deployments?: () => Record<string, number>;
  reportQueueDepth?: () => number;
  dockerHealthy?: () => boolean;
  /** State files whose newest content is not on disk (StateStore.health().failing). */
  stateWriteFailing?: () => readonly { file: string }[];
}

export interface AgentMetrics {
  readonly registry: Registry;
  readonly heartbeats: Counter<'result'>;
  readonly heartbeatRtt: Histogram;
  readonly reconcilePass: Histogram;
  readonly desiredToApplied: Histogram;
  readonly deployments: Gauge<'status'>;
  readonly reportQueueDepth: Gauge;
  readonly dockerHealthy: Gauge;
  /** Failed writes per state file; pass `inc({ file })` as StateStore `onWriteFailure`. */
  readonly stateWriteFailures: Counter<'file'>;
  readonly stateWriteFailing: Gauge<'file'>;
  /** Unusable state files moved aside at load; pass `inc({ file })` as StateStore `onMovedAside`. */
  readonly stateFilesMovedAside: Counter<'file'>;
  /** Pass as HeartbeatLoop `onBeat`. */
  recordHeartbeat(record: HeartbeatRecord): void;
  observeReconcilePass(seconds: number): void;
  observeDesiredToApplied(seconds: number): void;
  /** For when no `deployments` source was given: replaces every status series at once. */
  setDeploymentCounts(counts: Record<string, number>): void;
  render(): string;
}

export function createAgentMetrics(sources: AgentMetricsSources = {}): AgentMetrics {
  const registry = new Registry();
  const heartbeats = registry.counter<'result'>({
    name: 'skypanel_agent_heartbeats_total',
    help: 'Heartbeat attempts by result.',
    labelNames: ['result'],
  });
  for (const result of Object.keys(OUTCOMES)) heartbeats.init({ result });
  const heartbeatRtt = registry.histogram({
    name: 'skypanel_agent_heartbeat_rtt_seconds',
    help: 'Round trip of heartbeats that got an HTTP response.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  const reconcilePass = registry.histogram({
    name: 'skypanel_agent_reconcile_pass_seconds',
    help: 'Duration of one reconcile pass.',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  });
  const desiredToApplied = registry.histogram({
    name: 'skypanel_agent_desired_to_applied_seconds',
    help: 'Time from a desired-state change being seen to it being applied.',
    buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
  });
  const deploymentsSource = sources.deployments;
  const deployments = registry.gauge<'status'>({
    name: 'skypanel_agent_deployments',
    help: 'Deployments on this worker by observed status.',
    labelNames: ['status'],
    maxSeries: 32,
    ...(deploymentsSource ? { collect: () => countsToSamples(deploymentsSource()) } : {}),
  });
  const queueSource = sources.reportQueueDepth;
  const reportQueueDepth = registry.gauge({
    name: 'skypanel_agent_report_queue_depth',
    help: 'Reports waiting to be sent to the control plane.',
    ...(queueSource ? { collect: queueSource } : {}),
  });
  const lastHeartbeatOk = registry.gauge({
    name: 'skypanel_agent_last_heartbeat_success_timestamp_seconds',
    help: 'Unix time of the last heartbeat the control plane accepted; 0 before the first.',
  });
  registerStateGauges(registry, sources);
  const dockerSource = sources.dockerHealthy;
  const dockerHealthy = registry.gauge({
    name: 'skypanel_agent_docker_healthy',
    help: '1 when the Docker Engine answered the last check, else 0.',
    ...(dockerSource ? { collect: () => (dockerSource() ? 1 : 0) } : {}),
  });

  // Label values are the agent's own file names (a handful), so the series stay bounded.
  const stateWriteFailures = registry.counter<'file'>({
    name: 'skypanel_agent_state_write_failures_total',
    help: 'Failed writes to the state directory, by file (the agent works from memory and retries).',
    labelNames: ['file'],
    maxSeries: 16,
  });
  const failingSource = sources.stateWriteFailing;
  const stateWriteFailing = registry.gauge<'file'>({
    name: 'skypanel_agent_state_write_failing',
    help: '1 per state file whose newest content could not be written yet.',
    labelNames: ['file'],
    maxSeries: 16,
    ...(failingSource ? { collect: () => failingSource().map((f) => ({ labels: { file: f.file }, value: 1 })) } : {}),
  });
  const stateFilesMovedAside = registry.counter<'file'>({
    name: 'skypanel_agent_state_files_moved_aside_total',
    help: 'State files found unusable at load and moved aside, by file.',
    labelNames: ['file'],
    maxSeries: 16,
  });

  return {
    registry,
    heartbeats,
    heartbeatRtt,
    reconcilePass,
    desiredToApplied,
    deployments,
    reportQueueDepth,
    dockerHealthy,
    stateWriteFailures,
    stateWriteFailing,
    stateFilesMovedAside,
    recordHeartbeat(record) {
      heartbeats.inc({ result: record.outcome in OUTCOMES ? record.outcome : 'other' });
      if (record.outcome === 'accepted') lastHeartbeatOk.set(undefined, Math.round(record.at / 1000));
      // Only a real HTTP answer is a round trip; the time to a timeout or refused connection would skew the histogram.
      if (record.status !== undefined && record.rttMs !== undefined) heartbeatRtt.observe(undefined, record.rttMs / 1000);
    },
    observeReconcilePass: (s) => reconcilePass.observe(undefined, s),
    observeDesiredToApplied: (s) => desiredToApplied.observe(undefined, s),
    setDeploymentCounts(counts) {
      deployments.reset();
      for (const s of countsToSamples(counts)) deployments.set(s.labels, s.value);
    },
    render: () => registry.render(),
  };
}

function countsToSamples(counts: Record<string, number>): GaugeSample<'status'>[] {
  const merged = new Map<string, number>();
  for (const [status, n] of Object.entries(counts)) {
    const label = statusLabel(status);
    merged.set(label, (merged.get(label) ?? 0) + n);
  }
  return [...merged].map(([status, value]) => ({ labels: { status }, value }));
}
