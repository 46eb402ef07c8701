import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Secret } from '../../src/secret.js';

describe('Secret', () => {
  it('never prints its value through string, JSON or inspect', () => {
    const s = new Secret('hunter2-very-secret');
    const outputs = [String(s), `${s}`, JSON.stringify({ s }), inspect(s), inspect({ nested: { s } })];
    for (const o of outputs) expect(o).not.toContain('hunter2');
    expect(s.reveal()).toBe('hunter2-very-secret');
  });
});
