import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker } from '../helpers/docker.js';
import { startPostgres } from '../helpers/postgres.js';

/** The hello example at a port of its own, so a developer's `dev` on 18080 cannot collide with the test. */
async function helloFile(dir: string): Promise<{ file: string; port: number; slug: string }> {
  const hello = JSON.parse(await readFile(new URL('../../examples/hello.json', import.meta.url), 'utf8')) as {
    deployments: Record<string, unknown>[];
  };
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const slug = `hello-${randomUUID().slice(0, 8)}`;
  const file = join(dir, 'hello.json');
  await writeFile(file, JSON.stringify({ deployments: [{ ...hello.deployments[0]!, slug, externalPort: port }] }));
  return { file, port, slug };
}

async function answers(port: number): Promise<string | undefined> {
  const r = await fetch(`http://127.0.0.1:${port}/`).catch(() => undefined);
  return r?.ok ? r.text() : undefined;
}

/** The Swarm services of the worker `dev` registered (its id is in the config dev wrote). */
async function servicesOfWorker(config: string): Promise<{ ID: string }[]> {
  const { workerId } = JSON.parse(await readFile(config, 'utf8')) as { workerId: string };
  return (await dockerode().listServices({ filters: JSON.stringify({ label: [`skypanel.worker.id=${workerId}`] }) })) as { ID: string }[];
}

describe("skypanel-agent dev (the README's first command)", () => {
  it('starts the panel on an embedded PostgreSQL, registers, heartbeats, serves status, and stops on SIGINT', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-dev-'));
    const config = join(dir, 'config.json');
    const dev = new AgentProcess(['dev', '--port', '0', '--heartbeat-interval', '1', '--no-seed', '--config', config]);
    try {
      await waitFor(
        () => /panel listening on http:\/\/127\.0\.0\.1:\d+ \(database: embedded PostgreSQL/.test(dev.output),
        60_000,
        () => dev.output,
      );
      await waitFor(
        () => /agent running as worker [0-9a-f-]{36}/.test(dev.output),
        15_000,
        () => dev.output,
      );
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
      expect(ms).toBeLessThan(10_000);
    }
  });

  it('turns a row into a running service and back into a running row on the embedded database, and removes it on SIGINT', async () => {
    const ready = await ensureDocker();
    if (!ready.ok) return;
    const dir = await mkdtemp(join(tmpdir(), 'skp-dev-hello-'));
    const { file, port, slug } = await helloFile(dir);
    const config = join(dir, 'config.json');
    const dev = new AgentProcess(['dev', '--port', '0', '--heartbeat-interval', '2', '--deployments', file, '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
    });
    try {
      await waitFor(
        () => new RegExp(`row: service ${slug} \\(`).test(dev.output),
        60_000,
        () => dev.output,
      );
      const body = await waitFor(
        () => answers(port),
        60_000,
        () => dev.output.slice(-2000),
      );
      expect(body).toContain('hello from skypanel-agent');
      // The row went back to `running` with the URL the agent reported, as dev prints it.
      await waitFor(
        () => new RegExp(`\\(${slug}\\) status running at http://[^ ]+:${port}`).test(dev.output),
        30_000,
        () => dev.output.slice(-2000),
      );
    } finally {
      const { code } = await dev.stop('SIGINT');
      expect(code).toBe(0);
    }
    // Its rows died with the in-memory database, so dev took the service with it.
    expect(dev.output).toMatch(/removed Swarm service/);
    expect(await servicesOfWorker(config)).toEqual([]);
  });

  it('on a real PostgreSQL (--database-url): the deployment row turns running with its URL and deployed_at, and billing rows arrive', async () => {
    const ready = await ensureDocker();
    if (!ready.ok) return;
    const pgsql = await startPostgres();
    const dir = await mkdtemp(join(tmpdir(), 'skp-dev-pg-'));
    const { file, port, slug } = await helloFile(dir);
    const config = join(dir, 'config.json');
    const dev = new AgentProcess(
      [
        'dev',
        '--port',
        '0',
        '--heartbeat-interval',
        '2',
        '--database-url',
        pgsql.url,
        '--deployments',
        file,
        '--usage-period',
        '10',
        '--config',
        config,
      ],
      {
        SKYPANEL_AGENT_POLL_INTERVAL: '1',
      },
    );
    try {
      await waitFor(
        () => /panel listening on .*database: PostgreSQL at 127\.0\.0\.1/.test(dev.output),
        60_000,
        () => dev.output,
      );
      const row = await waitFor(
        async () => {
          const { rows } = await pgsql.pool.query<{
            status: string;
            public_url: string | null;
            deployed_at: Date | null;
            service_status: string;
          }>(
            `SELECT d.status, d.public_url, d.deployed_at, s.status AS service_status
             FROM container_deployments d JOIN container_services s ON s.current_deployment_id = d.id WHERE s.slug = $1`,
            [slug],
          );
          return rows[0]?.status === 'running' ? rows[0] : undefined;
        },
        60_000,
        () => dev.output.slice(-2000),
      );
      expect(row.public_url).toMatch(new RegExp(`:${port}$`));
      expect(row.deployed_at).toBeInstanceOf(Date);
      expect(row.service_status).toBe('running');
      expect(await answers(port)).toContain('hello from skypanel-agent');
      const cycles = await waitFor(
        async () => {
          const { rows } = await pgsql.pool.query<{ n: string }>(
            `SELECT count(*) AS n FROM container_billing_cycles b JOIN container_services s ON s.id = b.service_id WHERE s.slug = $1 AND b.status = 'pending'`,
            [slug],
          );
          return Number(rows[0]!.n) > 0 ? Number(rows[0]!.n) : undefined;
        },
        60_000,
        () => dev.output.slice(-2000),
      );
      expect(cycles).toBeGreaterThan(0);
    } finally {
      await dev.stop('SIGINT');
      // A real database keeps its rows, so dev leaves their service running: clean up here.
      // (found by the worker's id: the agent labels services with ids, not slugs).
      for (const s of await servicesOfWorker(config).catch(() => []))
        await dockerode()
          .getService(s.ID)
          .remove()
          .catch(() => {});
      expect(await servicesOfWorker(config)).toEqual([]);
      await pgsql.stop();
    }
  });

  it('refuses a deployments file naming a field no SkyPanelV2 column holds', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-dev-bad-'));
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ deployments: [{ slug: 'x', imageTag: 'busybox', command: ['sh'] }] }));
    const res = await runCli(['dev', '--port', '0', '--deployments', file, '--config', join(dir, 'config.json')]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/deployments\[0\]\.command: no SkyPanelV2 column holds it/);
  });

  it('status exits 2 with a reason when no agent is listening', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-status-'));
    const config = join(dir, 'config.json');
    const { writeConfigFile } = await import('../../src/agent/config.js');
    await writeConfigFile(config, {
      controlPlaneUrl: 'http://127.0.0.1:9',
      token: 'x'.repeat(40),
      workerId: 'w',
      statusListen: '127.0.0.1:9',
    });
    // The test harness points every agent at 127.0.0.1:0; here the config's address must win.
    const res = await runCli(['status', '--config', config], { env: { SKYPANEL_AGENT_STATUS_LISTEN: '127.0.0.1:9' } });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/cannot reach the agent at http:\/\/127\.0\.0\.1:9/);
  });
});
