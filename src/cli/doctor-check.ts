/** What one doctor check found, and the small helpers every check builds its answer with. */

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  id: 'config' | 'docker' | 'swarm' | 'disk' | 'control-plane' | 'token' | 'clock' | 'status-port';
  status: CheckStatus;
  /** One line: what was found. */
  message: string;
  /** One line: what to do about it (fail and warn only). */
  fix?: string;
  ms: number;
}

export type Outcome = Omit<CheckResult, 'id' | 'ms'>;

export const pass = (message: string): Outcome => ({ status: 'pass', message });
export const warn = (message: string, fix?: string): Outcome => ({ status: 'warn', message, ...(fix ? { fix } : {}) });
export const fail = (message: string, fix?: string): Outcome => ({ status: 'fail', message, ...(fix ? { fix } : {}) });
export const skip = (message: string): Outcome => ({ status: 'skip', message });

/** Whitespace folded and cut at `max` characters: a report line holds one check. */
export function oneLine(s: string, max = 240): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** The Node error code of a failure (or of its cause), else its name. */
export function errCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown }; name?: string; message?: string };
  const code = typeof e.code === 'string' ? e.code : typeof e.cause?.code === 'string' ? e.cause.code : undefined;
  return code ?? e.name ?? 'error';
}
