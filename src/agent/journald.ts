import { fstatSync } from 'node:fs';

/**
 * journald files every line of a service's stdout at the unit's default priority (info) unless the
 * line starts with an sd-daemon(3) prefix "<N>". With it, `journalctl -p warning` and Loki's level
 * detection see the agent's warnings and errors for what they are.
 */
const PRIORITY: Record<string, number> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };

/**
 * True when `fd` is the stream journald gave this service: systemd sets JOURNAL_STREAM to that
 * stream's "device:inode" (systemd.exec(5)). Comparing them, not just testing the variable,
 * keeps the prefix out of a file or pipe the output was redirected to (a child inherits the variable).
 */
export function writesToJournal(fd: number, env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The syslog priority of one pino JSON line whose first key is a string level ({"level":"warn",...}). */
export function priorityOf(line: string): number {
  const start = line.startsWith('{"level":"') ? 10 : -1;
  const end = start < 0 ? -1 : line.indexOf('"', start);
  return (end > start && PRIORITY[line.slice(start, end)]) || 6;
}

export interface LineSink {
  write(line: string): unknown;
}

/** Prefixes each line pino writes (one line per write) with its "<N>" priority. */
export function withJournalPriority(sink: LineSink): LineSink {
  return { write: (line: string) => sink.write(`<${priorityOf(line)}>${line}`) };
}
