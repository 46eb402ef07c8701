import { execFileSync } from 'node:child_process';
import { chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/agent/logger.js';
import { StateStore } from '../../src/agent/state/state-store.js';
import { meterStateSchema, storedDesiredSchema, storedOutboxSchema, storedUsageOutboxSchema } from '../../src/agent/state/state-schemas.js';

/**
 * The state directory on a hostile or broken disk: files of the wrong shape, links and FIFOs in a
 * document's place, and a real full filesystem (a 64 KiB tmpfs; root only).
 */

const isRoot = process.getuid?.() === 0;

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: 'debug',
    pretty: false,
    destination: new Writable({ write: (c, _e, cb) => (lines.push(JSON.parse(String(c)) as Record<string, unknown>), cb()) }),
  });
  return { lines, logger };
}

const validDesired = { etag: '"v1"', body: { success: true, data: { deployments: [] } }, savedAt: 1 };

describe('StateStore: every file is checked by shape on load', () => {
  const cases: [string, string, Parameters<StateStore['read']>[1]][] = [
    ['desired.json: body of the wrong shape', JSON.stringify({ etag: null, body: { data: 'nope' }, savedAt: 1 }), storedDesiredSchema],
    ['desired.json: an ETag with CR/LF', JSON.stringify({ ...validDesired, etag: '"a"\r\nx-injected: 1' }), storedDesiredSchema],
    ['desired.json: an ETag above Latin-1', JSON.stringify({ ...validDesired, etag: '"\u0100\u4e2d"' }), storedDesiredSchema],
    ['outbox.json: pending is a string', JSON.stringify({ pending: 'abc', lastSent: {} }), storedOutboxSchema],
    [
      'outbox.json: an entry without content',
      JSON.stringify({ pending: [{ deploymentId: 'd', bootId: 'b', seq: 1, reportedAt: 'x' }], lastSent: {} }),
      storedOutboxSchema,
    ],
    ['outbox.json: lastSent is an array', JSON.stringify({ pending: [], lastSent: [1, 2] }), storedOutboxSchema],
    ['usage-outbox.json: pending is an object', JSON.stringify({ version: 1, closedThrough: null, pending: {} }), storedUsageOutboxSchema],
    [
      'usage-outbox.json: closedThrough is a string',
      JSON.stringify({ version: 1, closedThrough: 'yesterday', pending: [] }),
      storedUsageOutboxSchema,
    ],
    [
      'usage-meter.json: containers is an array',
      JSON.stringify({ version: 1, periodMs: 3600000, lastAt: null, historyStart: null, closedThrough: null, containers: [1], open: [] }),
      meterStateSchema,
    ],
    [
      'usage-meter.json: periodMs 0',
      JSON.stringify({ version: 1, periodMs: 0, lastAt: null, historyStart: null, closedThrough: null, containers: {}, open: [] }),
      meterStateSchema,
    ],
    ['any file: JSON null', 'null', storedOutboxSchema],
    ['any file: not JSON', '{"pending": [', storedOutboxSchema],
  ];

  it.each(cases)('%s: moved aside (kept), logged once, read as absent', async (_name, text, schema) => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-store-'));
    await writeFile(join(dir, 'f.json'), text, { mode: 0o600 });
    const { lines, logger } = capture();
    const store = new StateStore(dir, { logger });
    await expect(store.read('f.json', schema)).resolves.toBeUndefined();
    const entries = await readdir(dir);
    expect(entries).not.toContain('f.json');
    const aside = entries.filter((e) => e.startsWith('f.json.bad-'));
    expect(aside).toHaveLength(1);
    expect(await readFile(join(dir, aside[0]!), 'utf8')).toBe(text);
    const warned = lines.filter((l) => String(l.msg).includes('moved aside'));
    expect(warned).toHaveLength(1);
    expect(warned[0]!.file).toBe('f.json');
    expect(store.health().movedAside).toEqual([expect.objectContaining({ file: 'f.json', movedTo: aside[0] })]);
    // A value from the file never reaches the log: the reason names a path and a rule.
    expect(JSON.stringify(lines)).not.toContain('injected');
  });

  it('keeps a valid file as it is, and at most three moved-aside copies per file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-store-'));
    const store = new StateStore(dir);
    await writeFile(join(dir, 'desired.json'), JSON.stringify(validDesired));
    await expect(store.read('desired.json', storedDesiredSchema)).resolves.toEqual(validDesired);
    for (let i = 0; i < 5; i++) {
      await writeFile(join(dir, 'outbox.json'), '[]');
      await store.read('outbox.json', storedOutboxSchema);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect((await readdir(dir)).filter((e) => e.startsWith('outbox.json.bad-'))).toHaveLength(3);
  });
});

describe('StateStore: init', () => {
  it('removes temp files a crash left behind (on a full disk they hold the space), once, and nothing else', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-store-'));
    await writeFile(join(dir, '.outbox.json.0123456789ab.tmp'), 'x'.repeat(1000));
    await writeFile(join(dir, 'outbox.json.bad-2026'), 'kept');
    const store = new StateStore(dir);
    await store.init();
    expect((await readdir(dir)).sort()).toEqual(['outbox.json.bad-2026']);
    await writeFile(join(dir, '.desired.json.0123456789ab.tmp'), 'in flight');
    await store.init();
    expect(await readdir(dir)).toContain('.desired.json.0123456789ab.tmp');
  });
});

describe('StateStore: links are never followed', () => {
  it('a document replaced by a symbolic link is not read through it; the link (not its target) is moved aside', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-store-'));
    const outside = join(await mkdtemp(join(tmpdir(), 'skp-outside-')), 'target.json');
    await writeFile(outside, JSON.stringify(validDesired));
    await symlink(outside, join(dir, 'desired.json'));
    const store = new StateStore(dir);
    await expect(store.read('desired.json', storedDesiredSchema)).resolves.toBeUndefined();
    const aside = (await readdir(dir)).find((e) => e.startsWith('desired.json.bad-'))!;
    expect((await lstat(join(dir, aside))).isSymbolicLink()).toBe(true);
    expect(store.health().movedAside[0]!.reason).toBe('is a symbolic link');
    expect(await readFile(outside, 'utf8')).toBe(JSON.stringify(validDesired));
  });

  it("a FIFO in a document's place does not hang the load", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-store-'));
    execFileSync('mkfifo', [join(dir, 'outbox.json')]);
    const store = new StateStore(dir);
    await expect(store.read('outbox.json', storedOutboxSchema)).resolves.toBeUndefined();
    expect(store.health().movedAside[0]!.reason).toBe('is not a regular file');
  });

  it.skipIf(!isRoot)(
    "writing over a link replaces the link: the target keeps its content and owner, the new file takes the directory's owner (root only)",
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'skp-store-'));
      const outsideDir = await mkdtemp(join(tmpdir(), 'skp-outside-'));
      const target = join(outsideDir, 'someone-elses.json');
      await writeFile(target, 'theirs');
      await chown(target, 12345, 12345);
      await symlink(target, join(dir, 'outbox.json'));
      const store = new StateStore(dir);
      await expect(store.write('outbox.json', { pending: [], lastSent: {} })).resolves.toBe(true);
      const st = await lstat(join(dir, 'outbox.json'));
      expect(st.isFile()).toBe(true);
      // Before: stat() followed the link and the new file was chowned to the target's owner (12345).
      expect([st.uid, st.gid]).toEqual([0, 0]);
      expect(await readFile(target, 'utf8')).toBe('theirs');
      expect((await stat(target)).uid).toBe(12345);
    },
  );
});

describe.skipIf(!isRoot)('StateStore on a full disk (a real 64 KiB tmpfs; root only)', () => {
  let mounted: string | undefined;
  afterEach(async () => {
    if (mounted) execFileSync('umount', [mounted]);
    mounted = undefined;
  });

  it('a write that hits ENOSPC resolves false, is reported, and lands once space is back', async () => {
    const base = await mkdtemp(join(tmpdir(), 'skp-enospc-'));
    const dir = join(base, 'state');
    await mkdir(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', dir]);
    mounted = dir;
    const failures: string[] = [];
    const { lines, logger } = capture();
    const store = new StateStore(dir, { logger, onWriteFailure: (f) => failures.push(f), random: () => 0 });
    await store.init();
    // Fill the filesystem for real.
    await writeFile(join(dir, 'filler'), Buffer.alloc(256 * 1024)).catch((err: NodeJS.ErrnoException) => expect(err.code).toBe('ENOSPC'));
    const value = { etag: '"v2"', body: { success: true, data: { deployments: [] } }, savedAt: 2 };
    await expect(store.write('desired.json', value)).resolves.toBe(false);
    expect(store.health().failing).toEqual([expect.objectContaining({ file: 'desired.json', error: 'ENOSPC', failures: 1 })]);
    expect(failures).toEqual(['desired.json']);
    // A newer value replaces the pending one; still one error line per failure streak.
    await expect(store.write('desired.json', { ...value, savedAt: 3 })).resolves.toBe(false);
    expect(lines.filter((l) => l.msg === 'cannot write a state file; working from memory and retrying')).toHaveLength(1);
    // No temp file is left behind to hold the space.
    expect((await readdir(dir)).filter((e) => e.endsWith('.tmp'))).toEqual([]);
    // The retry set by the first failure (jitter 0: half of its 2 s ceiling) fails too, and sets the next (2 s).
    await waitUntil(() => store.health().writeFailuresTotal === 3, 5_000);
    expect(store.health().failing).toEqual([expect.objectContaining({ file: 'desired.json', failures: 3 })]);
    await rm(join(dir, 'filler'));
    // That one writes the newest value.
    await waitUntil(() => store.health().failing.length === 0, 10_000);
    expect(JSON.parse(await readFile(join(dir, 'desired.json'), 'utf8'))).toEqual({ ...value, savedAt: 3 });
    expect(store.health().writeFailuresTotal).toBe(3);
    expect(lines.some((l) => l.msg === 'state file written again after failures')).toBe(true);
    await store.stop();
  }, 20_000);
});

async function waitUntil(probe: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
