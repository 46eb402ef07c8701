import { StringDecoder } from 'node:string_decoder';

/** Longer log lines are cut (with a trailing …) unless the caller says otherwise. */
export const DEFAULT_MAX_LOG_LINE = 4096;

/** Docker's stream numbers in a frame header. */
const STDOUT = 1;
const HEADER_BYTES = 8;

/**
 * Keeps the last `max` complete lines, each cut at `maxLen`, so memory stays at max × maxLen
 * whatever Docker sends. Bytes are decoded per output stream, so a stdout line and a stderr line
 * arriving in alternating frames are never spliced, and a character split across frames is kept whole.
 */
export class LogTail {
  readonly #ring: string[] = [];
  readonly #partial = new Map<number, string>();
  readonly #decoders = new Map<number, StringDecoder>();
  #total = 0;

  constructor(
    private readonly max: number,
    private readonly maxLen: number = DEFAULT_MAX_LOG_LINE,
  ) {}

  /** Lines completed so far, including those the ring has already let go. */
  get count(): number {
    return this.#total;
  }

  write(stream: number, bytes: Buffer): void {
    let dec = this.#decoders.get(stream);
    if (!dec) this.#decoders.set(stream, (dec = new StringDecoder('utf8')));
    const parts = ((this.#partial.get(stream) ?? '') + dec.write(bytes)).split('\n');
    const last = parts.pop()!;
    for (const line of parts) this.#add(line);
    this.#partial.set(stream, this.#cut(last));
  }

  /** The kept lines, oldest first; an unfinished last line of each stream counts as a line. */
  lines(): string[] {
    for (const [stream, rest] of this.#partial) {
      if (rest !== '') this.#add(rest);
      this.#partial.set(stream, '');
    }
    return [...this.#ring];
  }

  #cut(s: string): string {
    // One extra character marks an over-long line; it is replaced by … when the line completes.
    return s.length > this.maxLen ? s.slice(0, this.maxLen + 1) : s;
  }

  #add(line: string): void {
    const l = line.endsWith('\r') ? line.slice(0, -1) : line;
    this.#ring.push(l.length > this.maxLen ? `${l.slice(0, this.maxLen)}…` : l);
    if (this.#ring.length > this.max) this.#ring.shift();
    this.#total++;
  }
}

/**
 * The one reader of Docker's log framing. A non-TTY container's output comes as frames:
 * [stream, 0, 0, 0, uint32 BE length] + payload (stream 1 stdout, 2 stderr); a TTY container's is
 * raw text. Which one is decided on the first 8 bytes; frames are then parsed incrementally, so a
 * header or a payload split across chunks costs nothing. Bytes that are not a header where one is
 * due turn the rest into raw text rather than being dropped.
 */
export class DockerLogDemuxer {
  #mode: 'unknown' | 'framed' | 'raw' = 'unknown';
  #pending = Buffer.alloc(0);
  #stream = STDOUT;
  #left = 0;

  constructor(private readonly out: LogTail) {}

  push(chunk: Buffer): void {
    if (this.#mode === 'raw') return this.out.write(STDOUT, chunk);
    let buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    this.#pending = Buffer.alloc(0);
    while (buf.length > 0) {
      if (this.#left > 0) {
        const n = Math.min(this.#left, buf.length);
        this.out.write(this.#stream, buf.subarray(0, n));
        this.#left -= n;
        buf = buf.subarray(n);
        continue;
      }
      if (buf.length < HEADER_BYTES) {
        this.#pending = Buffer.from(buf);
        return;
      }
      const isHeader = buf[0]! <= 2 && buf[1] === 0 && buf[2] === 0 && buf[3] === 0;
      if (this.#mode === 'unknown') this.#mode = isHeader ? 'framed' : 'raw';
      if (this.#mode === 'raw' || !isHeader) {
        this.#mode = 'raw';
        return this.out.write(STDOUT, buf);
      }
      this.#stream = buf[0]!;
      this.#left = buf.readUInt32BE(4);
      buf = buf.subarray(HEADER_BYTES);
    }
  }

  /** Output shorter than one header can only be raw text; a cut-off header of framed output is dropped. */
  end(): void {
    if (this.#pending.length > 0 && this.#mode !== 'framed') this.out.write(STDOUT, this.#pending);
    this.#pending = Buffer.alloc(0);
  }
}

/** The last `tail` lines of a whole log answer (framed or raw), in order. */
export function demuxDockerLogs(buf: Buffer, tail: number, maxLineLength = DEFAULT_MAX_LOG_LINE): string[] {
  const out = new LogTail(Math.max(0, Math.floor(tail)), maxLineLength);
  const demux = new DockerLogDemuxer(out);
  demux.push(buf);
  demux.end();
  return out.lines();
}
