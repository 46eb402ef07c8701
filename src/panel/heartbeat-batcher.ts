import { pgErrorCode, type Queryable } from './db.js';
import { beatVerdictParams, statusAfterHeartbeatSql, type BeatVerdict } from './health.js';
import { swarmNodeIdSql } from './workers.js';

/**
 * Heartbeat writes batched: beats that arrive while a batch is being written (waiting at most
 * `maxWaitMs` for it, at most `maxBatch` of them) are written together by ONE statement,
 * `UPDATE container_workers … FROM unnest(…) … RETURNING`, which also checks each beat's token hash.
 * A quiet panel writes each beat at once; under a fleet (10,000 workers beat 333 times a second)
 * the pool's round trips, not CPU, were the limit (README, fleet bench), and a beat's two (auth
 * lookup, UPDATE) become a share of one.
 *
 * Each beat's answer is the one it would get alone: the status rule (`statusAfterHeartbeatSql`)
 * runs per row under that row's lock, as in the single-beat UPDATE; a beat whose token hash no
 * longer matches, or whose row is gone, is not written and is told apart by a follow-up read of the
 * misses only (401 revoked, 404 unknown). A batch the database refuses (a value one beat carries that
 * the column cannot hold) is retried in halves down to the faulty beat, so only that beat fails.
 */

export interface HeartbeatBatchOptions {
  /** The most beats one statement writes. */
  maxBatch: number;
  /** The longest a beat waits for the batch being written before it to finish (ms). */
  maxWaitMs: number;
}

export const DEFAULT_HEARTBEAT_BATCH: HeartbeatBatchOptions = { maxBatch: 200, maxWaitMs: 5 };
/** Bounds on the options: past them a batch either costs a beat too much latency or one statement too much work. */
export const HEARTBEAT_BATCH_LIMITS = { maxBatch: 1000, maxWaitMs: 50 } as const;

export function validateHeartbeatBatchOptions(o: HeartbeatBatchOptions): void {
  if (!(Number.isInteger(o.maxBatch) && o.maxBatch >= 1 && o.maxBatch <= HEARTBEAT_BATCH_LIMITS.maxBatch))
    throw new RangeError(`heartbeatBatch.maxBatch must be a whole number in 1..${HEARTBEAT_BATCH_LIMITS.maxBatch}`);
  if (!(Number.isFinite(o.maxWaitMs) && o.maxWaitMs >= 0 && o.maxWaitMs <= HEARTBEAT_BATCH_LIMITS.maxWaitMs))
    throw new RangeError(`heartbeatBatch.maxWaitMs must be in 0..${HEARTBEAT_BATCH_LIMITS.maxWaitMs}`);
}

/** One authorized-by-JWT beat to write: what the row gets, and the token hash the row must hold. */
export interface BeatWrite {
  /** Lower-case UUID (as checkToken gives it). */
  workerId: string;
  /** Lower-case hex SHA-256 of the worker's token. */
  tokenHash: string;
  /** current_load as JSON text. */
  load: string;
  swarmNodeId: string | null;
  verdict: BeatVerdict;
}

export type BeatOutcome = { kind: 'written'; status: string } | { kind: 'revoked' } | { kind: 'not-found' };

interface Entry {
  beat: BeatWrite;
  resolve(outcome: BeatOutcome): void;
  reject(err: unknown): void;
}

/**
 * The statement for a batch. The hash is compared in SQL: the JWT signature was already checked,
 * so the comparison guards revocation, not a secret (a timing difference tells nothing usable).
 */
const WRITE_SQL = `UPDATE container_workers
    SET current_load = v.load, last_heartbeat_at = NOW(), swarm_node_id = ${swarmNodeIdSql('v.node')},
        status = ${statusAfterHeartbeatSql(['v.agent_draining', 'v.docker_unhealthy', 'v.over', 'v.over_margin'])}
   FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::varchar[], $5::boolean[], $6::boolean[], $7::boolean[], $8::boolean[])
     AS v(id, token_hash, load, node, agent_draining, docker_unhealthy, over, over_margin)
  WHERE container_workers.id = v.id AND lower(container_workers.auth_token_hash) = v.token_hash
  RETURNING container_workers.id::text AS id, container_workers.status`;

function writeParams(beats: BeatWrite[]): unknown[] {
  const verdicts = beats.map((b) => beatVerdictParams(b.verdict));
  return [
    beats.map((b) => b.workerId),
    beats.map((b) => b.tokenHash),
    beats.map((b) => b.load),
    beats.map((b) => b.swarmNodeId),
    ...[0, 1, 2, 3].map((k) => verdicts.map((v) => v[k])),
  ];
}

const UNIQUE_VIOLATION = '23505';

export class HeartbeatBatcher {
  readonly #db: Queryable;
  readonly #opts: HeartbeatBatchOptions;
  #queue: Entry[] = [];
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  /** Batches being written now. */
  #inFlight = 0;
  /** Statements issued (batches, their retries, the reads of misses): the tests read it to check the bounds. */
  statements = 0;

  constructor(db: Queryable, opts: HeartbeatBatchOptions = DEFAULT_HEARTBEAT_BATCH) {
    validateHeartbeatBatchOptions(opts);
    this.#db = db;
    this.#opts = opts;
  }

  /**
   * Writes the beat with others: when no batch is being written it goes at the end of this
   * event-loop turn (with whatever arrived in it), so a quiet panel adds no wait; while one is
   * being written it waits for that one to finish, at most `maxWaitMs`, and goes with every beat
   * that waited meanwhile. Resolves with its own outcome.
   */
  write(beat: BeatWrite): Promise<BeatOutcome> {
    return new Promise<BeatOutcome>((resolve, reject) => {
      this.#queue.push({ beat, resolve, reject });
      if (this.#queue.length >= this.#opts.maxBatch) this.#flush();
      else if (this.#inFlight === 0) this.#immediate ??= setImmediate(() => this.#flush());
      else this.#timer ??= setTimeout(() => this.#flush(), this.#opts.maxWaitMs);
    });
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    if (this.#queue.length === 0) return;
    // A worker's second beat waits for the next batch: UPDATE … FROM writes a row once however many
    // VALUES rows match it, and the other beat would read as revoked. So does a second claim of one
    // swarm node id: the first claim, committed, is what the second one's check must see.
    const batch: Entry[] = [];
    const rest: Entry[] = [];
    const taken = new Set<string>();
    for (const e of this.#queue) {
      const node = e.beat.swarmNodeId === null ? undefined : `node:${e.beat.swarmNodeId}`;
      if (batch.length < this.#opts.maxBatch && !taken.has(e.beat.workerId) && (node === undefined || !taken.has(node))) {
        taken.add(e.beat.workerId);
        if (node !== undefined) taken.add(node);
        batch.push(e);
      } else rest.push(e);
    }
    this.#queue = rest;
    if (rest.length >= this.#opts.maxBatch) this.#immediate = setImmediate(() => this.#flush());
    else if (rest.length > 0) this.#timer = setTimeout(() => this.#flush(), this.#opts.maxWaitMs);
    this.#inFlight++;
    void this.#run(batch, false).finally(() => {
      this.#inFlight--;
      // The database is free again: what waited for it goes now rather than at its timer.
      if (this.#inFlight === 0 && this.#queue.length > 0) this.#flush();
    });
  }

  async #run(batch: Entry[], retried: boolean): Promise<void> {
    let outcomes: Map<string, BeatOutcome>;
    try {
      outcomes = await this.#write(batch.map((e) => e.beat));
    } catch (err) {
      const code = pgErrorCode(err) ?? '';
      if (batch.length > 1 && (code.startsWith('22') || code.startsWith('23'))) {
        // One beat's data (SQLSTATE classes 22 data exception, 23 constraint) failed the whole
        // statement: halves, down to the beat that fails alone (about 2·log2(n) statements for one
        // bad beat), so only it fails. Other errors (the database away) fail the batch as they are.
        const half = Math.ceil(batch.length / 2);
        await Promise.all([this.#run(batch.slice(0, half), false), this.#run(batch.slice(half), false)]);
      } else if (code === UNIQUE_VIOLATION && batch.length === 1 && !retried) {
        // Another batch in flight claimed the same swarm node id; the violation is raised once that
        // claim committed, so the retry's check sees it and keeps this row's column, as alone it would.
        await this.#run(batch, true);
      } else for (const e of batch) e.reject(err);
      return;
    }
    for (const e of batch) e.resolve(outcomes.get(e.beat.workerId)!);
  }

  async #write(beats: BeatWrite[]): Promise<Map<string, BeatOutcome>> {
    this.statements++;
    const { rows } = await this.#db.query<{ id: string; status: string }>(WRITE_SQL, writeParams(beats));
    const outcomes = new Map<string, BeatOutcome>(rows.map((r) => [r.id, { kind: 'written', status: r.status }]));
    const missed = beats.filter((b) => !outcomes.has(b.workerId)).map((b) => b.workerId);
    if (missed.length > 0) {
      // Not written: the row is gone (404, the agent registers again) or holds another token (401).
      // Read after the write, so a worker deleted meanwhile reads as gone, as it is by now.
      this.statements++;
      const found = await this.#db.query<{ id: string }>('SELECT id::text AS id FROM container_workers WHERE id = ANY($1::uuid[])', [
        missed,
      ]);
      const present = new Set(found.rows.map((r) => r.id));
      for (const id of missed) outcomes.set(id, present.has(id) ? { kind: 'revoked' } : { kind: 'not-found' });
    }
    return outcomes;
  }
}
