import { mkdtemp, open, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { priorityOf, withJournalPriority, writesToJournal } from '../../src/agent/journald.js';
import { createLogger } from '../../src/agent/logger.js';

describe('journald priorities', () => {
  it('maps each pino level word to its syslog priority; anything else is info', () => {
    expect(['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((l) => priorityOf(`{"level":"${l}","msg":"x"}\n`))).toEqual([
      2, 3, 4, 6, 7, 7,
    ]);
    expect(priorityOf('{"level":40,"msg":"x"}')).toBe(6);
    expect(priorityOf('not json')).toBe(6);
    expect(priorityOf('{"level":"')).toBe(6);
  });

  it('the logger writes level words, and the journald sink prefixes every line', () => {
    const lines: string[] = [];
    const sink = withJournalPriority({ write: (l: string) => lines.push(l) });
    const logger = createLogger({
      level: 'debug',
      destination: new Writable({
        write: (c, _e, cb) => {
          sink.write(String(c));
          cb();
        },
      }),
    });
    logger.warn('w');
    logger.error('e');
    logger.debug('d');
    expect(lines.map((l) => l.slice(0, 20))).toEqual(['<4>{"level":"warn","', '<3>{"level":"error",', '<7>{"level":"debug",']);
  });

  it('JOURNAL_STREAM counts only when it names the very stream the fd is', async () => {
    const file = join(await mkdtemp(join(tmpdir(), 'skp-journal-')), 'out');
    const fh = await open(file, 'w');
    try {
      const st = await stat(file);
      expect(writesToJournal(fh.fd, { JOURNAL_STREAM: `${st.dev}:${st.ino}` })).toBe(true);
      expect(writesToJournal(fh.fd, { JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` })).toBe(false);
      expect(writesToJournal(fh.fd, {})).toBe(false);
      expect(writesToJournal(fh.fd, { JOURNAL_STREAM: 'garbage' })).toBe(false);
    } finally {
      await fh.close();
    }
  });
});
