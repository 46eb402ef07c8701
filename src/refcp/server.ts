import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isAdminPath, serveAdmin } from './admin-routes.js';
import { etagMatches } from '../protocol/etag.js';
import { matchExtensionRoute, serveExtension } from './deployment-routes.js';
import { ExtensionStore, workerKey, type DeploymentsControl } from './extension-store.js';
import { FaultSlot, GARBAGE_BODY, defaultFaultBody } from './faults.js';
import { readJsonBody, requestPath, send, sendJson } from '../skypanel/express.js';
import { isApiPath, matchRoute } from './routes.js';
import { signWorkerToken } from '../skypanel/jwt.js';
import { FixedWindowLimiter } from './rate-limit.js';
import type { Fault, ReferenceControlPlaneOptions, RequestRecord, WorkerRow } from './types.js';
import { authenticateWorker, handleHeartbeat, handleRegister, type Reply } from './worker-routes.js';

/**
 * An in-memory stand-in for SkyPanelV2's worker API: the same routes, status codes and bodies
 * over a real socket, plus fault injection so clients can be tested against genuine network
 * behaviour instead of mocks.
 */
export interface ReferenceControlPlane extends DeploymentsControl {
  /** `http://host:port`; throws before the first listen() when the port is ephemeral. */
  readonly url: string;
  /** The HS256 secret tokens are checked against, for tests that forge their own tokens. */
  readonly jwtSecret: string;
  /** Starts serving; after close() it serves again on the same port, keeping all state. */
  listen(): Promise<string>;
  /** Stops serving and drops every connection, idle keep-alive ones included. */
  close(): Promise<void>;
  /** A worker token as SkyPanelV2's "generate script" would mint it. */
  mintToken(workerId?: string): string;
  readonly workers: Map<string, WorkerRow>;
  readonly requests: RequestRecord[];
  setFault(fault: Fault | null): void;
}

const NOT_FOUND = { success: false, error: 'API not found' };
const INTERNAL_ERROR = { success: false, error: 'Internal server error' };
const TOO_LARGE = { success: false, error: 'Payload too large' };
const RATE_LIMITED = { success: false, error: 'Too many requests from this IP, please try again later.' };

/** Secrets shorter than this are not worth redacting and would mangle unrelated text. */
const MIN_SECRET_LENGTH = 8;

class RefControlPlane extends ExtensionStore implements ReferenceControlPlane {
  readonly workers = new Map<string, WorkerRow>();
  readonly requests: RequestRecord[] = [];
  readonly jwtSecret: string;
  readonly #host: string;
  #port: number;
  readonly #limiter: FixedWindowLimiter | null;
  readonly #log: (line: string) => void;
  readonly #maxRecords: number;
  readonly #faults = new FaultSlot();
  readonly #sleepers = new Set<() => void>();
  readonly #blockingWaitSec: number | undefined;
  /** Held desired-set calls per worker key, woken when its set is replaced. */
  readonly #held = new Map<string, Set<() => void>>();
  #server: Server | null = null;
  #listening = false;

  constructor(opts: ReferenceControlPlaneOptions) {
    super(opts);
    this.#host = opts.host ?? '127.0.0.1';
    this.#port = opts.port ?? 0;
    this.jwtSecret = opts.jwtSecret ?? randomBytes(32).toString('hex');
    this.#limiter = opts.rateLimit ? new FixedWindowLimiter(opts.rateLimit) : null;
    const logger = opts.logger;
    this.#log = (line) => {
      try {
        logger?.(line);
      } catch {
        // A throwing logger must not take the server down.
      }
    };
    this.#maxRecords = opts.maxRecords ?? 10_000;
    this.#blockingWaitSec = opts.blockingWaitSec;
    if (
      this.#blockingWaitSec !== undefined &&
      !(Number.isInteger(this.#blockingWaitSec) && this.#blockingWaitSec >= 1 && this.#blockingWaitSec <= 600)
    ) {
      throw new RangeError('blockingWaitSec must be a whole number of seconds in 1..600');
    }
  }

  get url(): string {
    if (!this.#listening && this.#port === 0) throw new Error('reference control plane is not listening yet');
    const host = this.#host.includes(':') ? `[${this.#host}]` : this.#host;
    return `http://${host}:${this.#port}`;
  }

  async listen(): Promise<string> {
    if (this.#server !== null) throw new Error('reference control plane is already listening');
    const server = createServer((req, res) => {
      this.#handle(req, res).catch(() => {
        if (!res.headersSent) sendJson(res, 500, INTERNAL_ERROR);
        else res.destroy();
      });
    });
    this.#server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.#port, this.#host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.#server = null;
      throw err;
    }
    server.on('error', (err) => this.#log(`server error: ${err.message}`));
    // Pin the ephemeral port so a restart after close() keeps the URL clients were given.
    this.#port = (server.address() as AddressInfo).port;
    this.#listening = true;
    return this.url;
  }

  async close(): Promise<void> {
    const server = this.#server;
    if (server === null) return;
    this.#server = null;
    this.#listening = false;
    for (const wake of this.#sleepers) wake();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  mintToken(workerId?: string): string {
    return signWorkerToken(this.jwtSecret, workerId === undefined ? {} : { workerId });
  }

  setFault(fault: Fault | null): void {
    this.#faults.set(fault);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const startedNs = process.hrtime.bigint();
    req.on('error', () => {});
    res.on('error', () => {});
    const rawPath = requestPath(req.url);
    const secrets = secretsIn(req.headers.authorization);
    const record: RequestRecord = {
      method: req.method ?? '',
      path: redact(rawPath, secrets) as string,
      status: 0,
      at: Date.now(),
      headers: {
        authorization: req.headers.authorization !== undefined,
        contentType: req.headers['content-type'] === undefined ? null : (redact(req.headers['content-type'], secrets) as string),
      },
    };
    const ifNoneMatch = req.headers['if-none-match'];
    if (ifNoneMatch !== undefined) record.headers.ifNoneMatch = redact(ifNoneMatch, secrets) as string;
    this.#remember(record);

    let logged = false;
    const logOnce = (outcome: string): void => {
      if (logged) return;
      logged = true;
      const ms = Number((process.hrtime.bigint() - startedNs) / 1_000_000n);
      this.#log(`${record.method} ${truncate(record.path, 200)} ${outcome} ${ms}ms`);
    };
    res.on('finish', () => {
      record.status = res.statusCode;
      record.answeredAt = Date.now();
      logOnce(String(res.statusCode));
    });
    res.on('close', () => logOnce(record.fault === 'reset' ? 'reset' : 'aborted'));
    // Operator routes: token checked before the body is read, which is never recorded (it holds secrets).
    if (isAdminPath(rawPath)) return serveAdmin(req, res, rawPath, { store: this, workers: this.workers });

    const body = await readJsonBody(req);
    if (body.kind === 'aborted') return;
    if (body.kind === 'json') record.body = redact(body.value, secrets);

    if (isApiPath(rawPath)) {
      const fault = this.#faults.take(rawPath.split('?')[0]);
      if (fault !== null) {
        record.fault = fault.kind;
        if (fault.kind !== 'delay') return answerWithFault(fault, req, res);
        if (!(await this.#sleep(fault.ms))) return;
      }
      const decision = this.#limiter?.hit(req.socket.remoteAddress ?? 'unknown');
      if (decision !== undefined && !decision.allowed) {
        // express-rate-limit (standardHeaders) also says when the window ends; here that is Retry-After too.
        return sendJson(res, 429, RATE_LIMITED, {
          'Retry-After': String(decision.retryAfterSeconds),
          'RateLimit-Reset': String(decision.retryAfterSeconds),
        });
      }
    }

    // express.json() runs before routing, so body errors win over 404.
    if (body.kind === 'too-large') return sendJson(res, 413, TOO_LARGE);
    if (body.kind === 'malformed' || body.kind === 'unsupported') return sendJson(res, 500, INTERNAL_ERROR);
    const parsedBody: unknown = body.kind === 'json' ? body.value : {};

    const ext = this.extensions ? matchExtensionRoute(req.method, rawPath) : { kind: 'none' as const };
    if (ext.kind === 'deployments' && req.method === 'GET' && this.#blockingWaitSec !== undefined) {
      const wait = /[?&]wait=(\d{1,6})(?:&|$)/.exec(req.url ?? '');
      const inm = req.headers['if-none-match'];
      if (wait !== null && typeof inm === 'string' && authenticateWorker(req.headers.authorization, this.jwtSecret).ok) {
        const ms = Math.min(Number(wait[1]), this.#blockingWaitSec) * 1000;
        // The panel's spread: up to 1/16 more, so a fleet that asked together does not return together.
        await this.#hold(ext.id, inm, ms + (Math.random() * ms) / 16);
      }
    }
    if (ext.kind !== 'none') {
      return serveExtension(ext, req, res, {
        body: parsedBody,
        jwtSecret: this.jwtSecret,
        workers: this.workers,
        store: this,
        now: new Date(),
      });
    }
    const route = matchRoute(req.method, rawPath);
    if (route.kind === 'none') return sendJson(res, 404, NOT_FOUND);
    if (route.kind === 'bad-param') return sendJson(res, 500, INTERNAL_ERROR);

    const auth = authenticateWorker(req.headers.authorization, this.jwtSecret);
    let reply: Reply;
    if (!auth.ok) {
      reply = auth.reply;
    } else {
      const ctx = { body: parsedBody, claims: auth.claims, workers: this.workers, now: new Date() };
      reply = route.kind === 'register' ? handleRegister({ ...ctx, token: auth.token }) : handleHeartbeat({ ...ctx, id: route.id });
      if (route.kind === 'heartbeat' && reply.status === 200 && this.extensions) {
        // Extension: the desired set's current ETag rides on every heartbeat answer, so an agent
        // polls only when it changed (docs/PROTOCOL.md, the desired-set hint under call 2).
        const wait = this.#blockingWaitSec === undefined ? {} : { deploymentsWait: this.#blockingWaitSec };
        reply = { ...reply, body: { ...(reply.body as object), data: { deploymentsEtag: this.deploymentsEtagOf(route.id), ...wait } } };
      }
    }
    sendJson(res, reply.status, reply.body);
  }

  #remember(record: RequestRecord): void {
    this.requests.push(record);
    if (this.requests.length > this.#maxRecords) this.requests.splice(0, this.requests.length - this.#maxRecords);
  }

  protected override desiredChanged(key: string): void {
    for (const wake of this.#held.get(key) ?? []) wake();
  }

  /** Until the worker's set no longer matches `ifNoneMatch`, `ms` pass, or close() is called. */
  async #hold(workerId: string, ifNoneMatch: string, ms: number): Promise<void> {
    const key = workerKey(workerId);
    const deadline = performance.now() + ms;
    while (etagMatches(ifNoneMatch, this.deploymentsEtagOf(workerId)) && this.#listening) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const set = this.#held.get(key) ?? new Set();
        this.#held.set(key, set);
        const wake = (): void => {
          clearTimeout(timer);
          this.#sleepers.delete(wake);
          set.delete(wake);
          if (set.size === 0) this.#held.delete(key);
          resolve();
        };
        const timer = setTimeout(wake, left);
        set.add(wake);
        this.#sleepers.add(wake);
      });
    }
  }

  /** Resolves true after `ms`, or false as soon as close() is called. */
  #sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#sleepers.delete(wake);
        resolve(false);
      };
      const timer = setTimeout(() => {
        this.#sleepers.delete(wake);
        resolve(true);
      }, ms);
      this.#sleepers.add(wake);
    });
  }
}

function answerWithFault(fault: Exclude<Fault, { kind: 'delay' }>, req: IncomingMessage, res: ServerResponse): void {
  switch (fault.kind) {
    case 'reset': {
      // A TCP RST rather than a FIN: what a crashed proxy or a dropped NAT entry looks like.
      const socket = req.socket;
      if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
      else socket.destroy();
      return;
    }
    case 'garbage':
      // The header claims JSON on purpose so clients must survive a failed parse, not just a
      // content-type check.
      return send(res, 200, Buffer.from(GARBAGE_BODY), 'application/json; charset=utf-8');
    case 'status': {
      const text = fault.body ?? defaultFaultBody(fault.status);
      const headers: Record<string, string> = {
        ...fault.headers,
        ...(fault.retryAfter === undefined ? {} : { 'Retry-After': fault.retryAfter }),
      };
      return send(res, fault.status, Buffer.from(text, 'utf8'), contentTypeFor(text), headers);
    }
  }
}

function contentTypeFor(text: string): string {
  try {
    JSON.parse(text);
    return 'application/json; charset=utf-8';
  } catch {
    return text.trimStart().startsWith('<') ? 'text/html; charset=utf-8' : 'text/plain; charset=utf-8';
  }
}

/** The Authorization value and the bearer token inside it: neither may reach a record or a log. */
function secretsIn(header: string | undefined): string[] {
  if (header === undefined) return [];
  const secrets = [header, header.startsWith('Bearer ') ? header.substring(7) : header.trim()];
  return secrets.filter((s) => s.length >= MIN_SECRET_LENGTH).sort((a, b) => b.length - a.length);
}

/** Replaces every occurrence of a secret in any string inside `value` (JSON-shaped). */
function redact(value: unknown, secrets: string[]): unknown {
  if (secrets.length === 0) return value;
  if (typeof value === 'string') return secrets.reduce((text, s) => text.split(s).join('[redacted]'), value);
  if (Array.isArray(value)) return value.map((v) => redact(v, secrets));
  if (typeof value === 'object' && value !== null) {
    // fromEntries defines own properties, so a "__proto__" key stays data instead of a prototype.
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [redact(k, secrets), redact(v, secrets)]));
  }
  return value;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

export function createReferenceControlPlane(opts: ReferenceControlPlaneOptions = {}): ReferenceControlPlane {
  return new RefControlPlane(opts);
}

/** Creates and starts a reference control plane; the usual entry point for tests and `dev`. */
export async function startReferenceControlPlane(opts: ReferenceControlPlaneOptions = {}): Promise<ReferenceControlPlane> {
  const cp = createReferenceControlPlane(opts);
  await cp.listen();
  return cp;
}
