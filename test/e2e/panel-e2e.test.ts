import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABEL } from '../../src/domain/labels.js';
import { encryptSecret, secretKey } from '../../src/panel/crypto.js';
import { signWorkerToken } from '../../src/skypanel/jwt.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';
import { call, insertOrg, JWT_SECRET, pick, SSH_CRED_SECRET } from '../helpers/panel-fixtures.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';

/**
 * The whole product on real parts: `skypanel-agent panel` on a real PostgreSQL holding SkyPanelV2's
 * schema, the built agent on the real swarm. Rows written the way SkyPanelV2 writes them become a
 * running service, and the agent's reports and usage come back into those rows.
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });
const WEB_IMAGE = 'skypanel-test/panel-web';
const SECRET_VALUE = `panel-e2e-secret-${randomUUID()}`;
const USAGE_PERIOD_SEC = 10;

/** An image that serves "$GREETING v<version>" on 8080 by itself: container_deployments has no command column. */
function buildWebImage(version: number): Promise<void> {
  const dockerfile = [
    `FROM ${TEST_IMAGE}`,
    `ENV VERSION=${version}`,
    'CMD ["sh", "-c", "mkdir -p /www && echo \\"$GREETING v$VERSION\\" > /www/index.html && exec httpd -f -p 8080 -h /www"]',
  ].join('\n');
  return new Promise((resolve, reject) => {
    const child = execFile(
      'docker',
      ['build', '--network', 'none', '-q', '-t', `${WEB_IMAGE}:${version}`, '-'],
      { env: { ...process.env, DOCKER_BUILDKIT: '0' }, timeout: 120_000 },
      (err, _o, stderr) => (err ? reject(new Error(`docker build: ${stderr || err.message}`)) : resolve()),
    );
    child.stdin!.end(dockerfile);
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe.skipIf(!ready.ok)('skypanel-agent panel on PostgreSQL with the built agent on a real swarm', () => {
  let pg: TestPostgres;
  let panel: AgentProcess;
  let panelUrl: string;
  let agent: AgentProcess;
  let dir: string;
  let config: string;
  const workerId = randomUUID();
  const token = signWorkerToken(JWT_SECRET, { workerId });
  let orgId: string;
  let serviceId: string;
  let firstDeployment: string;
  let secondDeployment: string;
  const port = { external: 0 };

  const env = { JWT_SECRET, SSH_CRED_SECRET };
  const agentEnv = {
    SKYPANEL_AGENT_POLL_INTERVAL: '1',
    SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
    SKYPANEL_AGENT_USAGE_PERIOD: String(USAGE_PERIOD_SEC),
    SKYPANEL_AGENT_USAGE_SAMPLE_INTERVAL: '1',
  };
  const deployment = async (id: string): Promise<Record<string, unknown>> =>
    (await pg.pool.query('SELECT * FROM container_deployments WHERE id = $1', [id])).rows[0] as Record<string, unknown>;
  const service = async (): Promise<Record<string, unknown>> =>
    (await pg.pool.query('SELECT * FROM container_services WHERE id = $1', [serviceId])).rows[0] as Record<string, unknown>;
  const swarmServices = async () =>
    (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.serviceId}=${serviceId}`] }) })) as {
      ID: string;
      Spec: { Mode: { Replicated?: { Replicas: number } }; Labels: Record<string, string> };
    }[];
  const diag = () => `agent:\n${agent.output.slice(-3000)}\npanel:\n${panel.output.slice(-2000)}`;

  beforeAll(async () => {
    await Promise.all([buildWebImage(1), buildWebImage(2)]);
    pg = await startPostgres();
    panel = new AgentProcess(
      [
        'panel',
        '--database-url',
        pg.url,
        '--listen',
        '127.0.0.1:0',
        '--heartbeat-interval',
        '2',
        '--log-level',
        'warn',
        '--price-cpu-hour',
        '1',
        '--price-memory-gb-hour',
        '1',
        '--price-storage-gb-hour',
        '0',
        '--price-network-gb',
        '0',
      ],
      env,
    );
    const m = await waitFor(
      () => /panel listening on (http:\/\/\S+)/.exec(panel.output),
      20_000,
      () => panel.output,
    );
    panelUrl = m[1]!;
    dir = await mkdtemp(join(tmpdir(), 'skp-panel-e2e-'));
    config = join(dir, 'agent.json');
    const reg = await runCli(['register', '--control-plane', panelUrl, '--token', token, '--config', config, '--heartbeat-interval', '2']);
    expect(reg.code, reg.stderr).toBe(0);
    agent = new AgentProcess(['run', '--config', config], agentEnv);
    ({ orgId } = await insertOrg(pg.pool));
  });

  afterAll(async () => {
    await agent?.stop();
    for (const s of (await docker
      .listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })
      .catch(() => [])) as { ID: string }[]) {
      await docker
        .getService(s.ID)
        .remove()
        .catch(() => {});
    }
    await removeWorkerLeftovers(docker, workerId);
    await panel?.stop();
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    const everything = capturedOutput.join('\n');
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(SECRET_VALUE);
  });

  it('an assigned deployment row becomes a running service; the row says running with public_url and deployed_at', async () => {
    await waitFor(
      async () => (await pg.pool.query(`SELECT status FROM container_workers WHERE id = $1`, [workerId])).rows[0]?.status === 'active',
      20_000,
      diag,
    );
    port.external = await freePort();
    const { rows } = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_services (organization_id, name, slug, status, environment_vars, resource_limits)
       VALUES ($1, 'Hello', $2, 'deploying', $3, $4) RETURNING id`,
      [
        orgId,
        `hello-${workerId.slice(0, 8)}`,
        JSON.stringify({ GREETING: 'hello-from-postgres' }),
        JSON.stringify({ cpu_cores: 0.25, memory_mb: 64, disk_gb: 1 }),
      ],
    );
    serviceId = rows[0]!.id;
    const { userId } = await insertOrg(pg.pool);
    const secret = await pg.pool.query<{ id: string }>(
      'INSERT INTO container_secrets (organization_id, name, encrypted_value, created_by) VALUES ($1, $2, $3, $4) RETURNING id',
      [orgId, 'api-key', encryptSecret(SECRET_VALUE, secretKey({ sshCredSecret: SSH_CRED_SECRET, jwtSecret: JWT_SECRET })), userId],
    );
    await pg.pool.query('INSERT INTO container_service_secrets (service_id, secret_id, env_var_name) VALUES ($1, $2, $3)', [
      serviceId,
      secret.rows[0]!.id,
      'API_KEY',
    ]);
    const dep = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_deployments (service_id, worker_id, image_tag, internal_port, external_port) VALUES ($1, $2, $3, 8080, $4) RETURNING id`,
      [serviceId, workerId, `${WEB_IMAGE}:1`, port.external],
    );
    firstDeployment = dep.rows[0]!.id;
    await pg.pool.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [serviceId, firstDeployment]);

    await waitFor(async () => (await deployment(firstDeployment)).status === 'running', 90_000, diag);
    const row = await deployment(firstDeployment);
    expect(row.public_url).toBe(`http://127.0.0.1:${port.external}`);
    expect(row.deployed_at).toBeInstanceOf(Date);
    expect(row.swarm_service_id).toBeTruthy();
    expect(row.container_id).toBeTruthy();
    expect(await service()).toMatchObject({ status: 'running', public_url: `http://127.0.0.1:${port.external}` });
    const text = await waitFor(
      async () =>
        (await fetch(`${row.public_url as string}/`)
          .then((r) => r.text())
          .catch(() => '')) || false,
      20_000,
      diag,
    );
    expect(text.trim()).toBe('hello-from-postgres v1');
  });

  it('a row that cannot be mapped turns failed, deployment_logs naming the column; nothing runs for it', async () => {
    const { rows } = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_services (organization_id, name, slug, status, resource_limits) VALUES ($1, 'Tiny', $2, 'deploying', $3) RETURNING id`,
      [orgId, `tiny-${workerId.slice(0, 8)}`, JSON.stringify({ cpu_cores: 0.25, memory_mb: 2 })],
    );
    const dep = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_deployments (service_id, worker_id, image_tag) VALUES ($1, $2, $3) RETURNING id`,
      [rows[0]!.id, workerId, `${WEB_IMAGE}:1`],
    );
    await pg.pool.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [rows[0]!.id, dep.rows[0]!.id]);
    await waitFor(async () => (await deployment(dep.rows[0]!.id)).status === 'failed', 30_000, diag);
    expect((await deployment(dep.rows[0]!.id)).deployment_logs).toContain('container_services.resource_limits.memory_mb');
    expect(await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.serviceId}=${rows[0]!.id}`] }) })).toHaveLength(0);
    await pg.pool.query(`UPDATE container_services SET status = 'deleted' WHERE id = $1`, [rows[0]!.id]);
  });

  it('a new deployment row with another image_tag becomes current: rolling update, the new row running', async () => {
    const dep = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_deployments (service_id, worker_id, image_tag, internal_port, external_port) VALUES ($1, $2, $3, 8080, $4) RETURNING id`,
      [serviceId, workerId, `${WEB_IMAGE}:2`, port.external],
    );
    secondDeployment = dep.rows[0]!.id;
    const before = (await swarmServices()).map((s) => s.ID);
    await pg.pool.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [serviceId, secondDeployment]);
    await waitFor(async () => (await deployment(secondDeployment)).status === 'running', 90_000, diag);
    expect((await deployment(secondDeployment)).public_url).toBe(`http://127.0.0.1:${port.external}`);
    // The same Swarm service, updated in place.
    expect((await swarmServices()).map((s) => s.ID)).toEqual(before);
    await waitFor(
      async () =>
        (
          await fetch(`http://127.0.0.1:${port.external}/`)
            .then((r) => r.text())
            .catch(() => '')
        ).trim() === 'hello-from-postgres v2',
      30_000,
      diag,
    );
  });

  it('usage lands in container_billing_cycles once per period, also after SIGKILL and a replayed batch', async () => {
    const periods = async () =>
      (
        await pg.pool.query<{ start: Date; n: string; usage: Record<string, unknown> }>(
          `SELECT billing_period_start AS start, count(*) OVER (PARTITION BY billing_period_start) AS n, metadata->'skypanelAgentUsage' AS usage
         FROM container_billing_cycles WHERE service_id = $1 ORDER BY billing_period_start`,
          [serviceId],
        )
      ).rows;
    await waitFor(async () => (await periods()).length >= 1, 60_000, diag);
    const killedAt = Date.now();
    await agent.stop('SIGKILL');
    agent = new AgentProcess(['run', '--config', config], { ...agentEnv, SKYPANEL_AGENT_STATE_DIR: agent.stateDir });
    // Periods that closed after the restart arrive too.
    await waitFor(async () => (await periods()).some((p) => p.start.getTime() >= killedAt), 90_000, diag);
    const rows = await periods();
    expect(rows.every((r) => r.n === '1')).toBe(true);
    for (const r of rows) expect(r.start.getTime() % (USAGE_PERIOD_SEC * 1000)).toBe(0);
    const ours = rows.filter((r) => Object.hasOwn(r.usage, secondDeployment));
    expect(ours.length).toBeGreaterThanOrEqual(1);
    const { rows: cycle } = await pg.pool.query(
      `SELECT * FROM container_billing_cycles WHERE service_id = $1 AND billing_period_start = $2`,
      [serviceId, ours[0]!.start],
    );
    expect(cycle[0]).toMatchObject({ status: 'pending', organization_id: orgId });

    // The agent's batch sent again, as after a lost acknowledgement: counted once.
    const held = ours[0]!.usage[secondDeployment] as Record<string, unknown>;
    const replay = {
      deploymentId: secondDeployment,
      serviceId,
      organizationId: orgId,
      periodStart: ours[0]!.start.toISOString(),
      periodEnd: held.periodEnd,
      cpuHours: held.cpuHours,
      memoryGbHours: held.memoryGbHours,
      storageGbHours: held.storageGbHours,
      networkGb: held.networkGb,
      samples: held.samples,
      complete: held.complete,
    };
    const res = await call(panelUrl, 'POST', `/api/workers/${workerId}/usage`, token, { records: [replay, replay] });
    expect(res.status).toBe(200);
    expect(pick(res.body, 'data', 'duplicates')).toBe(2);
    const { rows: after } = await pg.pool.query(
      `SELECT * FROM container_billing_cycles WHERE service_id = $1 AND billing_period_start = $2`,
      [serviceId, ours[0]!.start],
    );
    expect(after).toHaveLength(1);
    expect(after[0]!.total_amount).toBe(cycle[0]!.total_amount);
    await waitFor(async () => (await deployment(secondDeployment)).status === 'running', 60_000, diag);
  });

  it('an admin drain on the panel reaches the agent: nothing new starts until the admin lifts it', async () => {
    await pg.pool.query(`UPDATE container_workers SET status = 'draining' WHERE id = $1`, [workerId]);
    await agent.waitForLog((l) => l.msg === 'the panel drained this worker: no new deployments will be started here', 20_000);
    const { rows } = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_services (organization_id, name, slug, status, resource_limits) VALUES ($1, 'Later', $2, 'deploying', $3) RETURNING id`,
      [orgId, `later-${workerId.slice(0, 8)}`, JSON.stringify({ cpu_cores: 0.25, memory_mb: 64 })],
    );
    const later = rows[0]!.id;
    const dep = (
      await pg.pool.query<{ id: string }>(
        `INSERT INTO container_deployments (service_id, worker_id, image_tag) VALUES ($1, $2, $3) RETURNING id`,
        [later, workerId, `${WEB_IMAGE}:1`],
      )
    ).rows[0]!.id;
    await pg.pool.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [later, dep]);
    const laterServices = async () =>
      (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.serviceId}=${later}`] }) })) as unknown[];
    await waitFor(async () => (await deployment(dep)).status === 'deploying', 30_000, diag);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await laterServices()).toHaveLength(0);
    // Heartbeats and register kept the drain all along.
    expect((await pg.pool.query(`SELECT status FROM container_workers WHERE id = $1`, [workerId])).rows[0]!.status).toBe('draining');
    await pg.pool.query(`UPDATE container_workers SET status = 'active' WHERE id = $1`, [workerId]);
    await waitFor(async () => (await deployment(dep)).status === 'running', 60_000, diag);
    await pg.pool.query(`UPDATE container_services SET status = 'deleted' WHERE id = $1`, [later]);
    await waitFor(async () => (await laterServices()).length === 0, 60_000, diag);
  });

  it('service stopped → 0 replicas and stopped; service deleted → the Swarm service is gone', async () => {
    await pg.pool.query(`UPDATE container_services SET status = 'stopped' WHERE id = $1`, [serviceId]);
    await waitFor(async () => (await deployment(secondDeployment)).status === 'stopped', 60_000, diag);
    const svcs = await swarmServices();
    expect(svcs).toHaveLength(1);
    expect(svcs[0]!.Spec.Mode.Replicated?.Replicas).toBe(0);
    expect((await deployment(secondDeployment)).stopped_at).toBeInstanceOf(Date);
    expect((await service()).status).toBe('stopped');

    await pg.pool.query(`UPDATE container_services SET status = 'deleted' WHERE id = $1`, [serviceId]);
    await waitFor(async () => (await swarmServices()).length === 0, 60_000, diag);
  });

  it('replacing auth_token_hash revokes the worker: 401', async () => {
    await pg.pool.query(`UPDATE container_workers SET auth_token_hash = $2 WHERE id = $1`, [workerId, 'f'.repeat(64)]);
    const res = await call(panelUrl, 'GET', `/api/workers/${workerId}/deployments`, token);
    expect(res.status).toBe(401);
    await agent.waitForLog((l) => /token refused|401/.test(String(l.msg)) || l.status === 401, 20_000);
  });
});
