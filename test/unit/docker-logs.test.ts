import { describe, expect, it } from 'vitest';
import { DockerLogDemuxer, LogTail, demuxDockerLogs } from '../../src/swarm/logs.js';

/** One Docker log frame: [stream, 0, 0, 0, uint32 BE length] + payload. */
function frame(stream: 1 | 2, text: string | Buffer): Buffer {
  const payload = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** Feeds `chunks` through one demuxer, as a stream would deliver them. */
function read(chunks: Buffer[], tail = 100, maxLen?: number): string[] {
  const out = new LogTail(tail, maxLen);
  const demux = new DockerLogDemuxer(out);
  for (const c of chunks) demux.push(c);
  demux.end();
  return out.lines();
}

/** Every way to cut `buf` in two, and byte by byte. */
function splits(buf: Buffer): Buffer[][] {
  const all: Buffer[][] = [];
  for (let i = 1; i < buf.length; i++) all.push([buf.subarray(0, i), buf.subarray(i)]);
  all.push([...buf].map((b) => Buffer.from([b])));
  return all;
}

describe('Docker log demuxer', () => {
  it('reads stdout and stderr frames into lines, in order', () => {
    const buf = Buffer.concat([frame(1, 'out one\nout two\n'), frame(2, 'err one\n'), frame(1, 'out three\n')]);
    expect(read([buf])).toEqual(['out one', 'out two', 'err one', 'out three']);
    expect(demuxDockerLogs(buf, 100)).toEqual(['out one', 'out two', 'err one', 'out three']);
  });

  it('gives the same lines however the frames are split across chunks (headers, payloads, a character)', () => {
    // "é" is two bytes and "€" three: some cuts fall inside them, some inside a header.
    const buf = Buffer.concat([frame(1, 'héllo\n'), frame(2, '€ err\n'), frame(1, 'bye\n')]);
    for (const chunks of splits(buf)) expect(read(chunks)).toEqual(['héllo', '€ err', 'bye']);
  });

  it('never splices a stdout line with a stderr line when their frames interleave', () => {
    const chunks = [frame(1, 'out-start '), frame(2, 'err-start '), frame(1, 'out-end\n'), frame(2, 'err-end\n')];
    expect(read(chunks)).toEqual(['out-start out-end', 'err-start err-end']);
  });

  it('reads a TTY container (no frames) as raw text, split anywhere', () => {
    const raw = Buffer.from('plain line\r\nsecond line\nno newline at end', 'utf8');
    for (const chunks of splits(raw)) expect(read(chunks)).toEqual(['plain line', 'second line', 'no newline at end']);
    expect(demuxDockerLogs(raw, 100)).toEqual(['plain line', 'second line', 'no newline at end']);
  });

  it('reads raw output shorter than one header', () => {
    expect(read([Buffer.from('ok\n')])).toEqual(['ok']);
    expect(demuxDockerLogs(Buffer.from('hi'), 10)).toEqual(['hi']);
    expect(demuxDockerLogs(Buffer.alloc(0), 10)).toEqual([]);
  });

  it('keeps the last `tail` lines, keeps empty lines, and cuts long lines with …', () => {
    const buf = frame(1, 'a\n\nb\nc\n');
    expect(demuxDockerLogs(buf, 3)).toEqual(['', 'b', 'c']);
    expect(demuxDockerLogs(frame(1, `${'x'.repeat(10)}\nfour\n`), 10, 4)).toEqual(['xxxx…', 'four']);
  });

  it('turns what follows a broken header into raw text rather than dropping it', () => {
    const buf = Buffer.concat([frame(1, 'framed\n'), Buffer.from('garbage after it\n')]);
    expect(read([buf])).toEqual(['framed', 'garbage after it']);
  });

  it('drops a header cut off at the end of framed output', () => {
    expect(read([frame(1, 'whole\n'), frame(2, 'cut').subarray(0, 5)])).toEqual(['whole']);
  });
});
