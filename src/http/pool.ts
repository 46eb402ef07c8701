import type { Agent, IncomingHttpHeaders, RequestOptions } from 'node:http';
import { http, https } from '../util/node-http.js';
import { HttpCall, type BufferedResponse, type CallContext, type HttpCallSpec, type HttpResponse } from './call.js';
import type { HttpTransportError } from './errors.js';

/*
 * The one bounded HTTP/1.1 core under every client of the agent (the control plane, the Docker
 * Engine, the status CLI): a pool is a target plus a connection policy, and each request through
 * it is an HttpCall (call.ts) bounded by its phase timeouts, deadline and size cap, failing with
 * the typed errors of errors.ts.
 */

export type HttpTarget = { tls: boolean; host: string; port: number } | { socketPath: string };

export interface HttpPoolOptions {
  /** false: every call on a connection of its own, closed after it (nothing left to hold a CLI process open). */
  keepAlive: boolean;
  maxSockets?: number;
  maxFreeSockets?: number;
  /** How long an idle kept connection stays open when the server gives no `Keep-Alive: timeout=N` hint. */
  idleSocketMs?: number;
  /** Send `Connection: close` on a call that comes after the server would have dropped the idle connection (see #sparse). */
  closeWhenSparse?: boolean;
  /** Over TLS: the trust root (default: Node's store), a client certificate, and whether to verify the server (default: yes). */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer; rejectUnauthorized?: boolean };
}

const DEFAULT_IDLE_SOCKET_MS = 45_000;

/** `http://host:port/...` or `https://...` as a target; anything else is refused. */
export function targetFromUrl(url: URL): HttpTarget {
  const tls = url.protocol === 'https:';
  if (!tls && url.protocol !== 'http:') throw new TypeError(`unsupported protocol ${url.protocol} (http or https)`);
  return { tls, host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port === '' ? (tls ? 443 : 80) : Number(url.port) };
}

/**
 * How long the server keeps an idle connection, from its `Keep-Alive: timeout=N` hint less the
 * second Node's agent lets go early (it closes the idle socket at the hint, before the server
 * does, so the close-while-we-write race is rare); `fallbackMs` without a hint.
 */
export function keepAliveMs(header: string | string[] | undefined, fallbackMs: number): number {
  const m = typeof header === 'string' ? /(?:^|[\s,])timeout=(\d+)/i.exec(header) : null;
  return m ? Math.max(0, Number(m[1]) * 1000 - 1000) : fallbackMs;
}

export class HttpPool {
  readonly #agent: Agent | false;
  readonly #ctx: CallContext;
  readonly #idleSocketMs: number;
  readonly #closeWhenSparse: boolean;
  /** How long the server keeps an idle connection, less a second (keepAliveMs). */
  #keepMs: number;
  /** When the last call ended (performance.now()); undefined before the first. */
  #idleSince: number | undefined;
  #inFlight = 0;

  constructor(target: HttpTarget, opts: HttpPoolOptions) {
    const tls = 'tls' in target && target.tls;
    const tlsOptions = tls ? (opts.tls ?? {}) : {};
    this.#idleSocketMs = opts.idleSocketMs ?? DEFAULT_IDLE_SOCKET_MS;
    this.#keepMs = this.#idleSocketMs;
    this.#closeWhenSparse = opts.closeWhenSparse ?? false;
    if (opts.keepAlive) {
      // lifo hands out the most recently used socket, the one least likely to have been closed by the server.
      const pool = {
        keepAlive: true,
        maxSockets: opts.maxSockets,
        maxFreeSockets: opts.maxFreeSockets,
        timeout: this.#idleSocketMs,
        scheduling: 'lifo' as const,
      };
      // https.Agent verifies certificates against Node's CA store (plus NODE_EXTRA_CA_CERTS) unless `ca` is given.
      this.#agent = tls ? new (https().Agent)({ ...pool, ...tlsOptions }) : new http.Agent(pool);
    } else {
      this.#agent = false;
    }
    const where = 'socketPath' in target ? { socketPath: target.socketPath } : { host: target.host, port: target.port };
    const options: RequestOptions = { ...where, agent: this.#agent, ...(this.#agent === false ? tlsOptions : {}) };
    const agent = this.#agent;
    this.#ctx = {
      send: tls ? https().request : http.request,
      options,
      connectedEvent: tls ? 'secureConnect' : 'connect',
      dropIdleSockets: () => {
        if (agent) for (const name in agent.freeSockets) for (const socket of agent.freeSockets[name] ?? []) socket.destroy();
      },
      onHeaders: (headers: IncomingHttpHeaders) => {
        this.#keepMs = keepAliveMs(headers['keep-alive'], this.#idleSocketMs);
      },
      onEnd: () => {
        this.#inFlight--;
        this.#idleSince = performance.now();
      },
    };
  }

  /**
   * A call that comes longer after the previous one than the server keeps an idle connection
   * finds none to reuse, and the one it opens would only idle until closed unused: asking the
   * server to close it after the answer spares the idle socket's timers and the client-side close.
   */
  #sparse(now: number): boolean {
    return this.#inFlight === 0 && this.#idleSince !== undefined && now - this.#idleSince > this.#keepMs;
  }

  /** A buffered call: resolves with the answer, whatever its status; rejects with an HttpTransportError. */
  request(spec: Omit<HttpCallSpec, 'streamIf' | 'streamIdleMs'>): Promise<BufferedResponse> {
    // Without streamIf a call never hands a stream over.
    return this.send(spec) as Promise<BufferedResponse>;
  }

  /** A call whose answer is handed over as a stream when `spec.streamIf` says so for its status, buffered otherwise. */
  send(spec: HttpCallSpec): Promise<HttpResponse> {
    const close = this.#closeWhenSparse && this.#sparse(performance.now());
    const call = close ? { ...spec, headers: { ...spec.headers, connection: 'close' } } : spec;
    this.#inFlight++;
    return new Promise<HttpResponse>((resolve, reject: (e: HttpTransportError) => void) =>
      new HttpCall(this.#ctx, call, resolve, reject).start(),
    );
  }

  /** Closes every connection; calls in flight fail with a SocketError. */
  close(): void {
    if (this.#agent) this.#agent.destroy();
  }
}
