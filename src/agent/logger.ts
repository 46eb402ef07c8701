import { pino, type Logger, type LoggerOptions } from 'pino';
import { createRequire } from 'node:module';

export type { Logger };

/**
 * Field names whose values are never logged, wherever they sit in a log object. The Secret
 * wrapper already prints `[redacted]`; this is the second belt for plain strings.
 */
const REDACT_PATHS = [
  'token', '*.token', 'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization',
  'password', '*.password', 'secret', '*.secret', 'joinToken', '*.joinToken', 'value', 'secrets[*].value', '*.secrets[*].value',
  'registryAuth', '*.registryAuth',
];

export interface LoggerSetup {
  level?: string;
  /** Pretty, human-oriented output; defaults to stdout being a TTY. */
  pretty?: boolean;
  destination?: NodeJS.WritableStream;
}

export function createLogger(setup: LoggerSetup = {}): Logger {
  const options: LoggerOptions = {
    name: 'skypanel-agent',
    level: setup.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
  };
  const pretty = setup.pretty ?? (process.stdout.isTTY === true && setup.destination === undefined);
  if (pretty) {
    // In-thread pretty stream: no transport worker thread, which would cost ~10 MB of RSS.
    const require = createRequire(import.meta.url);
    const prettyFactory = require('pino-pretty') as (o: object) => NodeJS.WritableStream;
    return pino(options, prettyFactory({ colorize: true, translateTime: 'SYS:standard', ignore: 'pid,hostname,name' }));
  }
  return pino(options, setup.destination ?? pino.destination({ fd: 1, sync: true }));
}
