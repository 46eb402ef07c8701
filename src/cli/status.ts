import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { z } from 'zod';
import type { Secret } from '../secret.js';
import type { AgentConfig } from '../agent/config-schema.js';
import { boundListen, readStatusAddress } from '../agent/status/status-address.js';
import { parseListen } from '../agent/status/status-server.js';
import { HttpPool, targetFromUrl, type HttpTarget } from '../http/pool.js';
import { HttpTimeoutError } from '../http/errors.js';

/**
 * `status` exit codes, for scripts and monitoring checks; none is shared with the CLI's usage (64)
 * and config (78) errors.
 */
export const STATUS_EXIT = {
  healthy: 0,
  /** The agent answered: Docker is down, or the last heartbeat was not accepted (or none yet). */
  unhealthy: 1,
  /** Nothing answered: the agent is not running, or not at that address (refused, timeout). */
  unreachable: 2,
  /** Something answered but not with a readable status: the token was refused, an HTTP error, not JSON, another program. */
  unreadable: 3,
} as const;

export interface StatusCliOptions {
  /** Base URL of the local status API, e.g. http://127.0.0.1:9740 */
  url: string;
  token: Secret;
  json: boolean;
  timeoutMs: number;
  out: (s: string) => void;
  /** Where the `unhealthy:` and `cannot reach` lines go; defaults to `out`. */
  err?: (s: string) => void;
  now?: () => number;
}

/** Where the agent last listened (its state dir), else the config's statusListen. */
export async function localStatusUrl(config: AgentConfig): Promise<string> {
  const remembered = await readStatusAddress(config.stateDir);
  if (remembered) return statusUrlFromListen(boundListen(remembered), { tls: remembered.tls });
  return statusUrlFromListen(config.statusListen, { tls: config.statusTlsCert !== undefined });
}

/** The agent listens on a wildcard; the CLI runs on the same host and talks to loopback. */
export function statusUrlFromListen(listen: string, opts: { tls?: boolean } = {}): string {
  const { host, port } = parseListen(listen);
  const scheme = opts.tls ? 'https' : 'http';
  if (host === '0.0.0.0') return `${scheme}://127.0.0.1:${port}`;
  if (host === '::') return `${scheme}://[::1]:${port}`;
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

// Only what is printed is checked; anything else the agent adds passes through to --json untouched.
const heartbeatSchema = z.object({
  at: z.string(),
  outcome: z.string(),
  status: z.number().optional(),
  rttMs: z.number().optional(),
  message: z.string().optional(),
});
const statusSchema = z.object({
  workerId: z.string(),
  agentVersion: z.string(),
  uptimeSec: z.number(),
  swarm: z.object({ nodeId: z.string().nullable(), role: z.string(), reconcileMode: z.string() }),
  dockerHealthy: z.boolean(),
  // Absent from agents older than the shared endpoint resolution.
  docker: z.object({ endpoint: z.string() }).optional(),
  lastHeartbeat: heartbeatSchema.nullable(),
  controlPlaneWait: z.object({ until: z.string(), reason: z.string() }).nullable().optional(),
  lastReconcile: z.object({ at: z.string(), durationMs: z.number(), actions: z.array(z.object({ ok: z.boolean() })) }).nullable(),
  // Absent from agents older than the state-directory health report.
  stateDir: z
    .object({
      failing: z.array(z.object({ file: z.string(), error: z.string(), since: z.string() })),
      movedAside: z.array(z.object({ file: z.string() })),
    })
    .optional(),
  // Optional: agents before this field did not send it.
  heartbeatOnly: z.string().nullable().optional(),
});
const deploymentSchema = z.object({
  id: z.string(),
  slug: z.string(),
  desiredState: z.string(),
  observedStatus: z.string(),
  replicas: z.object({ running: z.number(), desired: z.number() }),
  publicUrl: z.string().nullable(),
  lastError: z.string().nullable(),
});
const deploymentsSchema = z.object({ deployments: z.array(deploymentSchema) });

type StatusBody = z.infer<typeof statusSchema>;
type DeploymentRow = z.infer<typeof deploymentSchema>;

class Unreachable extends Error {
  constructor(
    message: string,
    readonly exitCode: number = STATUS_EXIT.unreachable,
  ) {
    super(message);
  }
}

const unreadable = (message: string) => new Unreachable(message, STATUS_EXIT.unreadable);

const MAX_BODY_BYTES = 4 << 20;

export interface BoundedGetOptions {
  headers?: OutgoingHttpHeaders;
  /** Bound on the whole call: connect, headers and the body read. */
  timeoutMs: number;
  /** Body bytes kept; past this the read stops and `truncated` is set. 0: resolve at the headers, body unread. */
  maxBodyBytes: number;
  /** https only; verification is on unless this is false. */
  rejectUnauthorized?: boolean;
  signal?: AbortSignal;
}

export interface BoundedGetResult {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /**
   * The answer was longer than maxBodyBytes: `body` then holds its first maxBodyBytes bytes, or
   * nothing when its Content-Length said so up front (then none of it is read).
   */
  truncated: boolean;
  /** Date.now() when the response headers arrived. */
  headersAt: number;
}

function namedError(name: string, message: string, code?: string): Error {
  const err = new Error(message) as NodeJS.ErrnoException;
  err.name = name;
  if (code) err.code = code;
  return err;
}

/**
 * One GET through the HTTP core on a connection of its own (closed after, so nothing holds the CLI
 * process open), bounded as a whole by `timeoutMs` and in size by `maxBodyBytes` (past it the body
 * is cut, not refused). Rejects with the core's typed errors (src/http/errors.ts): a SocketError
 * (the socket's `code` kept), an HttpTimeoutError, a RequestAbortedError (name AbortError) when
 * `signal` fires. Request headers (a bearer token) never appear in what it rejects with.
 */
export async function boundedGet(url: string, opts: BoundedGetOptions): Promise<BoundedGetResult> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw namedError('TypeError', 'invalid URL', 'ERR_INVALID_URL');
  }
  let where: HttpTarget;
  try {
    where = targetFromUrl(target);
  } catch (err) {
    throw namedError('TypeError', (err as Error).message, 'ERR_INVALID_PROTOCOL');
  }
  const t = opts.timeoutMs;
  const pool = new HttpPool(where, { keepAlive: false, tls: { rejectUnauthorized: opts.rejectUnauthorized !== false } });
  const res = await pool.request({
    method: 'GET',
    path: target.pathname + target.search,
    headers: opts.headers,
    timeouts: { connectMs: t, headersMs: t, bodyMs: t, deadlineMs: t },
    maxResponseBytes: Math.max(0, opts.maxBodyBytes),
    overflow: 'truncate',
    signal: opts.signal,
  });
  return { statusCode: res.status, headers: res.headers, body: res.body, truncated: res.truncated, headersAt: res.headersAt };
}

/** A socket error's text; Node's happy-eyeballs AggregateError has an empty message of its own. */
export function transportMessage(err: Error): string {
  if (err.message) return err.message;
  const first = (err as Error & { errors?: unknown[] }).errors?.[0] as Error | undefined;
  return first?.message ?? err.name;
}

async function getJson(base: string, path: string, opts: StatusCliOptions, signal: AbortSignal): Promise<unknown> {
  let res: BoundedGetResult;
  try {
    res = await boundedGet(base + path, {
      headers: { authorization: `Bearer ${opts.token.reveal()}`, accept: 'application/json' },
      timeoutMs: opts.timeoutMs,
      maxBodyBytes: MAX_BODY_BYTES,
      signal,
    });
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string } };
    const code = e.code ?? e.cause?.code;
    throw new Unreachable(
      err instanceof HttpTimeoutError ? `no answer within ${opts.timeoutMs} ms` : `${code ? `${code}: ` : ''}${transportMessage(e)}`,
    );
  }
  if (res.truncated) throw unreadable(`${path} answered more than ${MAX_BODY_BYTES} bytes`);
  if (res.statusCode === 401) throw unreadable('the agent refused the token (HTTP 401); use the worker token from the agent config');
  if (res.statusCode !== 200) throw unreadable(`${path} answered HTTP ${res.statusCode}`);
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch {
    throw unreadable(`${path} answered something that is not JSON`);
  }
}

function parse<T>(schema: z.ZodType<T>, value: unknown, path: string): T {
  const r = schema.safeParse(value);
  if (!r.success)
    throw unreadable(
      `${path} answered an unexpected shape (${r.error.issues[0]?.path.join('.') ?? '?'}: ${r.error.issues[0]?.message ?? ''})`,
    );
  return r.data;
}

export function formatDuration(sec: number): string {
  const s = Math.max(0, Math.floor(sec));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function ago(iso: string, now: number): string {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? `at ${iso}` : `${formatDuration((now - t) / 1000)} ago`;
}

const oneLine = (s: string, max: number) => {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
};

/** `desired.json (ENOSPC), outbox.json (ENOSPC)`, or undefined when every state file is written. */
function failingStateFiles(status: StatusBody): string | undefined {
  const failing = status.stateDir?.failing ?? [];
  return failing.length === 0 ? undefined : failing.map((f) => `${f.file} (${f.error})`).join(', ');
}

export function unhealthyReason(status: StatusBody): string | undefined {
  if (!status.dockerHealthy) return 'docker is down';
  const failing = failingStateFiles(status);
  if (failing) return `cannot write the state directory: ${failing}`;
  const hb = status.lastHeartbeat;
  if (!hb) return 'no heartbeat attempt yet';
  if (hb.outcome !== 'accepted') {
    return `last heartbeat ${hb.outcome}${hb.status !== undefined ? ` (HTTP ${hb.status})` : ''}${hb.message ? `: ${oneLine(hb.message, 120)}` : ''}`;
  }
  return undefined;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function renderSummary(status: StatusBody, deployments: DeploymentRow[], now: number): string {
  const hb = status.lastHeartbeat;
  const rc = status.lastReconcile;
  const failed = rc ? rc.actions.filter((a) => !a.ok).length : 0;
  const lines = [
    `worker      ${status.workerId}  (agent ${status.agentVersion}, up ${formatDuration(status.uptimeSec)})`,
    `swarm       ${status.swarm.role}, reconcile mode ${status.swarm.reconcileMode}${status.swarm.nodeId ? `, node ${status.swarm.nodeId.slice(0, 12)}` : ''}`,
    `docker      ${status.dockerHealthy ? 'ok' : 'DOWN'}${status.docker ? `, ${status.docker.endpoint}` : ''}`,
    `heartbeat   ${hb ? `${hb.outcome}${hb.status !== undefined ? ` (HTTP ${hb.status})` : ''} ${ago(hb.at, now)}${hb.rttMs !== undefined ? `, rtt ${hb.rttMs} ms` : ''}` : 'none yet'}`,
    ...(status.controlPlaneWait ? [`waiting     ${oneLine(status.controlPlaneWait.reason, 160)}`] : []),
    ...(status.heartbeatOnly ? [`mode        HEARTBEAT-ONLY: ${oneLine(status.heartbeatOnly, 160)}`] : []),
    `reconcile   ${rc ? `${ago(rc.at, now)}, took ${rc.durationMs} ms, ${rc.actions.length} action(s)${failed ? `, ${failed} failed` : ''}` : 'none yet'}`,
  ];
  if (status.stateDir) {
    const failing = failingStateFiles(status);
    const aside = status.stateDir.movedAside.length;
    lines.push(`state dir   ${failing ? `CANNOT WRITE ${failing}` : 'ok'}${aside > 0 ? `, ${aside} damaged file(s) moved aside` : ''}`);
  }
  lines.push('');
  if (deployments.length === 0) {
    lines.push('no deployments');
  } else {
    const rows = [['ID', 'SLUG', 'DESIRED', 'OBSERVED', 'REPLICAS', 'URL', 'LAST ERROR']];
    for (const d of deployments) {
      rows.push([
        d.id.slice(0, 8),
        oneLine(d.slug, 40),
        d.desiredState,
        d.observedStatus,
        `${d.replicas.running}/${d.replicas.desired}`,
        d.publicUrl ?? '-',
        d.lastError ? oneLine(d.lastError, 60) : '-',
      ]);
    }
    lines.push(table(rows));
  }
  return lines.join('\n');
}

/** Exit codes: STATUS_EXIT. */
export async function runStatus(opts: StatusCliOptions): Promise<number> {
  const err = opts.err ?? opts.out;
  const base = opts.url.replace(/\/+$/, '');
  // Each GET has a connection of its own; when one fails the other is cut at once, so no socket or
  // timer outlives the command.
  const cancel = new AbortController();
  try {
    const [rawStatus, rawDeployments] = await Promise.all([
      getJson(base, '/v1/status', opts, cancel.signal),
      getJson(base, '/v1/deployments', opts, cancel.signal),
    ]);
    const status = parse(statusSchema, rawStatus, '/v1/status');
    const { deployments } = parse(deploymentsSchema, rawDeployments, '/v1/deployments');
    const reason = unhealthyReason(status);
    if (opts.json) {
      // Print what the agent sent, not the narrowed parse, so fields this CLI does not know survive.
      opts.out(JSON.stringify({ status: rawStatus, deployments: (rawDeployments as { deployments: unknown }).deployments }, null, 2));
      if (reason && opts.err) opts.err(`unhealthy: ${reason}`);
    } else {
      opts.out(renderSummary(status, deployments, (opts.now ?? Date.now)()));
      if (reason) err(`unhealthy: ${reason}`);
    }
    return reason ? STATUS_EXIT.unhealthy : STATUS_EXIT.healthy;
  } catch (e) {
    if (e instanceof Unreachable) {
      err(
        `${e.exitCode === STATUS_EXIT.unreachable ? 'cannot reach the agent' : 'cannot read the status of the agent'} at ${base}: ${e.message}`,
      );
      return e.exitCode;
    }
    throw e;
  } finally {
    cancel.abort();
  }
}
