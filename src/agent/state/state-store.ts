import { constants } from 'node:fs';
import { chmod, mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { z } from 'zod';
import { writeFileAtomic } from './atomic-file.js';
import type { Logger } from '../logger.js';
import { TimerLoop } from '../../util/timer-loop.js';

/** A file larger than this is not something the agent wrote (the usage outbox tops out near 7 MB). */
const MAX_STATE_FILE_BYTES = 64 * 1024 * 1024;
/** Moved-aside copies kept per file name; older ones are deleted, so a file that keeps going bad cannot fill the disk. */
const KEEP_BAD_COPIES = 3;
/** Moved-aside events remembered for the status API. */
const MAX_MOVED_ASIDE = 20;
/** A failed write is tried again after 1 s, doubling up to this, with jitter. */
const RETRY_CAP_MS = 30_000;

export interface StateWriteFailure {
  file: string;
  since: string;
  /** Consecutive failed attempts. */
  failures: number;
  error: string;
}

export interface MovedAsideFile {
  file: string;
  movedTo: string | null;
  reason: string;
  at: string;
}

export interface StateDirHealth {
  /** Files whose newest content is not on disk yet (the agent works from memory and retries). */
  failing: StateWriteFailure[];
  /** Files found unusable at load and moved aside, newest last. */
  movedAside: MovedAsideFile[];
  writeFailuresTotal: number;
}

export interface StateStoreOptions {
  logger?: Logger;
  /** Called on every failed write (metrics). */
  onWriteFailure?(file: string): void;
  /** Called when an unusable file is moved aside (metrics). */
  onMovedAside?(file: string): void;
  random?: () => number;
}

/** One document's write state: the newest content, its version, and what reached the disk. */
interface Slot {
  name: string;
  data: string | undefined;
  version: number;
  written: number;
  chain: Promise<void>;
  failure: StateWriteFailure | undefined;
  /** Writes the newest content again while it is not on disk; idle otherwise. */
  retry: TimerLoop;
}

/**
 * The agent's durable state directory: small JSON documents, each written atomically, mode 0600
 * in a 0700 directory (the desired set holds deployment secrets). Intent is persisted; actual
 * state is always re-read from Docker.
 *
 * Two rules make it safe to run on a hostile or broken disk:
 * - Reading never trusts the file: symbolic links are not followed (O_NOFOLLOW; a link, a FIFO or
 *   a directory in a document's place is moved aside, not read), and the content must be JSON of
 *   the document's schema. An unusable file is renamed to `<name>.bad-<time>` (kept for
 *   inspection, logged once) and the agent starts without it.
 * - Writing never blocks the agent: `write` resolves whether or not the content reached the disk.
 *   On a failure (a full disk, a read-only remount) the newest content per document is kept in
 *   memory and written again with backoff; `health()` says which files are behind, for /healthz,
 *   /v1/status and /metrics.
 */
export class StateStore {
  readonly dir: string;
  readonly #opts: StateStoreOptions;
  readonly #slots = new Map<string, Slot>();
  readonly #movedAside: MovedAsideFile[] = [];
  #writeFailuresTotal = 0;
  #stopped = false;
  #initialised = false;

  constructor(dir: string, opts: StateStoreOptions = {}) {
    this.dir = dir;
    this.#opts = opts;
  }

  /** Creates the directory; safe to call again (each loop that uses the store does). */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    if (this.#initialised) return;
    this.#initialised = true;
    // Temp files of writes a crash interrupted: on a full disk they hold the space the next write needs.
    // Only the first time, before this store writes anything: later, one could be a write in flight.
    for (const entry of await readdir(this.dir).catch(() => [] as string[])) {
      if (/^\..+\.[0-9a-f]{12}\.tmp$/.test(entry)) await unlink(join(this.dir, entry)).catch(() => {});
    }
  }

  /** The document, if present and of the schema's shape; an unusable one is moved aside. */
  async read<T>(name: string, schema: z.ZodType<T>): Promise<T | undefined> {
    const path = join(this.dir, name);
    let text: string;
    try {
      // O_NONBLOCK: a FIFO put in a document's place must not hang the agent's start.
      const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      try {
        const st = await fh.stat();
        if (!st.isFile()) return await this.#moveAside(name, 'is not a regular file');
        if (st.size > MAX_STATE_FILE_BYTES) return await this.#moveAside(name, `is larger than ${MAX_STATE_FILE_BYTES} bytes`);
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      if (code === 'ELOOP') return this.#moveAside(name, 'is a symbolic link');
      // Unreadable (EACCES, EIO): start without it; the next write replaces it.
      this.#opts.logger?.error({ file: name, err: (err as Error).message }, 'cannot read a state file; starting without it');
      return undefined;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return this.#moveAside(name, 'is not valid JSON');
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      // Path and rule only: a value from the file could be a secret.
      const issue = parsed.error.issues[0];
      const where = issue && issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
      return this.#moveAside(name, `does not have the expected shape (${where}: ${issue?.code ?? 'invalid'})`);
    }
    return parsed.data;
  }

  /**
   * Saves a document. Resolves true once this content (or newer) is on disk, false when the write
   * failed; the newest content is then written again with backoff until it lands. Writes of one
   * document are serialised, so an older snapshot never lands after a newer one. Rejects only when
   * the value cannot be serialised at all (JSON.stringify out of stack): nothing could be stored.
   */
  async write(name: string, value: unknown): Promise<boolean> {
    const slot = this.#slot(name);
    slot.data = JSON.stringify(value);
    const version = ++slot.version;
    await this.#enqueue(slot);
    return slot.written >= version;
  }

  health(): StateDirHealth {
    const failing: StateWriteFailure[] = [];
    for (const s of this.#slots.values()) if (s.failure) failing.push({ ...s.failure });
    return { failing, movedAside: this.#movedAside.map((m) => ({ ...m })), writeFailuresTotal: this.#writeFailuresTotal };
  }

  /** Stops retrying; content still not on disk gets one last attempt. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#slots.values()].map((s) => s.retry.stop()));
    await Promise.all([...this.#slots.values()].map((s) => this.#enqueue(s)));
  }

  #slot(name: string): Slot {
    let slot = this.#slots.get(name);
    if (!slot) {
      // Unref'd: a retry left pending must not keep a process alive that is otherwise done.
      const retry = new TimerLoop(
        async () => {
          await this.#enqueue(s);
          return s.failure && !this.#stopped ? this.#retryDelay(s) : undefined;
        },
        () => RETRY_CAP_MS,
        { unref: true },
      );
      const s: Slot = { name, data: undefined, version: 0, written: 0, chain: Promise.resolve(), failure: undefined, retry };
      if (!this.#stopped) retry.start(null);
      this.#slots.set(name, s);
      slot = s;
    }
    return slot;
  }

  #enqueue(slot: Slot): Promise<void> {
    slot.chain = slot.chain.then(() => this.#flush(slot));
    return slot.chain;
  }

  async #flush(slot: Slot): Promise<void> {
    if (slot.written === slot.version || slot.data === undefined) return;
    const { version, data } = slot;
    const logger = this.#opts.logger;
    try {
      await writeFileAtomic(join(this.dir, slot.name), data, 0o600);
    } catch (err) {
      const error = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      this.#writeFailuresTotal++;
      this.#opts.onWriteFailure?.(slot.name);
      if (!slot.failure) {
        slot.failure = { file: slot.name, since: new Date().toISOString(), failures: 0, error };
        logger?.error(
          { file: slot.name, dir: this.dir, err: (err as Error).message },
          'cannot write a state file; working from memory and retrying',
        );
      }
      slot.failure.failures++;
      slot.failure.error = error;
      this.#scheduleRetry(slot);
      return;
    }
    slot.written = version;
    // Keep only content that still has to reach the disk. A retry still pending finds nothing to write.
    if (slot.written === slot.version) slot.data = undefined;
    if (slot.failure) {
      logger?.info({ file: slot.name, failedAttempts: slot.failure.failures }, 'state file written again after failures');
      slot.failure = undefined;
    }
  }

  /** A retry already pending keeps its time; one in flight returns the next delay itself. */
  #scheduleRetry(slot: Slot): void {
    slot.retry.wake(this.#retryDelay(slot));
  }

  #retryDelay(slot: Slot): number {
    const ceiling = Math.min(RETRY_CAP_MS, 1_000 * 2 ** Math.min(slot.failure?.failures ?? 0, 15));
    return Math.round(ceiling * (0.5 + (this.#opts.random ?? Math.random)() * 0.5));
  }

  /** Renames an unusable file (the link itself, never its target) and logs it once; resolves undefined. */
  async #moveAside(name: string, reason: string): Promise<undefined> {
    const path = join(this.dir, name);
    const movedTo = `${name}.bad-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    let done = true;
    try {
      await rename(path, join(this.dir, movedTo));
    } catch {
      done = false;
    }
    this.#movedAside.push({ file: name, movedTo: done ? movedTo : null, reason, at: new Date().toISOString() });
    if (this.#movedAside.length > MAX_MOVED_ASIDE) this.#movedAside.shift();
    this.#opts.onMovedAside?.(name);
    this.#opts.logger?.warn(
      { file: name, movedTo: done ? join(this.dir, movedTo) : null, reason },
      `state file ${name} ${reason}: ${done ? 'moved aside' : 'could not be moved aside'}; starting without it`,
    );
    await this.#pruneBadCopies(name);
    return undefined;
  }

  async #pruneBadCopies(name: string): Promise<void> {
    const entries = await readdir(this.dir).catch(() => [] as string[]);
    // ISO times sort as text: the oldest copies come first.
    const copies = entries.filter((e) => e.startsWith(`${name}.bad-`)).sort();
    for (const old of copies.slice(0, Math.max(0, copies.length - KEEP_BAD_COPIES))) await unlink(join(this.dir, old)).catch(() => {});
  }
}
