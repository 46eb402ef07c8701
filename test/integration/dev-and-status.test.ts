import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';

describe('skypanel-agent dev (the README\'s first command)', () => {
  it('starts the reference control plane, registers, heartbeats, serves status, and stops on SIGINT', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-dev-'));
    const config = join(dir, 'config.json');
    const dev = new AgentProcess(['dev', '--port', '0', '--heartbeat-interval', '1', '--config', config]);
    try {
      await waitFor(() => /reference control plane listening on http:\/\/127\.0\.0\.1:\d+/.test(dev.output), 15_000, () => dev.output);
      await waitFor(() => /agent running as worker [0-9a-f-]{36}/.test(dev.output), 15_000, () => dev.output);
      await dev.waitForLog((l) => l.msg === 'first heartbeat accepted');
      const started = await dev.waitForLog((l) => l.msg === 'agent started');
      const token = (JSON.parse(await readFile(config, 'utf8')) as { token: string }).token;
      expect(dev.output).not.toContain(token);

      // `status` reads the token from the config and asks the running agent.
      const url = `http://${String(started.statusApi)}`;
      const status = await runCli(['status', '--config', config, '--url', url]);
      expect(status.stdout + status.stderr).toMatch(/worker/i);
      expect([0, 1]).toContain(status.code);
      const json = await runCli(['status', '--config', config, '--url', url, '--json']);
      const body = JSON.parse(json.stdout) as { status: { workerId: string; lastHeartbeat: { outcome: string } } };
      expect(body.status.workerId).toMatch(/^[0-9a-f-]{36}$/);
      expect(body.status.lastHeartbeat.outcome).toBe('accepted');
      expect(json.stdout + json.stderr + status.stdout + status.stderr).not.toContain(token);
    } finally {
      const { code, ms } = await dev.stop('SIGINT');
      expect(code).toBe(0);
      expect(ms).toBeLessThan(5_000);
    }
  });

  it('status exits 2 with a reason when no agent is listening', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-status-'));
    const config = join(dir, 'config.json');
    const { writeConfigFile } = await import('../../src/agent/config.js');
    await writeConfigFile(config, { controlPlaneUrl: 'http://127.0.0.1:9', token: 'x'.repeat(40), workerId: 'w', statusListen: '127.0.0.1:9' });
    // The test harness points every agent at 127.0.0.1:0; here the config's address must win.
    const res = await runCli(['status', '--config', config], { env: { SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:9' } });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/cannot reach the agent at http:\/\/127\.0\.0\.1:9/);
  });
});
