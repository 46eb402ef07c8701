/**
 * Exit codes, from sysexits(3) where one fits, so they never collide with `status`'s own 0-3
 * (healthy, unhealthy, unreachable, unreadable answer) and systemd can tell a configuration
 * error (78: do not restart) from a crash (1: restart).
 */
export const EXIT = {
  ok: 0,
  failure: 1,
  /** EX_USAGE: a flag or argument the command does not accept, or a bad value for one. */
  usage: 64,
  /** EX_CONFIG: the config (file, environment, flags) is missing, unreadable, insecure or invalid. */
  config: 78,
} as const;

/**
 * One registry of agent errors. Every error the agent raises on purpose carries a stable
 * `code`; the CLI maps codes to exit codes here and nowhere else.
 */
export const ERROR_CODES = {
  SKP_ERR_CONFIG_INVALID: { exitCode: EXIT.config },
  SKP_ERR_CONFIG_UNREADABLE: { exitCode: EXIT.config },
  SKP_ERR_CONFIG_INSECURE: { exitCode: EXIT.config },
  SKP_ERR_USAGE: { exitCode: EXIT.usage },
  SKP_ERR_REGISTER_REJECTED: { exitCode: 1 },
  /** The panel's register answer named another worker than the token or the config. */
  SKP_ERR_WORKER_ID_MISMATCH: { exitCode: 1 },
  SKP_ERR_CONTROL_PLANE_UNREACHABLE: { exitCode: 1 },
  SKP_ERR_UNAUTHORIZED: { exitCode: 1 },
  SKP_ERR_DOCKER_UNAVAILABLE: { exitCode: 1 },
  SKP_ERR_SWARM_JOIN: { exitCode: 1 },
  SKP_ERR_SWARM: { exitCode: 1 },
  /** A host step failed: systemctl, useradd, a file outside the config. */
  SKP_ERR_SYSTEM: { exitCode: 1 },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class AgentError extends Error {
  readonly code: ErrorCode;
  /** Dotted name of the offending field or config key, when there is one. */
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, opts: { field?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentError';
    this.code = code;
    this.field = opts.field;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exitCode;
  }
}

export function exitCodeFor(err: unknown): number {
  return err instanceof AgentError ? err.exitCode : 1;
}
