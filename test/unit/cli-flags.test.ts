import { readFileSync, readdirSync } from 'node:fs';
import { Command, CommanderError, type Option } from 'commander';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../../src/agent/config-schema.js';
import { buildProgram } from '../../src/cli/main.js';

/**
 * Every flag the docs name must parse: the README's config table, every `skypanel-agent <command>
 * --flag` written in the README and docs/, and every option each command's --help lists. Options
 * are parsed only (parseOptions runs the value parsers, not the command's action).
 */
const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const docsDir = new URL('../../docs/', import.meta.url);
const docs = [
  readme,
  ...readdirSync(docsDir)
    .filter((f) => f.endsWith('.md'))
    .map((f) => readFileSync(new URL(f, docsDir), 'utf8')),
];

const program = buildProgram();
const command = (name: string): Command => {
  const c = program.commands.find((x) => x.name() === name);
  if (!c) throw new Error(`no command ${name}`);
  return c;
};

/** A value each placeholder accepts. */
function sampleFor(opt: Option): string[] {
  if (!opt.required && !opt.optional) return [];
  const placeholder = /<([^>]+)>/.exec(opt.flags)?.[1] ?? '';
  if (opt.argChoices) return [opt.argChoices[0]!];
  const samples: Record<string, string> = {
    seconds: '15',
    port: '3001',
    'host:port': '127.0.0.1:9741',
    url: 'https://panel.example.com',
    level: 'debug',
  };
  return [samples[placeholder] ?? '/tmp/x'];
}

/** Values to try after the placeholder's own, for placeholders this file does not know. */
const FALLBACK_SAMPLES = ['5', 'https://panel.example.com', '127.0.0.1:9741', 'x'];

/**
 * Parse `--flag value` on `cmd`; returns what commander did not accept. A value parser that
 * refuses every sample is a failure too (its error is thrown).
 */
function parseFlag(cmd: Command, long: string): string[] {
  const opt = cmd.options.find((o) => o.long === long);
  if (!opt) return [long];
  const first = sampleFor(opt);
  const tries = first.length === 0 ? [[]] : [first, ...FALLBACK_SAMPLES.map((v) => [v])];
  cmd.configureOutput({ writeErr: () => {} });
  let error: unknown;
  for (const value of tries) {
    try {
      return cmd.parseOptions([long, ...value]).unknown;
    } catch (err) {
      error = err;
    }
  }
  throw error;
}

describe('every documented flag parses', () => {
  const tableFlags = readme
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .flatMap((row) => [...(row.split('|')[3] ?? '').matchAll(/`(--[a-z][a-z-]*)`/g)].map((m) => m[1]!));

  it('the README config table names flags, and CONFIG_KEYS agrees with it', () => {
    expect(tableFlags).toContain('--poll-interval');
    const fromSchema = CONFIG_KEYS.flatMap((k) => (k.flag ?? '').split(' / ').filter(Boolean));
    expect(new Set(tableFlags)).toEqual(new Set(fromSchema));
  });

  it('each config-table flag parses on run or register', () => {
    for (const flag of tableFlags) {
      const takers = ['run', 'register'].filter((name) => parseFlag(command(name), flag).length === 0);
      expect(takers, `${flag} is in the config table, but neither run nor register accepts it`).not.toEqual([]);
    }
  });

  it('run takes every runtime key of the config table that has a flag', () => {
    const registerOnly = new Set(['--control-plane', '--token', '--token-file', '--ip-address', '--name']);
    for (const flag of tableFlags.filter((f) => !registerOnly.has(f))) expect(parseFlag(command('run'), flag), `run ${flag}`).toEqual([]);
  });

  it('register takes --state-dir and --status-listen; dev takes --status-listen', () => {
    expect(parseFlag(command('register'), '--state-dir')).toEqual([]);
    expect(parseFlag(command('register'), '--status-listen')).toEqual([]);
    expect(parseFlag(command('dev'), '--status-listen')).toEqual([]);
  });

  it('every `skypanel-agent <command> --flag` written in the README and docs/ is an option of that command', () => {
    const seen: string[] = [];
    for (const text of docs) {
      for (const m of text.matchAll(/skypanel-agent ([a-z]+)((?:[ \t]+[^\s`|#&;)]+)*)/g)) {
        const name = m[1]!;
        if (!program.commands.some((c) => c.name() === name)) continue;
        for (const flag of m[2]!.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? []) {
          if (flag === '--help' || flag === '--version') continue;
          seen.push(`${name} ${flag}`);
          expect(
            command(name).options.some((o) => o.long === flag),
            `docs write \`skypanel-agent ${name} ${flag}\`, which ${name} does not accept`,
          ).toBe(true);
        }
      }
    }
    // The walk must find the commands the README documents, or it proves nothing.
    expect(seen).toEqual(expect.arrayContaining(['register --control-plane', 'install --token-file']));
  });

  it('every option in every command parses with a value of its placeholder', () => {
    for (const cmd of program.commands) {
      for (const opt of cmd.options) {
        if (opt.long === '--version' || opt.long === '--help' || !opt.long) continue;
        expect(parseFlag(cmd, opt.long), `${cmd.name()} ${opt.long}`).toEqual([]);
      }
    }
  });

  it('a bad value is a commander usage error, not a crash later', () => {
    const dev = buildProgram().commands.find((c) => c.name() === 'dev')!;
    dev.configureOutput({ writeErr: () => {} });
    expect(() => dev.parseOptions(['--port', 'abc'])).toThrow(CommanderError);
    expect(() => dev.parseOptions(['--port', '70000'])).toThrow(/--port must be a port number from 0 to 65535/);
  });
});
