import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/agent/logger.js';
import { createMetricsServer } from '../../src/agent/status/metrics-server.js';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { useReferencePanel, type RefCp } from '../helpers/reference-panel.js';
import { runCli, waitFor } from '../helpers/cli.js';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text.js';

/**
 * Prometheus without the worker token (metricsListen, metricsToken), checked by promtool; and what
 * an operator must see: rejected deployments and heartbeat-only mode in /v1/status,
 * /v1/deployments, `status` and the metrics. No Docker needed: the agent runs without it.
 */

const panel = useReferencePanel({ tmpPrefix: 'skp-metrics-' });

/** Registers a worker with `on` (no Docker here: the socket does not exist) and runs it. */
async function startAgent(on: RefCp, env: NodeJS.ProcessEnv = {}) {
  const { config, token, workerId } = await panel.register({ on, args: ['--docker-socket', join(panel.dir, 'no-docker.sock')] });
  const agent = panel.startAgent(config, env);
  const metrics = await agent.waitForLog((l) => l.msg === 'metrics listening');
  const status = await agent.waitForLog((l) => l.msg === 'status api listening');
  await waitFor(
    () => (on.workers.get(workerId)?.heartbeats ?? 0) >= 1,
    15_000,
    () => agent.output,
  );
  return {
    agent,
    config,
    token,
    workerId,
    metricsUrl: `http://127.0.0.1:${metrics.port}/metrics`,
    statusUrl: `http://127.0.0.1:${status.port}`,
  };
}

const get = async (url: string, bearer?: string) => {
  const res = await fetch(url, bearer ? { headers: { authorization: `Bearer ${bearer}` } } : {});
  return { status: res.status, text: await res.text() };
};

/** promtool from Debian's prometheus package; CI installs it (.ci/run), so there a missing one fails. */
async function promtool(): Promise<string | undefined> {
  const found = await new Promise<string>((resolve) => execFile('sh', ['-c', 'command -v promtool'], (_e, out) => resolve(out.trim())));
  if (found) return found;
  if (process.env.CI === 'true')
    throw new Error("promtool is not installed: .ci/run takes it from Debian's prometheus package for this test");
  process.stderr.write(
    '\n[skypanel-agent tests] promtool not installed (apt-get install prometheus): skipping `promtool check metrics`\n\n',
  );
  return undefined;
}

describe('metrics listener', () => {
  it('serves /metrics without the worker token on its own loopback listener; promtool accepts it', async (ctx) => {
    const { metricsUrl, statusUrl, token } = await startAgent(panel.cp);
    // The status API still wants the worker token for everything.
    expect((await get(`${statusUrl}/metrics`)).status).toBe(401);
    const res = await get(metricsUrl);
    expect(res.status).toBe(200);
    const fams = parsePrometheusText(res.text);
    const build = fams.get('skypanel_agent_build_info')!.samples;
    expect(build).toHaveLength(1);
    expect(build[0]!.value).toBe(1);
    expect(build[0]!.labels).toEqual({ version: expect.stringMatching(/^\d+\.\d+\.\d+/), node_version: process.versions.node });
    expect(sampleValue(fams, 'skypanel_agent_last_heartbeat_success_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(sampleValue(fams, 'skypanel_agent_usage_outbox_records')).toBe(0);
    expect(fams.get('skypanel_agent_usage_records_dropped_total')!.type).toBe('counter');
    expect(fams.has('skypanel_agent_docker_events_connected')).toBe(true);
    for (const name of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
      'nodejs_heap_size_total_bytes',
      'process_start_time_seconds',
    ]) {
      expect(fams.has(name), name).toBe(true);
    }
    expect(res.text).not.toContain(token);

    const tool = await promtool();
    if (!tool) return ctx.skip();
    const file = join(panel.dir, `${randomUUID()}.prom`);
    await writeFile(file, res.text);
    const out = await new Promise<{ code: number; text: string }>((resolve) => {
      const child = execFile('sh', ['-c', `"${tool}" check metrics < "${file}"`], (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, text: stdout + stderr }),
      );
      child.stdin?.end();
    });
    expect(out.text.trim(), out.text).toBe('');
    expect(out.code).toBe(0);
  });

  it('with metricsToken it wants that token, and the worker token is not it', async () => {
    const metricsToken = `mt-${randomUUID()}`;
    panel.mustNotLeak(metricsToken);
    const { metricsUrl, token } = await startAgent(panel.cp, { SKYPANEL_AGENT_METRICS_TOKEN: metricsToken });
    expect((await get(metricsUrl)).status).toBe(401);
    expect((await get(metricsUrl, token)).status).toBe(401);
    const ok = await get(metricsUrl, metricsToken);
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('skypanel_agent_heartbeats_total');
    expect((await get(metricsUrl.replace('/metrics', '/v1/status'), metricsToken)).status).toBe(404);
  });
});

describe('metrics listener, in process', () => {
  it('serves GET and HEAD /metrics only, and a port already taken is an error naming the address', async () => {
    const logger = createLogger({ level: 'silent', pretty: false, destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const server = createMetricsServer({ listen: '127.0.0.1:0', render: () => '# TYPE x gauge\nx 1\n', logger });
    const { port } = await server.start();
    try {
      const base = `http://127.0.0.1:${port}`;
      expect((await get(`${base}/metrics`)).text).toBe('# TYPE x gauge\nx 1\n');
      expect((await fetch(`${base}/metrics`, { method: 'HEAD' })).status).toBe(200);
      expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
      expect((await get(`${base}/v1/status`)).status).toBe(404);
      const second = createMetricsServer({ listen: `127.0.0.1:${port}`, render: () => '', logger });
      await expect(second.start()).rejects.toThrow(`metrics listener cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
    } finally {
      await server.stop();
    }
  });
});

describe('visibility', () => {
  it('a deployment the panel sent malformed shows in /v1/deployments, status and the metrics, with its reason', async () => {
    const { agent, config, token, workerId, metricsUrl, statusUrl } = await startAgent(panel.cp);
    const id = randomUUID();
    panel.cp.setDeployments(workerId, [{ id, serviceId: randomUUID(), slug: 'broken-app', imageTag: 42 }]);
    const body = await waitFor(
      async () => {
        const r = await get(`${statusUrl}/v1/deployments`, token);
        const list = (
          JSON.parse(r.text) as { deployments: { id: string; observedStatus: string; lastError: string; rejected?: { field: string } }[] }
        ).deployments;
        return list.find((d) => d.id === id);
      },
      20_000,
      () => agent.output.slice(-2000),
    );
    expect(body).toMatchObject({
      observedStatus: 'failed',
      lastError: expect.stringMatching(/^invalid deployment: /),
      rejected: { field: expect.any(String) },
    });

    const fams = parsePrometheusText((await get(metricsUrl)).text);
    expect(sampleValue(fams, 'skypanel_agent_deployments', { status: 'failed' })).toBe(1);
    const rejected = fams.get('skypanel_agent_deployments_rejected')!.samples;
    expect(rejected.map((s) => s.value)).toEqual([1]);

    const status = await runCli(['status', '--config', config], { env: { SKYPANEL_AGENT_STATE_DIR: agent.stateDir } });
    expect(status.stdout).toMatch(new RegExp(`${id.slice(0, 8)}\\s+-\\s+running\\s+failed\\s+0/0\\s+-\\s+invalid deployment: `));
  });

  it('heartbeat-only mode against a stock panel is said by /v1/status, status and the metrics', async () => {
    const stock = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, extensions: false });
    try {
      const { agent, config, token, metricsUrl, statusUrl } = await startAgent(stock);
      await agent.waitForLog((l) => String(l.msg).includes('heartbeat-only mode'));
      const view = JSON.parse((await get(`${statusUrl}/v1/status`, token)).text) as {
        deploymentsApi: string;
        heartbeatOnly: string | null;
      };
      expect(view.deploymentsApi).toBe('heartbeat-only');
      expect(view.heartbeatOnly).toMatch(/no deployments API/);
      const status = await runCli(['status', '--config', config], { env: { SKYPANEL_AGENT_STATE_DIR: agent.stateDir } });
      expect(status.stdout).toMatch(/^mode\s+HEARTBEAT-ONLY: the control plane has no deployments API/m);
      expect(sampleValue(parsePrometheusText((await get(metricsUrl)).text), 'skypanel_agent_heartbeat_only')).toBe(1);
    } finally {
      await stock.close();
    }
  });
});
