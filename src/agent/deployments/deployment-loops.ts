import type { ParseOptions } from '../../protocol/deployment.js';
import type { BackoffPolicy } from '../../controlplane/backoff.js';
import type { ControlPlaneClient } from '../../controlplane/control-plane-client.js';
import { DesiredStatePoller, type DeploymentsApiMode, type DesiredSet } from './desired-state-poller.js';
import type { EngineEventSink, SwarmPort } from '../../ports.js';
import type { Logger } from '../logger.js';
import type { AgentMetrics } from '../status/metrics.js';
import { Reconciler } from './reconciler.js';
import { ReportOutbox } from './report-outbox.js';
import type { DeploymentView, ReconcilePassView } from '../status/status-model.js';
import { StateStore } from '../state/state-store.js';
import { StatusReporter, secretValuesOf } from './status-reporter.js';
import type { SecretLike } from '../../secret.js';

/** Opens Docker's event stream for the reconciler (src/swarm/engine-events.ts). */
export type EngineEventWatch = (sink: EngineEventSink) => { start(): void; stop(): Promise<void> };

export interface DeploymentLoopsOptions {
  client: ControlPlaneClient;
  workerId(): string;
  bootId: string;
  stateDir: string;
  /** The agent's one store of the state directory (shared, so its health covers every file); built on stateDir when absent. */
  store?: StateStore;
  /** Every secret value to redact from reports (the token, the deployments' secrets); the deployments' own when absent. */
  knownSecrets?: () => readonly SecretLike[];
  pollIntervalMs: number;
  resyncMs: number;
  backoff: BackoffPolicy;
  publicUrlTemplate: string;
  ipAddress: string;
  nodeId(): string | null;
  /** How this agent reads (and, unless readOnly, writes) Swarm; absent when not in a swarm. */
  swarm: SwarmPort | undefined;
  readOnly: boolean;
  isDraining(): boolean;
  /** See ReconcilerDeps.unscheduledFailAfterMs. */
  unscheduledFailAfterMs?: number;
  metrics: AgentMetrics;
  logger: Logger;
  /** Docker's event stream, so that a change to what this worker owns starts a pass at once; absent: resync only. */
  watchEngineEvents?: EngineEventWatch;
  /** This host's rules for deployments (host ports they may not publish). */
  parse?: ParseOptions;
}

/**
 * Everything about deployments, wired together: desired state (poll, persist) → reconciler
 * (observe, plan, apply) → reporter → durable outbox → control plane.
 */
export class DeploymentLoops {
  readonly #opts: DeploymentLoopsOptions;
  readonly #store: StateStore;
  readonly #poller: DesiredStatePoller;
  readonly #outbox: ReportOutbox;
  readonly #reporter: StatusReporter;
  readonly #reconciler: Reconciler | undefined;
  readonly #events: ReturnType<EngineEventWatch> | undefined;
  #desired: DesiredSet | undefined;
  #eventsLost = false;

  constructor(opts: DeploymentLoopsOptions) {
    this.#opts = opts;
    const { logger } = opts;
    this.#store = opts.store ?? new StateStore(opts.stateDir, { logger });
    this.#outbox = new ReportOutbox({
      client: opts.client,
      workerId: opts.workerId,
      bootId: opts.bootId,
      store: this.#store,
      backoff: opts.backoff,
      logger: logger.child({ loop: 'reports' }),
    });
    this.#reporter = new StatusReporter(this.#outbox, opts.knownSecrets ?? (() => this.secretValues()));
    this.#reconciler = opts.swarm
      ? new Reconciler({
          port: opts.swarm,
          workerId: opts.workerId(),
          nodeId: opts.nodeId,
          ipAddress: opts.ipAddress,
          publicUrlTemplate: opts.publicUrlTemplate,
          resyncMs: opts.resyncMs,
          logger: logger.child({ loop: 'reconcile' }),
          onStatus: (changes, rejected) => this.#reporter.publish(changes, rejected),
          onPass: (p) => opts.metrics.observeReconcilePass(p.durationMs / 1000),
          onApplied: (s) => opts.metrics.observeDesiredToApplied(s),
          readOnly: opts.readOnly,
          isDraining: opts.isDraining,
          unscheduledFailAfterMs: opts.unscheduledFailAfterMs,
        })
      : undefined;
    const reconciler = this.#reconciler;
    this.#events =
      reconciler &&
      opts.watchEngineEvents?.({
        onEvent: (e) => reconciler.noteEngineEvent(e),
        onLive: (live, reason) => {
          reconciler.setEventsLive(live);
          // Said once per loss and once per recovery: a daemon restart is two lines, not a stream of them.
          if (!live && !this.#eventsLost)
            logger.warn({ err: reason }, 'docker event stream lost: reconcile passes every minute until it is back');
          else if (live && this.#eventsLost) logger.info('docker event stream back');
          this.#eventsLost = !live;
        },
      });
    this.#poller = new DesiredStatePoller({
      client: opts.client,
      workerId: opts.workerId,
      intervalMs: opts.pollIntervalMs,
      backoff: opts.backoff,
      store: this.#store,
      logger: logger.child({ loop: 'desired-state' }),
      onDesired: (set) => this.#setDesired(set),
      parse: opts.parse,
    });
  }

  async start(): Promise<void> {
    await this.#store.init();
    await this.#outbox.restore();
    // Enforce what the control plane last asked for, even if it is unreachable right now.
    const restored = await this.#poller.restore();
    if (restored) {
      this.#opts.logger.info({ deployments: restored.deployments.length }, 'restored the last desired set from the state directory');
      this.#setDesired(restored);
    }
    this.#outbox.start();
    this.#reconciler?.start();
    this.#events?.start();
    this.#poller.start();
  }

  async stop(): Promise<void> {
    await this.#events?.stop();
    await this.#poller.stop();
    await this.#reconciler?.stop();
    await this.#outbox.stop();
  }

  #setDesired(set: DesiredSet): void {
    this.#desired = set;
    if (this.#reconciler) this.#reconciler.setDesired(set);
    else if (set.deployments.length > 0)
      this.#opts.logger.warn(
        { deployments: set.deployments.length },
        'deployments assigned, but this engine is not in a swarm; not applied',
      );
  }

  /** The desired set's ETag as a heartbeat answer gave it (undefined: no hint). */
  noteDesiredEtag(etag: string | undefined): void {
    if (etag !== undefined) this.#poller.noteEtagHint(etag);
  }

  /** The blocking query's wait a heartbeat answer announced (undefined: none, so poll). */
  noteDesiredWait(waitSec: number | undefined): void {
    this.#poller.noteBlockingWait(waitSec);
  }

  get queueDepth(): number {
    return this.#outbox.depth;
  }

  get lastPass(): ReconcilePassView | undefined {
    return this.#reconciler?.lastPass;
  }

  get deploymentsApi(): DeploymentsApiMode {
    return this.#poller.mode;
  }

  /** undefined when Docker's event stream is not watched (no reconciler, or no watcher given). */
  get engineEventsConnected(): boolean | undefined {
    return this.#events ? !this.#eventsLost : undefined;
  }

  /**
   * The applied deployments, then those the panel sent malformed: reported failed, shown here with
   * the reason. One whose id also came valid (listed twice) is shown once, as the valid one.
   */
  views(): DeploymentView[] {
    const applied = this.#reconciler?.views() ?? [];
    const shown = new Set(applied.map((v) => v.id));
    const rejected = this.#reportedRejected().flatMap((r): DeploymentView[] =>
      r.id === null || shown.has(r.id)
        ? []
        : [
            {
              id: r.id,
              serviceId: r.serviceId ?? '',
              slug: '-',
              imageTag: '-',
              desiredState: 'running',
              observedStatus: 'failed',
              swarmServiceId: null,
              replicas: { running: 0, desired: 0 },
              publicUrl: null,
              lastError: `invalid deployment: ${r.message}`,
              environmentVarNames: [],
              secretNames: [],
              rejected: { field: r.field, message: r.message },
            },
          ],
    );
    return [...applied, ...rejected];
  }

  /** The rejected deployments reported failed: not those whose id also came valid (listed twice). */
  #reportedRejected() {
    const valid = new Set(this.#desired?.deployments.map((d) => d.id) ?? []);
    return (this.#desired?.rejected ?? []).filter((r) => r.id === null || !valid.has(r.id));
  }

  /** Rejected deployments by the top-level field that broke them, id or not (for the metrics). */
  rejectedCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const r of this.#reportedRejected()) {
      const field = r.field.split(/[.[]/)[0] || 'other';
      counts[field] = (counts[field] ?? 0) + 1;
    }
    return counts;
  }

  counts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const v of this.views()) counts[v.observedStatus] = (counts[v.observedStatus] ?? 0) + 1;
    return counts;
  }

  secretValues(): string[] {
    return this.#desired ? secretValuesOf(this.#desired.deployments) : [];
  }

  logs(id: string, lines: number): Promise<string[]> {
    const v = this.views().find((d) => d.id === id);
    if (!v?.swarmServiceId || !this.#opts.swarm) return Promise.resolve([]);
    return this.#opts.swarm.serviceLogs(v.swarmServiceId, lines);
  }
}
