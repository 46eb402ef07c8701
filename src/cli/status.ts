import { Agent, request } from 'undici';
import { z } from 'zod';
import type { Secret } from '../secret.js';
import { parseListen } from '../agent/status-server.js';

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

/** The agent listens on a wildcard; the CLI runs on the same host and talks to loopback. */
export function statusUrlFromListen(listen: string, opts: { tls?: boolean } = {}): string {
  const { host, port } = parseListen(listen);
  const scheme = opts.tls ? 'https' : 'http';
  if (host === '0.0.0.0') return `${scheme}://127.0.0.1:${port}`;
  if (host === '::') return `${scheme}://[::1]:${port}`;
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

// Only what is printed is checked; anything else the agent adds passes through to --json untouched.
const heartbeatSchema = z.object({ at: z.string(), outcome: z.string(), status: z.number().optional(), rttMs: z.number().optional(), message: z.string().optional() });
const statusSchema = z.object({
  workerId: z.string(),
  agentVersion: z.string(),
  uptimeSec: z.number(),
  swarm: z.object({ nodeId: z.string().nullable(), role: z.string(), reconcileMode: z.string() }),
  dockerHealthy: z.boolean(),
  lastHeartbeat: heartbeatSchema.nullable(),
  lastReconcile: z.object({ at: z.string(), durationMs: z.number(), actions: z.array(z.object({ ok: z.boolean() })) }).nullable(),
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

class Unreachable extends Error {}

const MAX_BODY_BYTES = 4 << 20;

async function getJson(dispatcher: Agent, base: string, path: string, opts: StatusCliOptions): Promise<unknown> {
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(base + path, {
      dispatcher,
      method: 'GET',
      headers: { authorization: `Bearer ${opts.token.reveal()}`, accept: 'application/json' },
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string } };
    const code = e.code ?? e.cause?.code;
    throw new Unreachable(e.name === 'TimeoutError' ? `no answer within ${opts.timeoutMs} ms` : `${code ? `${code}: ` : ''}${e.message}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      res.body.destroy();
      throw new Unreachable(`${path} answered more than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  if (res.statusCode === 401) throw new Unreachable('the agent refused the token (HTTP 401); use the worker token from the agent config');
  if (res.statusCode !== 200) throw new Unreachable(`${path} answered HTTP ${res.statusCode}`);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new Unreachable(`${path} answered something that is not JSON`);
  }
}

function parse<T>(schema: z.ZodType<T>, value: unknown, path: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new Unreachable(`${path} answered an unexpected shape (${r.error.issues[0]?.path.join('.') ?? '?'}: ${r.error.issues[0]?.message ?? ''})`);
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

export function unhealthyReason(status: StatusBody): string | undefined {
  if (!status.dockerHealthy) return 'docker is down';
  const hb = status.lastHeartbeat;
  if (!hb) return 'no heartbeat attempt yet';
  if (hb.outcome !== 'accepted') {
    return `last heartbeat ${hb.outcome}${hb.status !== undefined ? ` (HTTP ${hb.status})` : ''}${hb.message ? `: ${oneLine(hb.message, 120)}` : ''}`;
  }
  return undefined;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

export function renderSummary(status: StatusBody, deployments: DeploymentRow[], now: number): string {
  const hb = status.lastHeartbeat;
  const rc = status.lastReconcile;
  const failed = rc ? rc.actions.filter((a) => !a.ok).length : 0;
  const lines = [
    `worker      ${status.workerId}  (agent ${status.agentVersion}, up ${formatDuration(status.uptimeSec)})`,
    `swarm       ${status.swarm.role}, reconcile mode ${status.swarm.reconcileMode}${status.swarm.nodeId ? `, node ${status.swarm.nodeId.slice(0, 12)}` : ''}`,
    `docker      ${status.dockerHealthy ? 'ok' : 'DOWN'}`,
    `heartbeat   ${hb ? `${hb.outcome}${hb.status !== undefined ? ` (HTTP ${hb.status})` : ''} ${ago(hb.at, now)}${hb.rttMs !== undefined ? `, rtt ${hb.rttMs} ms` : ''}` : 'none yet'}`,
    `reconcile   ${rc ? `${ago(rc.at, now)}, took ${rc.durationMs} ms, ${rc.actions.length} action(s)${failed ? `, ${failed} failed` : ''}` : 'none yet'}`,
    '',
  ];
  if (deployments.length === 0) {
    lines.push('no deployments');
  } else {
    const rows = [['ID', 'SLUG', 'DESIRED', 'OBSERVED', 'REPLICAS', 'URL', 'LAST ERROR']];
    for (const d of deployments) {
      rows.push([
        d.id.slice(0, 8), oneLine(d.slug, 40), d.desiredState, d.observedStatus, `${d.replicas.running}/${d.replicas.desired}`,
        d.publicUrl ?? '-', d.lastError ? oneLine(d.lastError, 60) : '-',
      ]);
    }
    lines.push(table(rows));
  }
  return lines.join('\n');
}

/** Exit codes: 0 healthy, 1 agent answers but is unhealthy, 2 agent unreachable or token refused. */
export async function runStatus(opts: StatusCliOptions): Promise<number> {
  const err = opts.err ?? opts.out;
  const base = opts.url.replace(/\/+$/, '');
  // A private dispatcher, closed at the end, so no keep-alive socket holds the CLI process open.
  const dispatcher = new Agent({ connectTimeout: opts.timeoutMs, headersTimeout: opts.timeoutMs, bodyTimeout: opts.timeoutMs, connections: 2 });
  try {
    const [rawStatus, rawDeployments] = await Promise.all([
      getJson(dispatcher, base, '/v1/status', opts),
      getJson(dispatcher, base, '/v1/deployments', opts),
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
    return reason ? 1 : 0;
  } catch (e) {
    if (e instanceof Unreachable) {
      err(`cannot reach the agent at ${base}: ${e.message}`);
      return 2;
    }
    throw e;
  } finally {
    await dispatcher.destroy().catch(() => undefined);
  }
}
