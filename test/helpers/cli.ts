import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/skypanel-agent', import.meta.url));

/** Everything every spawned CLI printed in this test file, so tests can search it for secrets. */
export const capturedOutput: string[] = [];

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SKYPANEL_AGENT_')) delete env[k];
  // Many agents run side by side in tests: each takes a free loopback port for its status API.
  env.SKYPANEL_AGENT_STATUS_LISTEN = '127.0.0.1:0';
  env.SKYPANEL_AGENT_METRICS_LISTEN = '127.0.0.1:0';
  return env;
};

/** Run the built CLI to completion, bounded in time. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...baseEnv(), ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`skypanel-agent ${args[0]} did not finish in ${opts.timeoutMs ?? 20_000} ms\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      capturedOutput.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** A long-running `skypanel-agent run` whose output can be awaited line by line. */
export class AgentProcess {
  readonly child: ChildProcess;
  output = '';
  #exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  readonly stateDir: string;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    // Each agent gets its own state directory unless the test shares one on purpose (restarts).
    this.stateDir = env.SKYPANEL_AGENT_STATE_DIR ?? mkdtempSync(join(tmpdir(), 'skp-state-'));
    this.child = spawn(process.execPath, [BIN, ...args], {
      env: { ...baseEnv(), SKYPANEL_AGENT_STATE_DIR: this.stateDir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const onData = (d: Buffer) => {
      this.output += d.toString();
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.#exit = new Promise((resolve) =>
      this.child.on('close', (code, signal) => {
        capturedOutput.push(this.output);
        resolve({ code, signal });
      }),
    );
  }

  /** JSON log lines printed so far. */
  logs(): Record<string, unknown>[] {
    return this.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  }

  async waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    return waitFor(
      () => this.logs().find(predicate),
      timeoutMs,
      () => `log line not seen; output so far:\n${this.output}`,
    );
  }

  /** Send a signal and wait for exit; resolves with the exit code and how long it took. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<{ code: number | null; ms: number }> {
    const started = Date.now();
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const { code } = await this.#exit;
    clearTimeout(timer);
    return { code, ms: Date.now() - started };
  }
}

/** Poll until `probe` returns a value (not undefined/false), bounded in time. */
export async function waitFor<T>(
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 15_000,
  describe: () => string = () => 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
