import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { AgentProcess, capturedOutput, runCli, type CliResult } from './cli.js';

export type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;

export interface RegisteredWorker {
  token: string;
  tokenFile: string;
  config: string;
  workerId: string;
  /** The `register` command's own result (exit code 0, checked). */
  res: CliResult;
}

export interface RegisterOptions {
  /** Register with another reference panel (e.g. a stock one) instead of the fixture's. */
  on?: RefCp;
  /** Mint the token for this worker id (default: a fresh one). */
  workerId?: string;
  /** `--heartbeat-interval` in seconds (default 1, so tests see beats quickly). */
  interval?: number;
  /** More `register` flags. */
  args?: string[];
  /** Keys merged into the written config file afterwards (what no flag sets). */
  configExtra?: Record<string, unknown>;
}

export interface ReferencePanelFixture {
  /** The running reference control plane (set in beforeAll). */
  readonly cp: RefCp;
  /** A fresh temporary directory for configs, token files and state (set in beforeAll). */
  readonly dir: string;
  /** Mints a token, writes it to a 0600 file, runs `register --token-file`, returns where things are. */
  register(opts?: RegisterOptions): Promise<RegisteredWorker>;
  /** Starts `run --config <config>` with the fixture's default environment; stopped after each test. */
  startAgent(config: string, env?: NodeJS.ProcessEnv): AgentProcess;
  /** An agent started some other way, stopped after each test like the fixture's own. */
  adopt(agent: AgentProcess): AgentProcess;
  /** A secret the final output search must not find (minted tokens are added by `register`). */
  mustNotLeak(value: string): void;
}

/**
 * The preamble every test file of the built agent against the reference control plane needs: one
 * panel per file, a temp directory, agents killed after each test (and the panel's fault cleared),
 * and at the end a search of everything the agents and commands printed (plus the requests the
 * panel received) for every token minted here: no token may reach any output.
 */
export function useReferencePanel(opts: { tmpPrefix: string; agentEnv?: () => NodeJS.ProcessEnv }): ReferencePanelFixture {
  let cp: RefCp | undefined;
  let dir: string | undefined;
  const agents: AgentProcess[] = [];
  const secrets: string[] = [];

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    dir = await mkdtemp(join(tmpdir(), opts.tmpPrefix));
  });

  afterEach(async () => {
    cp?.setFault(null);
    await Promise.all(agents.splice(0).map((a) => a.stop('SIGKILL')));
  });

  afterAll(async () => {
    await cp?.close();
    const all = capturedOutput.join('\n') + JSON.stringify(cp?.requests ?? []);
    for (const s of secrets) expect(all).not.toContain(s);
  });

  const fixture: ReferencePanelFixture = {
    get cp() {
      if (cp === undefined) throw new Error('the reference panel starts in beforeAll');
      return cp;
    },
    get dir() {
      if (dir === undefined) throw new Error('the temp directory is made in beforeAll');
      return dir;
    },
    async register(r = {}) {
      const cp = r.on ?? fixture.cp;
      const token = cp.mintToken(r.workerId ?? randomUUID());
      secrets.push(token);
      const config = join(fixture.dir, `${randomUUID()}.json`);
      const tokenFile = join(fixture.dir, `${randomUUID()}.token`);
      await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
      const res = await runCli([
        'register',
        '--control-plane',
        cp.url,
        '--token-file',
        tokenFile,
        '--config',
        config,
        '--heartbeat-interval',
        String(r.interval ?? 1),
        ...(r.args ?? []),
      ]);
      expect(res.code, res.stderr).toBe(0);
      const written = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown> & { workerId: string };
      if (r.configExtra) await writeFile(config, JSON.stringify({ ...written, ...r.configExtra }), { mode: 0o600 });
      return { token, tokenFile, config, workerId: written.workerId, res };
    },
    startAgent(config, env = {}) {
      const agent = new AgentProcess(['run', '--config', config], { ...opts.agentEnv?.(), ...env });
      agents.push(agent);
      return agent;
    },
    adopt(agent) {
      agents.push(agent);
      return agent;
    },
    mustNotLeak(value) {
      secrets.push(value);
    },
  };
  return fixture;
}
