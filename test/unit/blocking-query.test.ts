import { describe, expect, it } from 'vitest';
import { batchedLoader, holdMs, parseWait } from '../../src/panel/blocking-query.js';
import type { DesiredSet } from '../../src/panel/desired-set.js';

const set = (id: string): DesiredSet => ({ body: id, etag: `"${id}"`, count: 0 });

describe('blocking query rules', () => {
  it('holds the asked wait, capped, plus a spread of at most 1/16', () => {
    expect(holdMs(300, 300, () => 0)).toBe(300_000);
    expect(holdMs(300, 300, () => 0.999999)).toBeLessThanOrEqual(318_750);
    expect(holdMs(900, 300, () => 0)).toBe(300_000);
    expect(holdMs(10, 300, () => 0.5)).toBe(10_313);
  });

  it('reads ?wait= as whole seconds', () => {
    expect(parseWait(null)).toBeNull();
    expect(parseWait('55')).toBe(55);
    for (const bad of ['', '-1', '1.5', 'soon', '1e3', '9999999']) expect(parseWait(bad)).toBe('invalid');
  });

  it('loads asked for in one turn go to the database together, in chunks of 500', async () => {
    const calls: string[][] = [];
    const load = batchedLoader(async (ids) => {
      calls.push(ids);
      return new Map(ids.map((id) => [id, set(id)]));
    });
    const ids = Array.from({ length: 1200 }, (_, i) => `w${i}`);
    const got = await Promise.all([...ids, 'w1'].map((id) => load(id)));
    expect(calls.map((c) => c.length)).toEqual([500, 500, 200]);
    expect(got[5]!.etag).toBe('"w5"');
    expect(got[1200]!.etag).toBe('"w1"');
    // A later turn is a new batch; a failed batch fails every call in it.
    const failing = batchedLoader(async () => {
      throw new Error('db down');
    });
    await expect(Promise.all([failing('a'), failing('b')])).rejects.toThrow('db down');
  });
});
