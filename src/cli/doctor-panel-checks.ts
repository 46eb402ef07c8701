import { randomUUID } from 'node:crypto';
import { Secret } from '../secret.js';
import { AGENT_VERSION } from '../version.js';
import type { AgentConfig } from '../agent/config-schema.js';
import { ControlPlaneClient } from '../controlplane/control-plane-client.js';
import { HostLoadCollector } from '../collectors/host-metrics.js';
import { CpuSampler } from '../collectors/cpu.js';
import type { HeartbeatRequest } from '../protocol/worker.js';
import { boundedGet, transportMessage } from './status.js';
import { HttpTimeoutError } from '../http/errors.js';
import { errCode, fail, oneLine, pass, skip, warn, type Outcome } from './doctor-check.js';
import type { ConfigState, DockerState } from './doctor-host-checks.js';

/** The doctor's checks against the control plane: the network path to it, the worker token, the clock. */

/** Clock skew against the control plane: warn above, fail above. */
export const SKEW_WARN_SEC = 5;
export const SKEW_FAIL_SEC = 60;

// --- control plane, token, clock -------------------------------------------------------------------

export interface PanelState {
  reached?: boolean;
  /** Local clock minus the control plane's, in seconds, from its Date header. */
  skewSec?: number;
  skewMarginSec?: number;
  dateSeen?: boolean;
}

/** Any HTTP answer from the panel's origin counts: this checks the network path, not the API. */
export async function checkControlPlane(config: AgentConfig | undefined, timeoutMs: number, state: PanelState): Promise<Outcome> {
  if (!config) return skip('skipped: no usable config');
  // Not ControlPlaneClient: this GET carries no token, and any answer counts, an HTML page included
  // (the client refuses a 2xx that is not JSON, and keeps no headers then: the Date is needed here).
  const url = `${config.controlPlaneUrl}/`;
  try {
    const sent = Date.now();
    // The body is not read: the connection is closed as soon as the headers are in.
    const res = await boundedGet(url, {
      headers: { 'user-agent': `skypanel-agent/${AGENT_VERSION} doctor`, accept: 'application/json' },
      timeoutMs,
      maxBodyBytes: 0,
    });
    const received = res.headersAt;
    state.reached = true;
    const date = res.headers.date;
    const serverMs = typeof date === 'string' ? Date.parse(date) : NaN;
    if (!Number.isNaN(serverMs)) {
      // Date has a resolution of one second: the panel's clock read somewhere in [Date, Date + 1 s).
      const localMid = (sent + received) / 2;
      state.skewSec = (localMid - (serverMs + 500)) / 1000;
      state.skewMarginSec = 0.5 + (received - sent) / 2000;
      state.dateSeen = true;
    }
    return pass(`${config.controlPlaneUrl} answered HTTP ${res.statusCode} in ${received - sent} ms`);
  } catch (err) {
    const code = errCode(err);
    const detail =
      err instanceof HttpTimeoutError || code === 'ABORT_ERR'
        ? `no answer within ${timeoutMs / 1000} s`
        : `${code}: ${oneLine(transportMessage(err as Error), 120)}`;
    return fail(
      `${config.controlPlaneUrl} is unreachable (${detail})`,
      'check controlPlaneUrl, DNS, and firewalls between this host and the panel',
    );
  }
}

const TOKEN_PROOF =
  "the panel verified the token's signature and worker id; this does not prove the worker still exists in the panel (a stock SkyPanelV2 accepts the token of a deleted worker too): check its Workers page";

/** One real heartbeat with the current metrics: 200 means the panel accepts this worker's token. */
export async function checkToken(cfg: ConfigState, panel: PanelState, dockerState: DockerState, timeoutMs: number): Promise<Outcome> {
  const config = cfg.config;
  if (!config) return skip('skipped: no usable config');
  if (!panel.reached) return skip('skipped: the control plane is unreachable');
  // Two /proc/stat samples a quarter of a second apart (the sampler waits) give a real utilisation figure, not 0.
  const load = new HostLoadCollector(new CpuSampler(undefined, { minWindowMs: 250 }));
  await load.prime();
  const metrics = await load.read(dockerState.facts?.dockerRootDir);
  const body: HeartbeatRequest = {
    ...metrics,
    containerCount: dockerState.facts?.containersRunning ?? 0,
    bootId: randomUUID(),
    seq: 1,
    sentAt: new Date().toISOString(),
    agentVersion: AGENT_VERSION,
    swarmNodeId: dockerState.facts?.swarm.nodeId ?? null,
    dockerHealthy: dockerState.facts !== undefined,
  };
  // The client doubles its per-phase timeout for the whole call: halve it to stay within the bound.
  const client = new ControlPlaneClient({
    baseUrl: config.controlPlaneUrl,
    token: new Secret(config.token),
    timeoutMs: Math.max(500, Math.floor(timeoutMs / 2) - 100),
  });
  try {
    const res = await client.postJson(`/api/workers/${encodeURIComponent(config.workerId)}/heartbeat`, body);
    const renew = 'get a new worker token from the panel, then: skypanel-agent register --control-plane URL --token-file FILE';
    if (res.ok) {
      // Stock SkyPanelV2 checks the token's signature and worker id, not that the worker row still exists: say so, not more.
      if (res.status === 200) return pass(`heartbeat for worker ${config.workerId} accepted (HTTP 200, ${res.rttMs} ms): ${TOKEN_PROOF}`);
      return warn(`heartbeat answered HTTP ${res.status}, not 200`, 'check that controlPlaneUrl is the panel itself, not a proxy page');
    }
    if (res.kind !== 'http') return fail(`heartbeat failed: ${res.message}`, 'check the control plane and the network');
    const what = `HTTP ${res.status}${res.code ? ` ${res.code}` : ''}: ${res.message}`;
    switch (res.status) {
      case 401:
        return fail(`the control plane refused the worker token (${what})`, renew);
      case 403:
        return fail(`the token does not belong to worker ${config.workerId} (${what})`, renew);
      case 404:
        if (res.code === 'WORKER_NOT_FOUND')
          return warn(
            `token accepted, but the panel has no worker ${config.workerId} (${what})`,
            'the running agent registers again by itself; or run skypanel-agent register',
          );
        return fail(
          `the heartbeat route does not exist there (${what})`,
          'controlPlaneUrl must be the panel origin (https://panel.example.com), with any path prefix it is served under',
        );
      case 429:
        return fail(
          `rate limited (${what})`,
          'too many workers behind one IP for the panel limiter: raise heartbeatIntervalSec (docs/PROTOCOL.md, request budget)',
        );
      default:
        return fail(`heartbeat not accepted (${what})`, 'check the panel logs');
    }
  } finally {
    await client.close();
  }
}

export async function checkClock(panel: PanelState): Promise<Outcome> {
  if (!panel.reached) return skip('skipped: the control plane is unreachable');
  if (!panel.dateSeen || panel.skewSec === undefined)
    return warn('the control plane sent no Date header: skew not measured', 'make sure NTP runs here: timedatectl');
  const skew = panel.skewSec;
  const abs = Math.abs(skew);
  const margin = panel.skewMarginSec ?? 0.5;
  const what = `local clock is ${abs < margin ? `within ${margin.toFixed(1)} s of` : `${abs.toFixed(1)} s ${skew > 0 ? 'ahead of' : 'behind'}`} the control plane's (±${margin.toFixed(1)} s)`;
  const fix = 'synchronise the clock (timedatectl set-ntp true, or chrony/systemd-timesyncd)';
  if (abs - margin > SKEW_FAIL_SEC) return fail(what, fix);
  if (abs - margin > SKEW_WARN_SEC) return warn(what, fix);
  return pass(what);
}
