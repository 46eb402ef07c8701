import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABEL } from '../../src/domain/labels.js';
import { signWorkerToken } from '../../src/skypanel/jwt.js';
import { AgentProcess, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';
import { insertOrg, JWT_SECRET, SSH_CRED_SECRET } from '../helpers/panel-fixtures.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';

/**
 * The blocking desired-set query end to end: `skypanel-agent panel` on PostgreSQL (its LISTEN
 * connection), the built agent at its DEFAULT intervals (30 s heartbeats and polls) on the real
 * swarm. A deployment row inserted by plain SQL becomes a Swarm service within 2 s: no heartbeat
 * or poll is due that soon, so only the held call can have brought it.
 */

const ready = await ensureDocker();
const docker = dockerode({ timeoutMs: 30_000 });

describe.skipIf(!ready.ok)('blocking query: skypanel-agent panel and the built agent at default intervals', () => {
  let pg: TestPostgres;
  let panel: AgentProcess;
  let agent: AgentProcess;
  let dir: string;
  const workerId = randomUUID();
  const token = signWorkerToken(JWT_SECRET, { workerId });
  const diag = () => `agent:\n${agent?.output.slice(-3000)}\npanel:\n${panel?.output.slice(-2000)}`;

  beforeAll(async () => {
    pg = await startPostgres();
    panel = new AgentProcess(['panel', '--database-url', pg.url, '--listen', '127.0.0.1:0', '--log-level', 'warn'], {
      JWT_SECRET,
      SSH_CRED_SECRET,
    });
    const m = await waitFor(
      () => /panel listening on (http:\/\/\S+)/.exec(panel.output),
      20_000,
      () => panel.output,
    );
    dir = await mkdtemp(join(tmpdir(), 'skp-panel-held-e2e-'));
    const config = join(dir, 'agent.json');
    const reg = await runCli(['register', '--control-plane', m[1]!, '--token', token, '--config', config]);
    expect(reg.code, reg.stderr).toBe(0);
    agent = new AgentProcess(['run', '--config', config]);
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
  });

  it('a deployment row inserted by SQL is a Swarm service within 2 s', async () => {
    // The first heartbeat answer announced the blocking query; the held call follows the first poll.
    await waitFor(
      async () =>
        (await pg.pool.query(`SELECT current_load->>'seq' AS seq FROM container_workers WHERE id = $1`, [workerId])).rows[0]?.seq !==
        undefined,
      30_000,
      diag,
    );
    await new Promise((r) => setTimeout(r, 3_000));
    const { orgId } = await insertOrg(pg.pool);
    const svc = await pg.pool.query<{ id: string }>(
      `INSERT INTO container_services (organization_id, name, slug, status, environment_vars, resource_limits)
       VALUES ($1, 'Held', $2, 'deploying', '{}', '{"cpu_cores":0.1,"memory_mb":32}') RETURNING id`,
      [orgId, `held-${workerId.slice(0, 8)}`],
    );
    const serviceId = svc.rows[0]!.id;
    // One transaction, as SkyPanelV2 assigns a deployment: the row and the service's pointer commit together.
    const client = await pg.pool.connect();
    let committedAt: number;
    try {
      await client.query('BEGIN');
      const dep = await client.query<{ id: string }>(
        `INSERT INTO container_deployments (service_id, worker_id, image_tag) VALUES ($1, $2, $3) RETURNING id`,
        [serviceId, workerId, TEST_IMAGE],
      );
      await client.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [serviceId, dep.rows[0]!.id]);
      await client.query('COMMIT');
      committedAt = Date.now();
    } finally {
      client.release();
    }
    await waitFor(
      async () =>
        ((await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.serviceId}=${serviceId}`] }) })) as unknown[]).length ===
        1,
      10_000,
      diag,
    );
    const ms = Date.now() - committedAt;
    expect(ms, diag()).toBeLessThan(2_000);
  });
});
