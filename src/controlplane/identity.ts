import { AgentError } from '../errors.js';
import type { Secret } from '../secret.js';

/**
 * The `workerId` claim of a JWT worker token (SkyPanelV2 signs HS256 tokens whose payload holds
 * it), read without verifying the signature: the agent has no key and needs none, since the claim
 * is only used to refuse a register answer that names another worker. Undefined for an opaque
 * token or one without the claim.
 */
export function tokenWorkerId(token: string): string | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1]!.length > 8192) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    const id = payload !== null && typeof payload === 'object' ? (payload as Record<string, unknown>).workerId : undefined;
    return typeof id === 'string' && id.length > 0 ? id : undefined;
  } catch {
    return undefined;
  }
}

export interface ExpectedIdentity {
  token: Secret;
  /** The worker id this agent runs as (config), when it has one. */
  configuredWorkerId?: string;
}

/** Worker ids are UUIDs on SkyPanelV2; Postgres prints them lower-case, so case is not a difference. */
const same = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/**
 * A register answer naming a worker other than the token's or the configured one is refused,
 * never adopted: two agents acting as one worker would fight over the same services for ever.
 */
export function assertOwnWorkerId(answered: string, expected: ExpectedIdentity): void {
  const fromToken = tokenWorkerId(expected.token.reveal());
  const checks: [string | undefined, string][] = [
    [fromToken, "the token's workerId"],
    [expected.configuredWorkerId, 'the configured workerId'],
  ];
  for (const [want, what] of checks) {
    if (want !== undefined && !same(want, answered)) {
      throw new AgentError(
        'SKP_ERR_WORKER_ID_MISMATCH',
        `the control plane answered register with worker id ${answered}, but ${what} is ${want}: refused, nothing adopted or written; check that --control-plane is this worker's panel and the token was issued for this worker`,
        { field: 'workerId' },
      );
    }
  }
}
