import { AGENT_VERSION } from '../version.js';
import { KnownSecrets, Secret } from '../secret.js';
import { StateStore } from './state/state-store.js';
import { HostLoadCollector, readCapacity, type Capacity } from '../collectors/host-metrics.js';
import type { CpuSnapshot } from '../collectors/cpu.js';
import type { AgentConfig } from './config-schema.js';
import { AgentError } from '../errors.js';
import { describeEndpoint, type DockerEndpoint } from './config.js';
import { ControlPlaneClient } from '../controlplane/control-plane-client.js';
import { DEFAULT_BACKOFF } from '../controlplane/backoff.js';
import { HeartbeatLoop, type HeartbeatPayload, type HeartbeatRecord } from './heartbeat-loop.js';
import type { Logger } from './logger.js';
import { createAgentMetrics, type AgentMetrics } from './status/metrics.js';
import { createStatusServer, type StatusServer } from './status/status-server.js';
import { startMetricsListener } from './status/metrics-server.js';
import { heartbeatOnlyReason, type ControlPlaneWaitView, type StatusSource, type StatusView } from './status/status-model.js';
import { buildRegisterRequest, registerWorker, reconcileModeFor } from '../controlplane/registration.js';
import { deploymentsEtagHint, deploymentsWaitHint, panelWorkerStatus, type SwarmRole } from '../protocol/worker.js';
import { DeploymentLoops, type EngineEventWatch } from './deployments/deployment-loops.js';
import { readDrain } from './drain.js';
import { UsageLoop } from './usage/usage-loop.js';
import type { EngineProbe, EngineSnapshot, SwarmPort, UsageSampler } from '../ports.js';
import { EngineFacts } from './engine-facts.js';
import { localAddressToward, toPanelIp } from '../collectors/address.js';

export interface AgentOptions {
  config: AgentConfig;
  /** Where `config.dockerSocket` came from (loadConfig's dockerEndpoint); logged at start and served by the status API. */
  dockerEndpoint?: DockerEndpoint;
  logger: Logger;
  /** A CPU sample taken earlier (at process start): the first heartbeat's CPU window starts there. */
  cpuBaseline?: CpuSnapshot;
  engine: EngineProbe;
  /** Builds the Swarm ports for each reconcile mode; absent in tests that only heartbeat. */
  swarm?: SwarmPorts;
  /** Reads the managed containers' counters for usage metering; absent: no metering. */
  usageSampler?(workerId: () => string): UsageSampler;
  /** Docker's event stream for the reconciler; absent: passes on the resync interval only. */
  watchEngineEvents?: EngineEventWatch;
  /** Secret values to redact from output, shared with the logger; the agent adds the token and the deployments' secrets. */
  secrets?: KnownSecrets;
}

export interface SwarmPorts {
  /** Writes through the local engine (it is a manager). */
  local(workerId: string, nodeId: () => string | null): SwarmPort;
  /** Writes through the configured manager endpoint (mutual TLS). */
  remote?(workerId: string, nodeId: () => string | null): Promise<SwarmPort>;
  /** Reads this node's task containers; never writes. */
  observe(): SwarmPort;
}

/**
 * The composition root of a running agent: builds the loops from injected parts and owns
 * their lifecycle. Several agents can live in one process (tests, `dev`).
 */
export class Agent {
  readonly #opts: AgentOptions;
  readonly #client: ControlPlaneClient;
  readonly #load = new HostLoadCollector();
  readonly #heartbeat: HeartbeatLoop;
  readonly #metrics: AgentMetrics;
  readonly #statusServer: StatusServer;
  /** The one store of the state directory: every loop persists through it, so its health covers every file. */
  readonly #store: StateStore;
  readonly #secrets: KnownSecrets;
  readonly #forgetSecrets: (() => void)[];
  readonly startedAt = Date.now();
  readonly #workerId: string;
  readonly #token: Secret;
  /** GET /info on its own loop; heartbeats and the status API read the latest facts. */
  readonly #facts: EngineFacts;
  #capacity: Capacity | undefined;
  #lastLoad: StatusView['load'] = null;
  #deployments: DeploymentLoops | undefined;
  /** Docker did not answer at start: the loops run in mode "none" until an engine check succeeds. */
  #deploymentsDeferred = false;
  #deploymentsStarting: Promise<void> | undefined;
  #stopping = false;
  #draining = false;
  /** The panel's heartbeat answer says an admin drained this worker (kept until an answer says otherwise). */
  #panelDraining = false;
  #usage: UsageLoop | undefined;
  /** Where the status API is bound (statusListen, or the port picked for port 0): no deployment may publish that port. */
  #statusApi: { address: string; port: number } | undefined;
  #metricsApi: Awaited<ReturnType<typeof startMetricsListener>>;

  constructor(opts: AgentOptions) {
    this.#opts = opts;
    const { config } = opts;
    if (!config.workerId) throw new Error('Agent needs a registered workerId');
    this.#workerId = config.workerId;
    this.#token = new Secret(config.token);
    this.#client = new ControlPlaneClient({
      baseUrl: config.controlPlaneUrl,
      token: this.#token,
      timeoutMs: config.requestTimeoutSec * 1000,
    });
    this.#facts = new EngineFacts({
      probe: opts.engine,
      heartbeatIntervalMs: config.heartbeatIntervalSec * 1000,
      logger: opts.logger,
      onRead: (facts) => this.#onEngineRead(facts),
    });
    this.#heartbeat = new HeartbeatLoop({
      send: async (id, body) => {
        const res = await this.#client.postJson(`/api/workers/${encodeURIComponent(id)}/heartbeat`, body);
        if (res.ok) {
          this.#deployments?.noteDesiredWait(deploymentsWaitHint(res.body));
          this.#deployments?.noteDesiredEtag(deploymentsEtagHint(res.body));
          this.#notePanelStatus(panelWorkerStatus(res.body));
        }
        return res;
      },
      collect: () => this.#collect(),
      workerId: () => this.#workerId,
      reregister: () => this.#reregister(),
      logger: opts.logger.child({ loop: 'heartbeat' }),
      intervalMs: config.heartbeatIntervalSec * 1000,
      backoff: { ...DEFAULT_BACKOFF, capMs: config.backoffCapSec * 1000 },
      onBeat: (r) => this.#metrics.recordHeartbeat(r),
    });
    this.#metrics = createAgentMetrics({
      dockerHealthy: () => this.#facts.healthy,
      deployments: () => this.#deployments?.counts() ?? {},
      reportQueueDepth: () => (this.#deployments?.queueDepth ?? 0) + (this.#usage?.queueDepth ?? 0),
      stateWriteFailing: () => this.#store.health().failing,
      usageUnsent: () => this.#usage?.queueDepth ?? 0,
      usageDropped: () => this.#usage?.view().delivery.droppedRecords ?? 0,
      engineEventsConnected: () => this.#deployments?.engineEventsConnected,
      rejectedDeployments: () => this.#deployments?.rejectedCounts() ?? {},
      heartbeatOnly: () => this.#heartbeatOnlyReason() !== null,
    });
    this.#store = new StateStore(config.stateDir, {
      logger: opts.logger.child({ component: 'state-dir' }),
      onWriteFailure: (file) => this.#metrics.stateWriteFailures.inc({ file }),
      onMovedAside: (file) => this.#metrics.stateFilesMovedAside.inc({ file }),
    });
    this.#secrets = opts.secrets ?? new KnownSecrets();
    this.#forgetSecrets = [this.#secrets.add(config.token), this.#secrets.add(() => this.#deployments?.secretValues() ?? [])];
    this.#statusServer = createStatusServer({
      listen: config.statusListen,
      token: new Secret(config.token),
      source: this.statusSource(),
      metrics: this.#metrics,
      tls: config.statusTlsCert && config.statusTlsKey ? { certFile: config.statusTlsCert, keyFile: config.statusTlsKey } : undefined,
      logger: opts.logger.child({ component: 'status-api' }),
    });
  }

  get workerId(): string {
    return this.#workerId;
  }

  get bootId(): string {
    return this.#heartbeat.bootId;
  }

  /** Where the status API listens, once started. */
  get statusApi(): { address: string; port: number } | undefined {
    return this.#statusApi;
  }

  get lastHeartbeat(): HeartbeatRecord | undefined {
    return this.#heartbeat.last;
  }

  /** The running agent as the status API sees it: views only, nothing secret. */
  statusSource(): StatusSource {
    const intervalSec = this.#opts.config.heartbeatIntervalSec;
    return {
      status: () => {
        const role = this.#facts.latest?.swarmRole ?? 'none';
        const hb = this.#heartbeat.last;
        return {
          workerId: this.#workerId,
          agentVersion: AGENT_VERSION,
          uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
          bootId: this.#heartbeat.bootId,
          swarm: { nodeId: this.#facts.latest?.swarmNodeId ?? null, role, reconcileMode: this.#mode(role) },
          dockerHealthy: this.#facts.healthy,
          docker: { endpoint: this.#dockerEndpoint() },
          capacity: this.#capacity ?? null,
          load: this.#lastLoad,
          lastHeartbeat: hb
            ? { at: new Date(hb.at).toISOString(), outcome: hb.outcome, status: hb.status, rttMs: hb.rttMs, message: hb.message }
            : null,
          controlPlaneWait: this.#controlPlaneWait(),
          lastReconcile: this.#deployments?.lastPass ?? null,
          deployments: this.#deployments?.counts() ?? {},
          stateDir: this.#store.health(),
          deploymentsApi: this.#deployments?.deploymentsApi ?? 'unknown',
          heartbeatOnly: this.#heartbeatOnlyReason(),
        };
      },
      degradedReason: () => {
        const failing = this.#store.health().failing;
        if (failing.length === 0) return null;
        const files = failing.map((f) => `${f.file} (${f.error} since ${f.since})`).join(', ');
        // /healthz needs no token: file names and error codes only, no path.
        return `cannot write the state directory: ${files}; working from memory and retrying`;
      },
      // Overdue time of the next heartbeat: a loop waiting out a long Retry-After is alive, not wedged.
      loopStalledForSec: () => {
        const hb = this.#heartbeat.last;
        const dueAt = hb ? hb.at + hb.nextInMs : this.startedAt;
        return Math.max(0, (Date.now() - dueAt) / 1000);
      },
      wedgedAfterSec: () => 3 * intervalSec,
      controlPlaneWait: () => this.#controlPlaneWait(),
      deployments: () => this.#deployments?.views() ?? [],
      deploymentLogs: (id, lines) => this.#deployments?.logs(id, lines) ?? Promise.resolve([]),
      secretValues: () => this.#deployments?.secretValues() ?? [],
      usage: () => this.#usage?.view(),
    };
  }

  #controlPlaneWait(): ControlPlaneWaitView | null {
    const hb = this.#heartbeat.last;
    if (hb?.serverWaitMs === undefined) return null;
    const until = hb.at + hb.nextInMs;
    if (until <= Date.now()) return null;
    const why = hb.status === 429 ? 'rate limited (HTTP 429)' : `HTTP ${hb.status ?? '?'} with Retry-After`;
    return {
      until: new Date(until).toISOString(),
      reason: `control plane answered ${why}: next heartbeat at ${new Date(until).toISOString()}`,
    };
  }

  async start(): Promise<void> {
    await this.#load.prime(this.#opts.cpuBaseline);
    await this.#facts.refresh();
    this.#capacity = (await readCapacity(this.#facts.latest?.dockerRootDir)).capacity;
    const listening = await this.#statusServer.start();
    this.#statusApi = listening;
    this.#metricsApi = await startMetricsListener(
      this.#opts.config,
      () => this.#metrics.render(),
      this.#opts.logger.child({ component: 'metrics' }),
    );
    const role = this.#facts.latest?.swarmRole ?? 'none';
    this.#opts.logger.info(
      {
        workerId: this.#workerId,
        agentVersion: AGENT_VERSION,
        controlPlane: this.#opts.config.controlPlaneUrl,
        heartbeatIntervalSec: this.#opts.config.heartbeatIntervalSec,
        dockerHealthy: this.#facts.healthy,
        dockerEndpoint: this.#dockerEndpoint(),
        swarmRole: role,
        reconcileMode: this.#mode(role),
        statusApi: `${listening.address}:${listening.port}`,
      },
      'agent started',
    );
    // Docker did not answer: the swarm role, and so the reconcile mode, is unknown. The loops start in
    // mode "none" (the desired set is fetched and kept, queued reports are delivered) and are rebuilt in
    // their real mode at the first engine check that succeeds (every heartbeat interval), not left so until a restart.
    this.#deploymentsDeferred = this.#facts.latest === undefined;
    if (this.#deploymentsDeferred) this.#opts.logger.warn('docker unreachable at start: deployments are applied once it answers');
    this.#heartbeat.start();
    this.#facts.start();
    try {
      this.#deploymentsStarting = this.#startDeployments(role);
      await this.#deploymentsStarting;
      await this.#startUsage();
    } catch (err) {
      // e.g. an unreadable swarmManagerCert: the CLI exits non-zero on this error, so nothing may
      // keep running (a heartbeat loop alone would keep the process alive, reporting healthy).
      await this.stop().catch(() => {});
      throw err;
    }
    // Register again at every start (allowed and idempotent): the panel's row then carries this
    // run's agent version, Docker version and reconcile mode, not those of the original `register`.
    void this.#reregister('refresh');
  }

  /** Metering reads only local containers, so it runs in every mode, observe included. */
  async #startUsage(): Promise<void> {
    const { config, logger } = this.#opts;
    if (!this.#opts.usageSampler) return;
    this.#usage = new UsageLoop({
      sampler: this.#opts.usageSampler(() => this.#workerId),
      client: this.#client,
      workerId: () => this.#workerId,
      stateDir: config.stateDir,
      store: this.#store,
      sampleIntervalSec: config.usageSampleIntervalSec,
      periodSec: config.usagePeriodSec,
      backoff: { ...DEFAULT_BACKOFF, capMs: config.backoffCapSec * 1000 },
      logger: logger.child({ loop: 'usage' }),
    });
    await this.#usage.start();
  }

  #dockerEndpoint(): string {
    return describeEndpoint(this.#opts.dockerEndpoint ?? { socketPath: this.#opts.config.dockerSocket, source: 'default' });
  }

  #heartbeatOnlyReason(): string | null {
    return heartbeatOnlyReason(
      this.#deployments?.deploymentsApi ?? 'unknown',
      this.#facts.latest === undefined ? undefined : this.#mode(this.#facts.latest.swarmRole),
    );
  }

  #mode(role: SwarmRole) {
    const { config } = this.#opts;
    return reconcileModeFor(role, {
      managerEndpoint: config.swarmManagerHost !== undefined,
      forceObserve: config.reconcileMode === 'observe',
    });
  }

  async #startDeployments(role: SwarmRole): Promise<void> {
    const { config, logger } = this.#opts;
    const ip =
      config.ipAddress !== undefined
        ? toPanelIp(config.ipAddress)
        : await localAddressToward(config.controlPlaneUrl).catch(() => undefined);
    const nodeId = () => this.#facts.latest?.swarmNodeId ?? null;
    const mode = this.#mode(role);
    const ports = this.#opts.swarm;
    let swarm: SwarmPort | undefined;
    if (ports && mode === 'manager') swarm = ports.local(this.#workerId, nodeId);
    else if (ports && mode === 'remote-manager' && ports.remote) swarm = await ports.remote(this.#workerId, nodeId);
    else if (ports && mode === 'observe') swarm = ports.observe();
    if (mode === 'observe') logger.info('observe mode: deployments on this node are reported, never written');
    if (mode === 'none' && this.#facts.latest !== undefined)
      logger.warn('this engine is not in a swarm: deployments cannot run here and are not applied');
    this.#deployments = new DeploymentLoops({
      client: this.#client,
      workerId: () => this.#workerId,
      bootId: this.#heartbeat.bootId,
      stateDir: config.stateDir,
      store: this.#store,
      knownSecrets: () => this.#secrets.values(),
      pollIntervalMs: config.pollIntervalSec * 1000,
      resyncMs: config.resyncIntervalSec * 1000,
      backoff: { ...DEFAULT_BACKOFF, capMs: config.backoffCapSec * 1000 },
      publicUrlTemplate: config.publicUrlTemplate,
      ipAddress: ip ?? '127.0.0.1',
      nodeId,
      swarm,
      readOnly: mode === 'observe',
      // Either drain stops new starts: the host's (skypanel-agent drain) or an admin's on the panel.
      isDraining: () => this.#draining || this.#panelDraining,
      unscheduledFailAfterMs: config.unscheduledTimeoutSec * 1000,
      metrics: this.#metrics,
      logger,
      watchEngineEvents: swarm ? this.#opts.watchEngineEvents : undefined,
      parse: {
        hostPorts: { statusPort: this.#statusApi?.port, metricsPort: this.#metricsApi?.port, allowed: config.allowedHostPorts },
        hostCpus: this.#facts.latest?.ncpu,
      },
    });
    await this.#deployments.start();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#heartbeat.stop();
    await this.#facts.stop();
    await this.#deploymentsStarting?.catch(() => {});
    await this.#deployments?.stop();
    await this.#usage?.stop();
    await this.#store.stop();
    for (const forget of this.#forgetSecrets) forget();
    await this.#statusServer.stop();
    await this.#metricsApi?.server.stop();
    await this.#client.close();
    await this.#opts.engine.close?.();
    this.#opts.logger.info('agent stopped');
  }

  /** Docker answered: loops deferred because it did not at start now start in their real mode. */
  #onEngineRead(facts: EngineSnapshot): void {
    if (!this.#deploymentsDeferred || this.#stopping) return;
    this.#deploymentsDeferred = false;
    const previous = this.#deploymentsStarting;
    const role = facts.swarmRole;
    // The mode-"none" loops published no report (no reconciler), so the new outbox's seq cannot collide.
    this.#deploymentsStarting = (async () => {
      await previous?.catch(() => {});
      if (this.#stopping) return;
      await this.#deployments?.stop();
      this.#deployments = undefined;
      if (this.#stopping) return;
      this.#opts.logger.info(
        { swarmRole: role, reconcileMode: this.#mode(role) },
        'docker answers: deployment loops restarted in their mode',
      );
      await this.#startDeployments(role);
    })().catch((err: Error) => {
      this.#deployments = undefined;
      this.#deploymentsDeferred = true;
      this.#opts.logger.error({ err: err.message }, 'deployment loops could not start; trying again at the next engine check');
    });
  }

  /** No Engine call here: the facts come from their own loop (EngineFacts), as fresh as its last read. */
  async #collect(): Promise<HeartbeatPayload> {
    const drain = await readDrain(this.#opts.config.stateDir);
    if ((drain !== null) !== this.#draining) {
      this.#opts.logger.warn(
        { draining: drain !== null, since: drain?.since },
        drain ? 'draining: no new deployments will be started here' : 'drain lifted: accepting deployments again',
      );
    }
    this.#draining = drain !== null;
    const load = await this.#load.read(this.#facts.latest?.dockerRootDir);
    // With Docker down the last known count is the best estimate; dockerHealthy=false says so.
    const containerCount = this.#facts.latest?.containersRunning ?? 0;
    this.#lastLoad = { ...load, containerCount };
    return {
      ...load,
      containerCount,
      agentVersion: AGENT_VERSION,
      swarmNodeId: this.#facts.latest?.swarmNodeId ?? null,
      dockerHealthy: this.#facts.healthy,
      draining: this.#draining,
    };
  }

  #notePanelStatus(status: ReturnType<typeof panelWorkerStatus>): void {
    // No status in the answer (stock SkyPanelV2) says nothing about a drain: keep what we knew.
    if (status === undefined) return;
    const draining = status === 'draining';
    if (draining !== this.#panelDraining) {
      this.#opts.logger.warn(
        { panelStatus: status },
        draining
          ? 'the panel drained this worker: no new deployments will be started here'
          : 'the panel lifted its drain: accepting deployments again',
      );
    }
    this.#panelDraining = draining;
  }

  async #reregister(why: 'lost' | 'refresh' = 'lost'): Promise<boolean> {
    const { config, logger } = this.#opts;
    try {
      const req = await buildRegisterRequest({
        controlPlaneUrl: config.controlPlaneUrl,
        ipAddress: config.ipAddress,
        name: config.name,
        engine: this.#facts.latest,
        mode: { managerEndpoint: config.swarmManagerHost !== undefined, forceObserve: config.reconcileMode === 'observe' },
        logger,
      });
      // The worker id is fixed for the life of the config: an answer naming another is refused in registerWorker.
      const id = await registerWorker(this.#client, req, { token: this.#token, configuredWorkerId: this.#workerId });
      if (why === 'lost') logger.info({ workerId: id }, 'registered again');
      else logger.debug({ workerId: id }, 'registration refreshed');
      return true;
    } catch (err) {
      if (err instanceof AgentError && err.code === 'SKP_ERR_WORKER_ID_MISMATCH') {
        logger.error({ code: err.code, workerId: this.#workerId }, err.message);
        return false;
      }
      const msg =
        why === 'lost' ? 're-registration failed; will retry' : 'could not refresh the registration at start; heartbeats carry on';
      logger.warn({ err: (err as Error).message }, msg);
      return false;
    }
  }
}
