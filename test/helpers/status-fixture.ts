import { randomUUID } from 'node:crypto';
import type { DeploymentView, StatusSource, StatusView } from '../../src/agent/status/status-model.js';

const TOKEN = `wt_${randomUUID()}${randomUUID()}`;
const REGISTRY_PASSWORD = `regpw-${randomUUID()}`;
// The quote and backslash make the JSON-escaped form differ from the raw one.
const SECRET_VALUE = `s3cr3t"with\\quote-${randomUUID().slice(0, 8)}`;
const DB_URL_VALUE = `postgres://app:${randomUUID()}@db/app`;

/** Values a test agent holds but must never serve, print or log. */
export const FIXTURE = {
  TOKEN,
  REGISTRY_PASSWORD,
  SECRET_VALUE,
  DB_URL_VALUE,
  SECRETS: [TOKEN, REGISTRY_PASSWORD, SECRET_VALUE, DB_URL_VALUE],
};

/** A StatusSource whose deployments carry env and secret NAMES; `state`/`view` are mutable by tests. */
export function fakeSource(over: Partial<StatusView> = {}) {
  const state = { stalled: 3, wedgedAfter: 90 };
  const deployments: DeploymentView[] = [
    {
      id: '6f1c2b7e-0d3a-4c59-a1f2-9e8d7c6b5a40',
      serviceId: 'svc-1',
      slug: 'shop-frontend',
      imageTag: 'registry.example/shop:1.4.2',
      desiredState: 'running',
      observedStatus: 'running',
      swarmServiceId: 'swarm123',
      replicas: { running: 2, desired: 2 },
      publicUrl: 'https://shop.apps.example',
      lastError: null,
      environmentVarNames: ['DATABASE_URL', 'NODE_ENV'],
      secretNames: ['db-password', 'stripe-key'],
    },
    {
      id: 'a0b1c2d3-e4f5-4a6b-8c7d-0e1f2a3b4c5d',
      serviceId: 'svc-2',
      slug: 'billing-worker',
      imageTag: 'registry.example/billing:2.0.0',
      desiredState: 'running',
      observedStatus: 'failed',
      swarmServiceId: null,
      replicas: { running: 0, desired: 1 },
      publicUrl: null,
      // A careless error message that carries a secret: the server's last defence must strip it.
      lastError: `pull failed: unauthorized for user ci with password ${REGISTRY_PASSWORD}`,
      environmentVarNames: ['API_KEY'],
      secretNames: ['registry-auth'],
    },
  ];
  const status: StatusView = {
    workerId: 'w-7e3',
    agentVersion: '0.1.0',
    uptimeSec: 3725,
    bootId: randomUUID(),
    swarm: { nodeId: 'nodeabcdef1234567890', role: 'worker', reconcileMode: 'agent' },
    dockerHealthy: true,
    docker: { endpoint: 'unix:///var/run/docker.sock (default)' },
    capacity: { cpuCores: 4, memoryMb: 8192, diskGb: 100 },
    load: { cpuPercent: 12, memoryPercent: 40, diskPercent: 30, containerCount: 3 },
    lastHeartbeat: { at: new Date(Date.now() - 5000).toISOString(), outcome: 'accepted', status: 200, rttMs: 42 },
    controlPlaneWait: null,
    lastReconcile: {
      at: new Date(Date.now() - 8000).toISOString(),
      durationMs: 120,
      actions: [{ kind: 'update', deploymentId: 'x', ok: true }],
    },
    deployments: { running: 1, failed: 1 },
    stateDir: { failing: [], movedAside: [], writeFailuresTotal: 0 },
    deploymentsApi: 'available',
    heartbeatOnly: null,
    ...over,
  };
  const source: StatusSource & { state: typeof state; view: StatusView } = {
    state,
    view: status,
    status: () => source.view,
    loopStalledForSec: () => state.stalled,
    wedgedAfterSec: () => state.wedgedAfter,
    controlPlaneWait: () => source.view.controlPlaneWait,
    deployments: () => deployments,
    deploymentLogs: async (id, lines) => {
      const all = [`${id} starting`, `DATABASE_URL=${DB_URL_VALUE}`, `loaded secret ${SECRET_VALUE}`, 'listening on :3000'];
      return all.slice(-lines);
    },
    secretValues: () => [REGISTRY_PASSWORD, SECRET_VALUE, DB_URL_VALUE],
  };
  return source;
}
