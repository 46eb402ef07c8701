import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../../src/agent/config-schema.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README stays in step with the config schema', () => {
  it.each(CONFIG_KEYS.map((k) => [k.key, k]))('documents %s with its environment variable and default', (_key, info) => {
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${info.key}\``));
    expect(row, `README configuration table has no row for ${info.key}`).toBeDefined();
    expect(row).toContain(info.env);
    if (info.default !== undefined) expect(row).toContain(info.default);
  });
});
