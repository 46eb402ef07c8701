import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/agent/logger.js';
import { StatusReporter } from '../../src/agent/deployments/status-reporter.js';
import type { ReportContent, ReportOutbox } from '../../src/agent/deployments/report-outbox.js';
import { describeErrorBody } from '../../src/protocol/worker.js';
import { toSwarmError } from '../../src/swarm/observed.js';
import { KnownSecrets, MIN_REDACTABLE_LENGTH, REDACTED, redact, redactDeep, Secret } from '../../src/secret.js';

const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJ3b3JrZXJJZCI6InctMSJ9.c2lnbmF0dXJlLXNlY3JldA';
const SECRET = 'p@ss"word\\with\nquotes-and-ünïcödé';

/** Every 10-character run of every spelling: none may survive redaction. */
function runsOf(value: string): string[] {
  const forms = [
    value,
    JSON.stringify(value).slice(1, -1),
    Buffer.from(value).toString('base64'),
    Buffer.from(value).toString('base64url'),
  ];
  const out: string[] = [];
  for (const f of forms) for (let i = 0; i + 10 <= f.length; i++) out.push(f.slice(i, i + 10));
  return out;
}

function expectClean(text: string, ...values: string[]): void {
  for (const v of values) for (const run of runsOf(v)) expect(text, `"${run}" of a secret survived in: ${text}`).not.toContain(run);
}

describe('Secret', () => {
  it('never prints its value through string, JSON or inspect', () => {
    const s = new Secret('hunter2-very-secret');
    const outputs = [String(s), `${s}`, JSON.stringify({ s }), inspect(s), inspect({ nested: { s } })];
    for (const o of outputs) expect(o).not.toContain('hunter2');
    expect(s.reveal()).toBe('hunter2-very-secret');
  });
});

describe('redact: the one rule', () => {
  it('replaces plain, JSON-escaped and base64 spellings (standard, unpadded, URL-safe) of each value', () => {
    const texts = [
      `plain ${TOKEN} and ${SECRET}`,
      JSON.stringify({ message: `echo ${SECRET}`, token: TOKEN }),
      `auth ${Buffer.from(SECRET).toString('base64')} / ${Buffer.from(TOKEN).toString('base64url')}`,
    ];
    for (const t of texts) {
      const out = redact(t, [TOKEN, new Secret(SECRET)]);
      expect(out).toContain(REDACTED);
      expectClean(out, TOKEN, SECRET);
    }
  });

  it("finds a value inside a longer base64 text at any offset (X-Registry-Auth, a Swarm secret's data)", () => {
    for (const prefix of ['', 'a', 'ab', 'abc', '{"username":"u","password":"']) {
      const encoded = Buffer.from(`${prefix}${SECRET}","serveraddress":"r"}`).toString('base64');
      const out = redact(`X-Registry-Auth: ${encoded}`, [SECRET]);
      expect(out, prefix).toContain(REDACTED);
      // What is left of the value is at most the few characters it shares with its neighbours.
      expect(
        Buffer.from(
          out
            .replace(/^X-Registry-Auth: /, '')
            .split(REDACTED)
            .join(''),
          'base64',
        ).toString('latin1'),
      ).not.toMatch(/ss"word/);
    }
  });

  it('redacts before it cuts: a value straddling the cut leaves no head behind', () => {
    const text = `${'x'.repeat(290)}${TOKEN}`;
    const out = redact(text, [TOKEN], { maxLength: 300 });
    expect(out.length).toBe(300);
    expectClean(out, TOKEN);
    // Cutting first is what leaked: the token minus its tail.
    expect(redact(text.slice(0, 300), [TOKEN])).toContain(TOKEN.slice(0, 10));
  });

  it('leaves values shorter than the minimum alone, longest value first', () => {
    expect(MIN_REDACTABLE_LENGTH).toBe(6);
    expect(redact('true 1234 abcdefgh-longer', ['true', '1234', 'abcdefgh', 'abcdefgh-longer'])).toBe(`true 1234 ${REDACTED}`);
  });

  it('redactDeep keeps JSON valid: keys, strings and a number whose text is a secret', () => {
    const v = redactDeep({ [`k-${SECRET}`]: [`v ${SECRET}`, 12345678, true], n: 1 }, [SECRET, '12345678']);
    expect(v).toEqual({ [`k-${REDACTED}`]: [`v ${REDACTED}`, REDACTED, true], n: 1 });
  });
});

describe('every output path uses it', () => {
  it('logs: a secret in any field or message, in any spelling, never reaches a line', () => {
    const lines: string[] = [];
    const known = new KnownSecrets();
    known.add(TOKEN);
    const held = [SECRET];
    known.add(() => held);
    const logger = createLogger({
      level: 'debug',
      pretty: false,
      secrets: known,
      destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }),
    });
    logger.warn(
      { err: `request failed: ${TOKEN}`, detail: { nested: SECRET }, b64: Buffer.from(SECRET).toString('base64') },
      `echo ${SECRET}`,
    );
    logger.child({ deploymentId: 'd' }).error(`401: bad token Bearer ${TOKEN}`);
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      expect(() => JSON.parse(l)).not.toThrow();
      expectClean(l, TOKEN, SECRET);
    }
    // A value learnt later is redacted from then on.
    const later = `later-secret-${Date.now()}`;
    held.push(later);
    logger.info(`now ${later}`);
    expect(lines[2]).not.toContain(later);
  });

  it('reports: a failure message holding the token is redacted before it is cut to 4096 characters', () => {
    const offered: ReportContent[] = [];
    const outbox = { lastReported: () => undefined, offer: (_id: string, c: ReportContent) => offered.push(c) } as unknown as ReportOutbox;
    const reporter = new StatusReporter(outbox, () => [TOKEN, SECRET]);
    const message = `${'m'.repeat(4090)}${TOKEN}`;
    reporter.publish(
      [
        {
          deploymentId: 'd',
          derived: { status: 'failed', message, swarmServiceId: null, containerId: null, externalPort: null, desiredReplicas: 1 },
          logs: [`boot ${SECRET}`, `auth ${Buffer.from(SECRET).toString('base64')}`],
        } as never,
      ],
      [],
    );
    expect(offered[0]!.message!.length).toBeLessThanOrEqual(4096);
    expectClean(JSON.stringify(offered), TOKEN, SECRET);
  });

  it('panel and Docker error texts: redacted, then cut', () => {
    const panel = describeErrorBody({ error: { code: 'X', message: `${'p'.repeat(280)}${TOKEN}` } }, [new Secret(TOKEN)]);
    expectClean(panel.message!, TOKEN);
    const docker = toSwarmError(
      'creating service',
      { statusCode: 400, json: { message: `${'d'.repeat(490)}invalid ${Buffer.from(SECRET).toString('base64')}` } },
      [SECRET],
    );
    expectClean(docker.message, SECRET);
  });

  it('no other file in src/ carries its own redaction rule', () => {
    const own: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir)) {
        const p = join(dir, e);
        if (statSync(p).isDirectory()) {
          // The reference control plane is the panel's half, not the agent's output.
          if (e !== 'refcp') walk(p);
        } else if (p.endsWith('.ts') && p !== join('src', 'secret.ts') && readFileSync(p, 'utf8').includes("'[redacted]'")) own.push(p);
      }
    };
    walk('src');
    expect(own).toEqual([]);
  });
});
