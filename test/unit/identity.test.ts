import { describe, expect, it } from 'vitest';
import { AgentError } from '../../src/errors.js';
import { Secret } from '../../src/secret.js';
import { assertOwnWorkerId, tokenWorkerId } from '../../src/controlplane/identity.js';
import { signWorkerToken } from '../../src/skypanel/jwt.js';

const W = '2b1f0c7e-5d4a-4e3b-9c2d-1a0f9e8d7c6b';
const OTHER = '9e8d7c6b-1a0f-4e3b-9c2d-2b1f0c7e5d4a';
const jwt = (workerId: string) => signWorkerToken('k'.repeat(32), { workerId });
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describe('worker identity', () => {
  it("reads the JWT token's workerId without the key", () => {
    expect(tokenWorkerId(jwt(W))).toBe(W);
    expect(tokenWorkerId(`${b64({ alg: 'HS256' })}.${b64({ type: 'worker' })}.sig`)).toBeUndefined();
    for (const opaque of ['wt_opaque-token', 'a.b.c', 'a.%%%.c', `x.${Buffer.from('[1]').toString('base64url')}.y`])
      expect(tokenWorkerId(opaque)).toBeUndefined();
  });

  it("refuses a register answer naming another worker than the token's", () => {
    const err = (() => {
      try {
        assertOwnWorkerId(OTHER, { token: new Secret(jwt(W)) });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe('SKP_ERR_WORKER_ID_MISMATCH');
    expect((err as AgentError).message).toContain(`worker id ${OTHER}, but the token's workerId is ${W}: refused`);
  });

  it('refuses one naming another worker than the configured one, also with an opaque token', () => {
    expect(() => assertOwnWorkerId(OTHER, { token: new Secret('wt_opaque'), configuredWorkerId: W })).toThrow(/the configured workerId is/);
  });

  it('accepts its own id, in any letter case, and anything when nothing says otherwise', () => {
    expect(() => assertOwnWorkerId(W.toUpperCase(), { token: new Secret(jwt(W)), configuredWorkerId: W })).not.toThrow();
    expect(() => assertOwnWorkerId(OTHER, { token: new Secret('wt_opaque') })).not.toThrow();
  });
});
