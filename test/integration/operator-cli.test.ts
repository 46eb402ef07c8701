import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, open, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentProcess, BIN, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { useReferencePanel } from '../helpers/reference-panel.js';

/** What an operator meets first: exit codes, flags that parse, where `status` looks, SIGHUP, journald. */
const panel = useReferencePanel({ tmpPrefix: 'skp-operator-' });
const register = (args: string[] = []) => panel.register({ args });

describe('exit codes', () => {
  it('a bad flag value is a usage error (64) with a clear message: dev --port abc', async () => {
    const res = await runCli(['dev', '--port', 'abc']);
    expect(res.code).toBe(64);
    expect(res.stderr).toMatch(/--port must be a port number from 0 to 65535/);
    expect(res.stderr).not.toMatch(/unexpected error/);
  });

  it("commander's own errors exit 64: an unknown option, a missing value, an unknown command", async () => {
    for (const args of [['run', '--no-such-flag'], ['status', '--config'], ['no-such-command'], ['run', '--log-level', 'loud']]) {
      const res = await runCli(args);
      expect(res.code, `${args.join(' ')}: ${res.stderr}`).toBe(64);
      expect(res.stderr).toMatch(/error/);
    }
  });

  it('--help and --version exit 0', async () => {
    const help = await runCli(['run', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--poll-interval/);
    expect(help.stdout).toMatch(/SIGHUP/);
    expect(help.stdout).not.toMatch(/later/);
    expect((await runCli(['--version'])).code).toBe(0);
  });

  it('a configuration error exits 78 (EX_CONFIG), the code the unit does not restart on', async () => {
    const res = await runCli(['run', '--config', join(panel.dir, 'absent.json')]);
    expect(res.code).toBe(78);
    const unit = await readFile(new URL('../../systemd/skypanel-agent.service', import.meta.url), 'utf8');
    expect(unit).toMatch(/^RestartPreventExitStatus=78$/m);
  });
});

describe('register', () => {
  it('writes --state-dir and --status-listen into the config, and warns that a loopback address only works from this host', async () => {
    const stateDir = join(panel.dir, 'state-from-register');
    const { config, res } = await register(['--state-dir', stateDir, '--status-listen', '127.0.0.1:9799']);
    const written = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
    expect(written).toMatchObject({ stateDir, statusListen: '127.0.0.1:9799' });
    // The reference control plane is on 127.0.0.1, so the address toward it is loopback.
    expect(res.stderr).toMatch(/warning: the reported address 127\.0\.0\.1 is a loopback address: .*--ip-address/);
  });

  it('refuses a bad --status-listen before registering (64)', async () => {
    const before = panel.cp.workers.size;
    const token = panel.cp.mintToken(randomUUID());
    panel.mustNotLeak(token);
    const res = await runCli([
      'register',
      '--control-plane',
      panel.cp.url,
      '--token',
      token,
      '--config',
      join(panel.dir, 'never.json'),
      '--status-listen',
      'nohost',
    ]);
    expect(res.code).toBe(64);
    expect(res.stderr).toMatch(/--status-listen must be host:port/);
    expect(panel.cp.workers.size).toBe(before);
  });
});

describe('run --status-listen is found by status and doctor', () => {
  it('status and doctor read the address the agent really listens on from its state dir', async () => {
    const { config, workerId } = await register();
    const stateDir = await mkdtemp(join(tmpdir(), 'skp-operator-state-'));
    // The config says 0.0.0.0:9740 (the default); the flag moves the agent elsewhere, on any free port.
    const agent = new AgentProcess(['run', '--config', config, '--status-listen', '127.0.0.1:0'], {
      SKYPANEL_AGENT_STATE_DIR: stateDir,
      SKYPANEL_AGENT_STATUS_LISTEN: '',
    });
    panel.adopt(agent);
    const line = await agent.waitForLog((l) => l.msg === 'status api listening');
    const remembered = await waitFor(() =>
      readFile(join(stateDir, 'status-api.json'), 'utf8').then(
        (t) => JSON.parse(t) as { listen: string; port: number },
        () => undefined,
      ),
    );
    expect(remembered).toEqual({ listen: '127.0.0.1:0', port: line.port, tls: false });

    const env = { SKYPANEL_AGENT_STATE_DIR: stateDir, SKYPANEL_AGENT_STATUS_LISTEN: '' };
    const status = await runCli(['status', '--config', config, '--json'], { env });
    expect([0, 1], status.stderr).toContain(status.code);
    expect((JSON.parse(status.stdout) as { status: { workerId: string } }).status.workerId).toBe(workerId);

    const doctor = await runCli(['doctor', '--config', config, '--json'], { env, timeoutMs: 40_000 });
    const port = (JSON.parse(doctor.stdout) as { checks: { id: string; status: string; message: string }[] }).checks.find(
      (c) => c.id === 'status-port',
    )!;
    expect(port).toMatchObject({ status: 'pass', message: `127.0.0.1:${line.port} is held by the running skypanel-agent (healthz ok)` });
  });
});

describe('dev --status-listen', () => {
  it('puts the agent where asked, and `status --config` (the line dev prints) finds it', async () => {
    const config = join(await mkdtemp(join(tmpdir(), 'skp-dev-listen-')), 'config.json');
    // No state dir from the environment: dev's own, beside its config, written into that config.
    const dev = new AgentProcess(
      ['dev', '--port', '0', '--status-listen', '127.0.0.1:0', '--config', config, '--docker-socket', join(panel.dir, 'none.sock')],
      { SKYPANEL_AGENT_STATE_DIR: '', SKYPANEL_AGENT_STATUS_LISTEN: '' },
    );
    panel.adopt(dev);
    const line = await dev.waitForLog((l) => l.msg === 'status api listening', 20_000);
    expect(line.address).toBe('127.0.0.1');
    expect(JSON.parse(await readFile(config, 'utf8'))).toMatchObject({
      statusListen: '127.0.0.1:0',
      stateDir: join(config, '..', 'state'),
    });
    const status = await waitFor(async () => {
      const r = await runCli(['status', '--config', config, '--json']);
      return r.code === 0 || r.code === 1 ? r : undefined;
    }, 15_000);
    expect((JSON.parse(status.stdout) as { status: { workerId: string } }).status.workerId).toMatch(/^[0-9a-f-]{36}$/);
  }, 40_000);
});

describe('SIGHUP', () => {
  it('re-reads the config and restarts the agent in-process; a config that does not load changes nothing', async () => {
    const { config, workerId } = await register();
    const agent = new AgentProcess(['run', '--config', config]);
    panel.adopt(agent);
    await agent.waitForLog((l) => l.msg === 'agent started');
    const pid = agent.child.pid;

    const written = JSON.parse(await readFile(config, 'utf8')) as Record<string, unknown>;
    await writeFile(config, JSON.stringify({ ...written, logLevel: 'debug' }), { mode: 0o600 });
    agent.child.kill('SIGHUP');
    await agent.waitForLog((l) => l.msg === 'config reloaded');
    // The new log level is in force: debug lines appear (none did before).
    await agent.waitForLog((l) => l.level === 'debug');
    expect(agent.logs().filter((l) => l.msg === 'agent started')).toHaveLength(2);

    await writeFile(config, JSON.stringify({ ...written, heartbeatIntervalSec: 9999 }), { mode: 0o600 });
    agent.child.kill('SIGHUP');
    const refused = await agent.waitForLog((l) => /config does not load/.test(String(l.msg)));
    expect(refused).toMatchObject({ level: 'error', err: expect.stringMatching(/heartbeatIntervalSec/) });
    // Still the same process, still beating.
    const beats = () => panel.cp.requests.filter((r) => r.path === `/api/workers/${workerId}/heartbeat`).length;
    const before = beats();
    await waitFor(() => beats() >= before + 2, 10_000);
    expect(agent.child.pid).toBe(pid);
    expect(agent.child.exitCode).toBeNull();
    expect((await agent.stop('SIGTERM')).code).toBe(0);
  }, 40_000);
});

describe('logs', () => {
  it('levels are words; under journald (JOURNAL_STREAM is stdout) each line starts with its syslog priority', async () => {
    const { config } = await register();
    const logFile = join(panel.dir, `${randomUUID()}.log`);
    const fh = await open(logFile, 'w');
    const st = await stat(logFile);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:0',
      SKYPANEL_AGENT_STATE_DIR: await mkdtemp(join(tmpdir(), 'skp-j-')),
    };
    env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
    // No Docker here: the agent warns about it, so a warning and info lines both appear.
    const child = spawn(process.execPath, [BIN, 'run', '--config', config, '--docker-socket', join(panel.dir, 'no-docker.sock')], {
      env,
      stdio: ['ignore', fh.fd, 'pipe'],
    });
    try {
      const text = await waitFor(async () => {
        const t = await readFile(logFile, 'utf8');
        return /"msg":"agent started"/.test(t) && /"level":"warn"/.test(t) ? t : undefined;
      }, 15_000);
      capturedOutput.push(text);
      const lines = text.split('\n').filter(Boolean);
      for (const l of lines) expect(l).toMatch(/^<[2-7]>\{"level":"(fatal|error|warn|info|debug|trace)"/);
      expect(lines.find((l) => l.includes('"msg":"agent started"'))).toMatch(/^<6>\{"level":"info"/);
      expect(lines.find((l) => l.includes('"level":"warn"'))).toMatch(/^<4>/);
    } finally {
      child.kill('SIGKILL');
      await fh.close();
    }
  });
});
