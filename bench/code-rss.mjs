// Where the agent's RSS over a bare Node.js comes from before it does anything: a fresh Node.js
// imports, one after the other, each runtime dependency the built agent imports, then the agent's
// own entry point, and reports the RSS growth of each step (after a GC).
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, spawnNodeAsUnit } from './lib.mjs';

function importedDependencies() {
  const deps = Object.keys(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).dependencies ?? {});
  const sources = readdirSync(join(ROOT, 'dist'), { recursive: true })
    .filter((f) => String(f).endsWith('.js'))
    .map((f) => readFileSync(join(ROOT, 'dist', String(f)), 'utf8'))
    .join('\n');
  return deps.filter((d) => new RegExp(`(from|import\\()\\s*['"]${d.replace(/[/.]/g, '\\$&')}(/[^'"]*)?['"]`).test(sources));
}

const CHILD = `
const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
const settle = () => { globalThis.gc(); return new Promise((r) => setTimeout(r, 200)); };
(async () => {
  await settle();
  const out = { base: rss(), steps: [] };
  let last = out.base;
  for (const m of JSON.parse(process.argv[1])) {
    await import(m);
    await settle();
    const now = rss();
    out.steps.push([m, now - last]);
    last = now;
  }
  out.total = last;
  process.stdout.write(JSON.stringify(out));
})();
`;

export function measureCodeRss() {
  const deps = importedDependencies();
  const order = [...deps, join(ROOT, 'dist', 'cli', 'main.js')];
  return new Promise((resolve, reject) => {
    // As the unit runs node (its flags and environment), so the figures add up to the agent's.
    const child = spawnNodeAsUnit(['--expose-gc', '-e', CHILD, JSON.stringify(order)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`code RSS probe failed (exit ${code}): ${err.slice(-500)}`));
      const r = JSON.parse(out);
      r.steps = r.steps.map(([m, mib]) => [m.startsWith(ROOT) ? 'the agent itself (dist/, after its dependencies)' : m, mib]);
      resolve(r);
    });
  });
}
