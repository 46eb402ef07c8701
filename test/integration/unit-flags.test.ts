import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unitNodeArgs } from '../../src/cli/unit-file.js';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { BIN, capturedOutput, runCli, waitFor } from '../helpers/cli.js';

/**
 * The unit runs node with --jitless (see systemd/skypanel-agent.service): no JIT, so no
 * WebAssembly, which fetch() needs on Node 20 and any WASM-using dependency needs everywhere. The
 * other tests run node with its default flags, where both work. This file loads every built module
 * `run` can reach, and runs the agent, under the unit's exact flags and environment (read from the
 * unit, as the bench does), so such a dependency fails here and not on a worker host.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const UNIT = readFileSync(join(ROOT, 'systemd/skypanel-agent.service'), 'utf8');
const FLAGS = unitNodeArgs(UNIT);

/** The unit's Environment= lines (NODE_OPTIONS, MALLOC_ARENA_MAX), systemd's quoting. */
function unitEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of UNIT.split('\n')) {
    const m = /^Environment=(.*)$/.exec(line.trim());
    for (const [, quoted, bare] of m ? m[1]!.matchAll(/"([^"]*)"|(\S+)/g) : []) {
      const a = quoted ?? bare ?? '';
      const eq = a.indexOf('=');
      if (eq > 0) env[a.slice(0, eq)] = a.slice(eq + 1);
    }
  }
  return env;
}

const IMPORT = /(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/**
 * Built modules `run` reaches: main.js's static imports and its `run` command's dynamic import,
 * then every import (static or dynamic) of those. main's other commands (dev, install...) are
 * loaded only by those commands, and `dev` (with the reference panel) runs without the unit's flags.
 */
function modulesRunReaches(): string[] {
  const main = join(ROOT, 'dist/cli/main.js');
  const seen = new Set<string>();
  const visit = (file: string, only?: (spec: string, dynamic: boolean) => boolean) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      if (!spec.startsWith('.')) continue; // packages: loaded by the modules that import them
      if (only && !only(spec, m[3] !== undefined)) continue;
      visit(resolve(dirname(file), spec));
    }
  };
  visit(main, (spec, dynamic) => !dynamic || spec === './run.js');
  return [...seen].sort();
}

function runNode(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 30_000,
): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      capturedOutput.push(out);
      done({ code, signal, out });
    });
  });
}

const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, ...unitEnvironment() };
  for (const k of Object.keys(env)) if (k.startsWith('SKYPANEL_AGENT_')) delete env[k];
  return { ...env, SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0', SKYPANEL_AGENT_METRICS_LISTEN: '127.0.0.1:0' };
};

/** Preloaded into the agent: writes what it loaded to $RECORD_MODULES_TO as it exits. */
const RECORD_MODULES = join(ROOT, 'test/helpers/record-modules.mjs');
interface LoadedModules {
  urls: string[];
  builtins: string[];
}

/**
 * Every module `run` loads stays in its RSS for the life of the daemon. Loading something it never
 * uses costs a worker host memory for nothing: the panel half and its PostgreSQL clients, the
 * reference panel, the other commands, pino-pretty (only for a terminal), or Node's bundled undici
 * (fetch and WebSocket, ~11 MiB on Node 24), which an ESM import of node:http pulls in through the
 * module's lazy `WebSocket` export (src/util/node-http.ts).
 */
function expectOnlyWhatRunNeeds(loaded: LoadedModules): void {
  const files = loaded.urls.filter((u) => u.startsWith('file://')).map((u) => fileURLToPath(u));
  // The recording works: it saw the agent's own modules and the dependencies it does use.
  expect(files).toContain(join(ROOT, 'dist/agent/agent.js'));
  expect(files.some((f) => f.includes('/node_modules/pino/'))).toBe(true);
  const unneeded = files.filter(
    (f) =>
      /\/node_modules\/(pg|pg-[^/]+|@electric-sql\/pglite|pino-pretty|dockerode)\//.test(f) ||
      /\/dist\/(panel|refcp)\//.test(f) ||
      /\/dist\/cli\/(dev|doctor|install|register|status|drain|system|panel|token-input)\.js$/.test(f),
  );
  expect(unneeded).toEqual([]);
  expect(loaded.builtins).toContain('NativeModule http');
  expect(loaded.builtins).not.toContain('NativeModule internal/deps/undici/undici');
}

type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
let cp: RefCp;
const tokens: string[] = [];

beforeAll(async () => {
  cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
});

afterAll(async () => {
  await cp.close();
  const all = capturedOutput.join('\n');
  for (const t of tokens) expect(all).not.toContain(t);
});

describe("the agent under the unit's node flags", () => {
  it('the flags are the ones that bite: no JIT, so no WebAssembly', async () => {
    expect(FLAGS).toContain('--jitless');
    const probe = await runNode([...FLAGS, '-e', 'console.log(typeof WebAssembly)'], baseEnv());
    expect(probe.out.trim().split('\n').at(-1)).toBe('undefined');
  });

  it('loads every built module `run` can reach', async () => {
    const files = modulesRunReaches();
    // The walk must find the agent, not just main: the loops, the status API, the swarm adapter.
    for (const f of [
      'cli/run.js',
      'agent/agent.js',
      'agent/status/status-server.js',
      'agent/status/metrics-server.js',
      'swarm/swarm-port.js',
      'agent/usage/usage-loop.js',
      'controlplane/control-plane-client.js',
    ]) {
      expect(files, f).toContain(join(ROOT, 'dist', f));
    }
    expect(files).not.toContain(join(ROOT, 'dist/cli/dev.js'));
    const script = `for (const f of JSON.parse(process.argv[1])) await import(f); console.log('loaded', JSON.parse(process.argv[1]).length);`;
    const r = await runNode([...FLAGS, '--input-type=module', '-e', script, JSON.stringify(files.map((f) => `file://${f}`))], baseEnv());
    expect(r.out, r.out).toContain(`loaded ${files.length}`);
    expect(r.code).toBe(0);
  });

  it('runs: registers, heartbeats, polls deployments, serves status and metrics, and stops on SIGTERM', async () => {
    const workerId = randomUUID();
    const token = cp.mintToken(workerId);
    tokens.push(token);
    const dir = await mkdtemp(join(tmpdir(), 'skp-unitflags-'));
    const config = join(dir, 'config.json');
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, token, { mode: 0o600 });
    expect(
      (await runCli(['register', '--control-plane', cp.url, '--token-file', tokenFile, '--config', config, '--heartbeat-interval', '1']))
        .code,
    ).toBe(0);
    const modulesFile = join(dir, 'modules.json');
    const env = { ...baseEnv(), SKYPANEL_AGENT_STATE_DIR: join(dir, 'state'), RECORD_MODULES_TO: modulesFile };
    const child = spawn(process.execPath, [...FLAGS, '--import', RECORD_MODULES, BIN, 'run', '--config', config], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const exited = new Promise<{ code: number | null; signal: string | null }>((r) =>
      child.on('close', (code, signal) => r({ code, signal })),
    );
    try {
      await waitFor(
        () =>
          (cp.workers.get(workerId)?.heartbeats ?? 0) >= 2 && cp.requests.some((r) => r.path === `/api/workers/${workerId}/deployments`),
        20_000,
        () => out,
      );
      const port = (msg: string) => {
        const line = out.split('\n').find((l) => l.includes(`"msg":"${msg}"`));
        return line ? (JSON.parse(line) as { port: number }).port : NaN;
      };
      const metricsPort = port('metrics listening');
      const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      expect(await metrics.text()).toContain('skypanel_agent_heartbeats_total{result="accepted"}');
      const statusPort = port('status api listening');
      const status = await fetch(`http://127.0.0.1:${statusPort}/v1/status`, { headers: { authorization: `Bearer ${token}` } });
      expect(status.status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    const { code } = await exited;
    capturedOutput.push(out);
    expect(out).not.toMatch(/WebAssembly|ReferenceError|TypeError/);
    expect(code, out).toBe(0);
    expectOnlyWhatRunNeeds(JSON.parse(await readFile(modulesFile, 'utf8')) as LoadedModules);
  }, 40_000);
});
