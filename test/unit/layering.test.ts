import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/*
 * The agent (src/agent) and the Docker adapters (src/swarm) meet only through src/ports.ts: the
 * agent depends on the interfaces, the adapters implement them, src/cli wires one to the other.
 * An import across that line makes the two layers need each other again, so this test reads every
 * import (static, dynamic and `export ... from`) under both folders and names each one that crosses.
 */

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Every relative module a file names, resolved to a path under src (without extension). */
export function importsOf(file: string, text: string): string[] {
  const specs = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
  return specs.map((s) => relative(SRC, resolve(dirname(file), s)).replace(/\.js$/, ''));
}

function crossings(fromLayer: string, toLayer: string): string[] {
  return tsFiles(join(SRC, fromLayer)).flatMap((file) =>
    importsOf(file, readFileSync(file, 'utf8'))
      .filter((target) => target === toLayer || target.startsWith(`${toLayer}/`))
      .map((target) => `${relative(SRC, file)} -> ${target}`),
  );
}

describe('layering', () => {
  it('src/swarm imports nothing from src/agent', () => {
    expect(crossings('swarm', 'agent')).toEqual([]);
  });

  it('src/agent imports nothing from src/swarm (the ports in src/ports.ts are the meeting point)', () => {
    expect(crossings('agent', 'swarm')).toEqual([]);
  });

  // The reference control plane is a test harness (tests, bench, soak): production code never
  // needs it. What it shares with the panel half (SkyPanelV2's JWT, request validation, Express
  // body rules) lives in src/skypanel, which both import.
  it('nothing outside src/refcp imports it', () => {
    const outside = readdirSync(SRC, { withFileTypes: true })
      .filter((e) => e.isDirectory() && e.name !== 'refcp')
      .flatMap((e) => crossings(e.name, 'refcp'));
    expect(outside).toEqual([]);
  });

  it('src/skypanel imports from no other folder of src', () => {
    const bad = tsFiles(join(SRC, 'skypanel')).flatMap((file) =>
      importsOf(file, readFileSync(file, 'utf8'))
        .filter((t) => !t.startsWith('skypanel/'))
        .map((t) => `${relative(SRC, file)} -> ${t}`),
    );
    expect(bad).toEqual([]);
  });

  it('src/ports.ts imports from neither layer', () => {
    const file = join(SRC, 'ports.ts');
    const bad = importsOf(file, readFileSync(file, 'utf8')).filter((t) => /^(agent|swarm)(\/|$)/.test(t));
    expect(bad).toEqual([]);
  });

  it('the scanner sees static, type-only, re-export and dynamic imports', () => {
    const file = join(SRC, 'agent', 'x.ts');
    const text = [
      "import { a } from '../swarm/a.js';",
      "import type { B } from '../swarm/b.js';",
      "export { c } from '../swarm/c.js';",
      "const d = await import('../swarm/d.js');",
      "import { e } from './e.js';",
    ].join('\n');
    expect(importsOf(file, text)).toEqual(['swarm/a', 'swarm/b', 'swarm/c', 'swarm/d', 'agent/e']);
  });
});
