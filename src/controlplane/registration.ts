import { AgentError } from '../errors.js';
import { AGENT_VERSION } from '../version.js';
import { PROTOCOL_VERSION, registerResponseSchema, type RegisterRequest, type ReconcileMode, type SwarmRole } from '../protocol/worker.js';
import { readCapacity } from '../collectors/host-metrics.js';
import { readHostname, readOsVersion } from '../collectors/host.js';
import { localAddressToward, toPanelIp } from '../collectors/address.js';
import type { ControlPlaneClient } from './control-plane-client.js';
import type { Logger } from '../agent/logger.js';
import type { EngineSummary } from '../ports.js';
import { assertOwnWorkerId, type ExpectedIdentity } from './identity.js';

export interface ModeInputs {
  /** A manager endpoint (swarmManagerHost) is configured. */
  managerEndpoint?: boolean;
  /** The operator asked for report-only. */
  forceObserve?: boolean;
}

/**
 * Services can only be written through a manager: the local engine when it is one, else a
 * configured manager endpoint; with neither, the agent observes what runs on its node.
 */
export function reconcileModeFor(role: SwarmRole, inputs: ModeInputs = {}): ReconcileMode {
  if (role === 'none') return 'none';
  if (inputs.forceObserve) return 'observe';
  if (role === 'manager') return 'manager';
  return inputs.managerEndpoint ? 'remote-manager' : 'observe';
}

export interface BuildRegisterOptions {
  controlPlaneUrl: string;
  ipAddress?: string;
  name?: string;
  engine: EngineSummary | undefined;
  mode?: ModeInputs;
  logger: Logger;
}

export async function buildRegisterRequest(opts: BuildRegisterOptions): Promise<RegisterRequest> {
  const { engine, logger } = opts;
  let ipAddress: string;
  if (opts.ipAddress !== undefined) {
    const ip = toPanelIp(opts.ipAddress);
    if (!ip)
      throw new AgentError('SKP_ERR_CONFIG_INVALID', `config key "ipAddress" must be an IPv4 or IPv6 address`, { field: 'ipAddress' });
    ipAddress = ip;
  } else {
    ipAddress = await localAddressToward(opts.controlPlaneUrl);
  }
  const [{ capacity, capped }, osVersion] = await Promise.all([readCapacity(engine?.dockerRootDir), readOsVersion()]);
  if (capped.length > 0) logger.warn({ capped, capacity }, 'capacity capped to what SkyPanelV2 accepts');
  const role = engine?.swarmRole ?? 'none';
  return {
    hostname: readHostname(),
    ipAddress,
    capacity,
    metadata: {
      agentVersion: AGENT_VERSION,
      osVersion,
      dockerVersion: engine?.dockerVersion ?? 'unavailable',
      swarmNodeId: engine?.swarmNodeId ?? null,
      swarmRole: role,
      reconcileMode: reconcileModeFor(role, opts.mode),
      protocolVersion: PROTOCOL_VERSION,
      ...(opts.name !== undefined ? { name: opts.name } : {}),
      labels: {},
    },
  };
}

/**
 * POST /api/workers/register; returns the worker id or throws an AgentError that says what to do,
 * also when the answer names another worker than `expected` (the token's, the configured one).
 */
export async function registerWorker(client: ControlPlaneClient, req: RegisterRequest, expected: ExpectedIdentity): Promise<string> {
  const res = await client.postJson('/api/workers/register', req);
  if (!res.ok) {
    if (res.kind !== 'http') {
      throw new AgentError('SKP_ERR_CONTROL_PLANE_UNREACHABLE', `register failed: ${res.message}`);
    }
    const what = `${res.status}${res.code ? ` ${res.code}` : ''}: ${res.message}`;
    if (res.status === 401 || res.status === 403) {
      throw new AgentError('SKP_ERR_UNAUTHORIZED', `the control plane refused the worker token (${what}); ask the panel for a new token`);
    }
    throw new AgentError('SKP_ERR_REGISTER_REJECTED', `register rejected (${what})`);
  }
  const parsed = registerResponseSchema.safeParse(res.body);
  if (!parsed.success) {
    const field = parsed.error.issues[0]?.path.join('.') ?? '(body)';
    throw new AgentError('SKP_ERR_REGISTER_REJECTED', `register answered ${res.status} without a usable worker id (field "${field}")`, {
      field,
    });
  }
  const id = parsed.data.data.id;
  assertOwnWorkerId(id, expected);
  return id;
}
