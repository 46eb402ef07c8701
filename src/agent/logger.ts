import { pino, type Logger, type LoggerOptions } from 'pino';
import { createRequire } from 'node:module';
import { redact, REDACTED, type KnownSecrets } from '../secret.js';
import { withJournalPriority, writesToJournal } from './journald.js';

export type { Logger };

/**
 * Field names whose values are never logged, wherever they sit in a log object. The Secret
 * wrapper already prints `[redacted]`; this is the second belt for plain strings, and the
 * `secrets` pass over every finished line (createLogger) the third, for values in any field.
 */
const REDACT_PATHS = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'password',
  '*.password',
  'secret',
  '*.secret',
  'joinToken',
  '*.joinToken',
  'value',
  'secrets[*].value',
  '*.secrets[*].value',
  'registryAuth',
  '*.registryAuth',
];

export interface LoggerSetup {
  level?: string;
  /** Pretty, human-oriented output; defaults to stdout being a TTY. */
  pretty?: boolean;
  destination?: NodeJS.WritableStream;
  /** Secret values to redact from every line, in every spelling (src/secret.ts `redact`). */
  secrets?: KnownSecrets;
}

export function createLogger(setup: LoggerSetup = {}): Logger {
  const options: LoggerOptions = {
    name: 'skypanel-agent',
    level: setup.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    base: { pid: process.pid },
    // "level":"warn", not 40: journald, Loki and jq users read the word, and the journald prefix
    // below is derived from it.
    formatters: { level: (label) => ({ level: label }) },
  };
  const known = setup.secrets;
  // On the serialised line, so a secret in a message, an error text or any field is caught.
  if (known) options.hooks = { streamWrite: (line) => redact(line, known.values()) };
  const pretty = setup.pretty ?? (process.stdout.isTTY === true && setup.destination === undefined);
  if (pretty) {
    // In-thread pretty stream: no transport worker thread, which would cost ~10 MB of RSS.
    const require = createRequire(import.meta.url);
    const prettyFactory = require('pino-pretty') as (o: object) => NodeJS.WritableStream;
    return pino(options, prettyFactory({ colorize: true, translateTime: 'SYS:standard', ignore: 'pid,hostname,name', singleLine: true }));
  }
  if (setup.destination) return pino(options, setup.destination);
  const stdout = pino.destination({ fd: 1, sync: true });
  return pino(options, writesToJournal(1) ? withJournalPriority(stdout) : stdout);
}
