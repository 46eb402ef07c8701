import { classifyHeartbeatError, heartbeatFieldsError, prop, validateMetrics } from '../skypanel/validation.js';
import { authorizeWorker, checkWorkerToken, hashToken, REVOKED, WORKER_NOT_FOUND, type WorkerLookup } from './auth.js';
import { beatVerdict, type HealthOptions } from './health.js';
import type { BeatWrite, HeartbeatBatcher } from './heartbeat-batcher.js';
import { failure, type PanelReply } from './reply.js';
import { shortString } from './workers.js';

/**
 * Call 2, POST /api/workers/:id/heartbeat: load, time, node id and the agent's flags into the row;
 * status by `statusAfterHeartbeatSql` in the same statement, which the batcher shares with the
 * other beats of its few milliseconds. The worker's row and token hash are checked by that
 * statement too, so a valid beat costs no round trip of its own.
 */

/** Heartbeat fields beyond the four metrics that the panel keeps in current_load. */
function heartbeatExtras(body: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const bootId = shortString(prop(body, 'bootId'), 64);
  if (bootId !== null) out.bootId = bootId;
  const seq = prop(body, 'seq');
  if (typeof seq === 'number' && Number.isSafeInteger(seq)) out.seq = seq;
  const agentVersion = shortString(prop(body, 'agentVersion'), 64);
  if (agentVersion !== null) out.agentVersion = agentVersion;
  const sentAt = shortString(prop(body, 'sentAt'), 64);
  if (sentAt !== null) out.sentAt = sentAt;
  for (const flag of ['dockerHealthy', 'draining'] as const) {
    const v = prop(body, flag);
    if (typeof v === 'boolean') out[flag] = v;
  }
  return out;
}

type Prepared = { ok: true; beat: Omit<BeatWrite, 'workerId' | 'tokenHash'> } | { ok: false; reply: PanelReply };

/** The row's new values from a heartbeat body, or the 400 it gets. */
function prepareBeat(body: unknown, health: HealthOptions): Prepared {
  const missing = heartbeatFieldsError(body);
  if (missing !== null) return { ok: false, reply: failure(400, 'VALIDATION_ERROR', missing) };
  let metrics;
  try {
    metrics = validateMetrics(body);
  } catch (err) {
    return { ok: false, reply: classifyHeartbeatError(err) };
  }
  const extras = heartbeatExtras(body);
  const verdict = beatVerdict(
    { ...metrics, dockerHealthy: extras.dockerHealthy as boolean | undefined, draining: extras.draining as boolean | undefined },
    health,
  );
  return {
    ok: true,
    beat: { load: JSON.stringify({ ...metrics, ...extras }), swarmNodeId: shortString(prop(body, 'swarmNodeId'), 255), verdict },
  };
}

export interface HeartbeatResult {
  reply: PanelReply;
  /** Set when the beat was written: the worker (lower-case id) and the status its row holds now. */
  written?: { workerId: string; status: string };
}

export interface HeartbeatDeps {
  lookup: WorkerLookup;
  batcher: HeartbeatBatcher;
  jwtSecret: string;
  health: HealthOptions;
}

export async function handleHeartbeat(
  deps: HeartbeatDeps,
  pathId: string,
  authorization: string | undefined,
  body: unknown,
): Promise<HeartbeatResult> {
  const token = checkWorkerToken(authorization, deps.jwtSecret, pathId);
  if (!token.ok) return { reply: token.reply };
  const prepared = prepareBeat(body, deps.health);
  if (!prepared.ok) {
    // An unknown or revoked worker hears that before what is wrong with its body, as on every route.
    const auth = await authorizeWorker(deps.lookup, authorization, deps.jwtSecret, pathId);
    return { reply: auth.ok ? prepared.reply : auth.reply };
  }
  const outcome = await deps.batcher.write({ ...prepared.beat, workerId: token.workerId, tokenHash: hashToken(token.token) });
  if (outcome.kind === 'not-found') return { reply: WORKER_NOT_FOUND };
  if (outcome.kind === 'revoked') return { reply: REVOKED };
  return {
    reply: { status: 200, body: { success: true, message: 'Heartbeat received' } },
    written: { workerId: token.workerId, status: outcome.status },
  };
}
