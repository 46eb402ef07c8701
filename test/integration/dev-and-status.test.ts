import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker } from '../helpers/docker.js';

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

  it('with a deployment, brings a service up that answers at its public URL, and usage records arrive', async () => {
    const ready = await ensureDocker();
    if (!ready.ok) return;
    const dir = await mkdtemp(join(tmpdir(), 'skp-dev-hello-'));
    const file = join(dir, 'hello.json');
    const hello = JSON.parse(await readFile(new URL('../../examples/hello.json', import.meta.url), 'utf8')) as { deployments: Record<string, unknown>[] };
    // A port of its own, so a developer's `dev` on 18080 cannot collide with the test.
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const d = { ...hello.deployments[0]!, id: randomUUID(), serviceId: randomUUID(), externalPort: port };
    await writeFile(file, JSON.stringify({ deployments: [d] }));
    const dev = new AgentProcess(['dev', '--port', '0', '--heartbeat-interval', '2', '--deployments', file, '--usage-period', '10', '--config', join(dir, 'config.json')], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
    });
    try {
      const url = await waitFor(() => /reference control plane listening on (\S+)/.exec(dev.output)?.[1], 15_000, () => dev.output);
      const admin = await waitFor(() => /Authorization: Bearer ([0-9a-f]{64})/.exec(dev.output)?.[1], 15_000, () => dev.output);
      const body = await waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${port}/`).catch(() => undefined);
        return r?.ok ? r.text() : undefined;
      }, 60_000, () => dev.output.slice(-2000));
      expect(body).toContain('hello from skypanel-agent');
      const usage = await waitFor(async () => {
        const r = await fetch(`${url}/admin/workers`, { headers: { authorization: `Bearer ${admin}` } });
        const j = (await r.json()) as { data?: { workers?: { usage?: { records: number } }[] } } & { workers?: { usage?: { records: number } }[] };
        const workers = j.data?.workers ?? j.workers ?? (Array.isArray(j.data) ? (j.data as { usage?: { records: number } }[]) : []);
        return workers.some((w) => (w.usage?.records ?? 0) > 0) || undefined;
      }, 60_000, () => dev.output.slice(-2000));
      expect(usage).toBe(true);
    } finally {
      await dev.stop('SIGINT');
      const docker = dockerode();
      const list = (await docker.listServices({ filters: JSON.stringify({ label: [`skypanel.service.id=${String(d.serviceId)}`] }) })) as { ID: string }[];
      for (const s of list) await docker.getService(s.ID).remove().catch(() => {});
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
