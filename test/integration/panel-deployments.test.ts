import { beforeAll, describe, expect, test } from 'vitest';
import { parseDesiredSet } from '../../src/protocol/deployment.js';
import { encryptSecret, secretKey } from '../../src/panel/crypto.js';
import { DEFAULT_SEED, seedDeployment, seedOrganization } from '../../src/panel/dev-seed.js';
import type { PanelServer } from '../../src/panel/server.js';
import type { TestPostgres } from '../helpers/postgres.js';
import {
  call,
  heartbeatBody,
  insertDeployment,
  insertOrg,
  insertService,
  JWT_SECRET,
  panelOnPostgres,
  pick,
  SSH_CRED_SECRET,
} from '../helpers/panel-fixtures.js';

/**
 * Calls 3 and 4 on SkyPanelV2's rows: which rows form a worker's desired set and how each column
 * maps (secrets decrypted as SkyPanelV2 encrypts them), rows that cannot be mapped, and status
 * reports written back in order.
 */

const env = panelOnPostgres();
const registered = (): Promise<{ workerId: string; token: string }> => env.registered();
let pg: TestPostgres;
let panel: PanelServer;
beforeAll(() => {
  ({ pg, panel } = env);
});
const key = secretKey({ sshCredSecret: SSH_CRED_SECRET, jwtSecret: JWT_SECRET });

async function desired(w: {
  workerId: string;
  token: string;
}): Promise<{ list: Record<string, unknown>[]; etag: string | null; body: unknown }> {
  const res = await call(panel.url, 'GET', `/api/workers/${w.workerId}/deployments`, w.token);
  expect(res.status).toBe(200);
  return { list: pick(res.body, 'data', 'deployments') as Record<string, unknown>[], etag: res.headers.get('etag'), body: res.body };
}

async function linkSecret(
  orgId: string,
  userId: string,
  serviceId: string,
  name: string,
  encrypted: string,
  link: { mountPath?: string; envVarName?: string } = {},
): Promise<void> {
  const { rows } = await pg.pool.query<{ id: string }>(
    'INSERT INTO container_secrets (organization_id, name, encrypted_value, created_by) VALUES ($1, $2, $3, $4) RETURNING id',
    [orgId, name, encrypted, userId],
  );
  await pg.pool.query('INSERT INTO container_service_secrets (service_id, secret_id, mount_path, env_var_name) VALUES ($1, $2, $3, $4)', [
    serviceId,
    rows[0]!.id,
    link.mountPath ?? null,
    link.envVarName ?? null,
  ]);
}

describe('desired set', () => {
  test("current deployments of the worker's live services, mapped column by column", async () => {
    const w = await registered();
    const other = await registered();
    const { orgId, userId } = await insertOrg(pg.pool);
    const svc = await insertService(pg.pool, {
      orgId,
      status: 'running',
      environmentVars: { NODE_ENV: 'production', PORT: 3000, DEBUG: false },
      resourceLimits: { cpu_cores: 0.5, memory_mb: 256, disk_gb: 5 },
    });
    await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId, imageTag: 'registry.example.com/app:old' });
    const current = await insertDeployment(pg.pool, {
      serviceId: svc,
      workerId: w.workerId,
      imageTag: 'registry.example.com/app:1.4.2',
      internalPort: 3000,
      externalPort: 18080,
    });
    await linkSecret(orgId, userId, svc, 'db-password', encryptSecret('s3cret-value', key), { envVarName: 'DB_PASSWORD' });
    await linkSecret(orgId, userId, svc, 'legacy-token', 'plain-legacy-value', { mountPath: '/run/secrets/legacy' });
    const stopped = await insertService(pg.pool, { orgId, status: 'stopped' });
    const stoppedDep = await insertDeployment(pg.pool, { serviceId: stopped, workerId: w.workerId });
    const deleted = await insertService(pg.pool, { orgId, status: 'deleted' });
    await insertDeployment(pg.pool, { serviceId: deleted, workerId: w.workerId });
    const elsewhere = await insertService(pg.pool, { orgId, status: 'running' });
    await insertDeployment(pg.pool, { serviceId: elsewhere, workerId: other.workerId });

    const { list, body } = await desired(w);
    expect(list.map((d) => d.id).sort()).toEqual([current, stoppedDep].sort());
    const d = list.find((x) => x.id === current)!;
    expect(d).toMatchObject({
      serviceId: svc,
      organizationId: orgId,
      imageTag: 'registry.example.com/app:1.4.2',
      desiredState: 'running',
      replicas: 1,
      environmentVars: { NODE_ENV: 'production', PORT: '3000', DEBUG: 'false' },
      resourceLimits: { cpuCores: 0.5, memoryMb: 256, diskGb: 5 },
      internalPort: 3000,
      externalPort: 18080,
    });
    expect(d.secrets).toEqual([
      { name: 'db-password', value: 's3cret-value', mountPath: null, envVarName: 'DB_PASSWORD' },
      { name: 'legacy-token', value: 'plain-legacy-value', mountPath: '/run/secrets/legacy', envVarName: null },
    ]);
    expect(list.find((x) => x.id === stoppedDep)).toMatchObject({ desiredState: 'stopped' });
    // The agent accepts every entry.
    const parsed = parseDesiredSet(body);
    expect(parsed.ok && parsed.rejected).toEqual([]);
  });

  test('an unmappable row is served so the agent reports it failed, naming the column; the others still run', async () => {
    const w = await registered();
    const { orgId, userId } = await insertOrg(pg.pool);
    const badLimits = await insertService(pg.pool, { orgId, status: 'running', resourceLimits: { cpu_cores: 0.5, memory_mb: 2 } });
    const badLimitsDep = await insertDeployment(pg.pool, { serviceId: badLimits, workerId: w.workerId });
    const badSecret = await insertService(pg.pool, { orgId, status: 'running' });
    const badSecretDep = await insertDeployment(pg.pool, { serviceId: badSecret, workerId: w.workerId });
    const otherKey = secretKey({ sshCredSecret: 'a-different-ssh-cred-secret', jwtSecret: JWT_SECRET });
    await linkSecret(orgId, userId, badSecret, 'api-key', encryptSecret('value-under-another-key', otherKey));
    const badImage = await insertService(pg.pool, { orgId, status: 'running' });
    const badImageDep = await insertDeployment(pg.pool, { serviceId: badImage, workerId: w.workerId, imageTag: 'Not A Valid Image!' });
    const good = await insertService(pg.pool, { orgId, status: 'running' });
    const goodDep = await insertDeployment(pg.pool, { serviceId: good, workerId: w.workerId });

    const { body } = await desired(w);
    expect(JSON.stringify(body)).not.toContain('value-under-another-key');
    const parsed = parseDesiredSet(body);
    if (!parsed.ok) throw new Error(parsed.error);
    expect(parsed.deployments.map((d) => d.id)).toEqual([goodDep]);
    const messages = Object.fromEntries(parsed.rejected.map((r) => [r.id, r.message]));
    expect(messages[badLimitsDep]).toMatch(
      /^container_services\.resource_limits\.memory_mb: resourceLimits\.memoryMb: must be an integer between \d+/,
    );
    expect(messages[badSecretDep]).toMatch(/^container_secrets\.encrypted_value: secret "api-key" cannot decrypt/);
    expect(messages[badImageDep]).toMatch(/^container_deployments\.image_tag: imageTag: must be a valid Docker image reference/);
    // The rejected entries keep their serviceId, so the agent leaves those services alone.
    expect(parsed.rejected.map((r) => r.serviceId).sort()).toEqual([badLimits, badSecret, badImage].sort());
  });

  test("dev's seed (an organization, a service, a current deployment) is a valid desired set of one", async () => {
    const w = await registered();
    const org = await seedOrganization(pg.db);
    const seeded = await seedDeployment(pg.db, org, w.workerId, { ...DEFAULT_SEED, slug: `seed-${w.workerId.slice(0, 8)}` });
    const parsed = parseDesiredSet((await desired(w)).body);
    if (!parsed.ok) throw new Error(parsed.error);
    expect(parsed.rejected).toEqual([]);
    expect(parsed.deployments).toMatchObject([
      {
        id: seeded.deploymentId,
        serviceId: seeded.serviceId,
        organizationId: org.organizationId,
        imageTag: DEFAULT_SEED.imageTag,
        externalPort: 18080,
        environmentVars: DEFAULT_SEED.environmentVars,
      },
    ]);
  });

  test('ETag: 304 while unchanged; a change to a row changes it; the heartbeat hint names the same tag', async () => {
    const w = await registered();
    const { orgId } = await insertOrg(pg.pool);
    const svc = await insertService(pg.pool, { orgId, status: 'running' });
    await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId });
    const first = await desired(w);
    const again = await call(panel.url, 'GET', `/api/workers/${w.workerId}/deployments`, w.token, undefined, {
      'if-none-match': first.etag!,
    });
    expect(again.status).toBe(304);
    const hb = await call(panel.url, 'POST', `/api/workers/${w.workerId}/heartbeat`, w.token, heartbeatBody());
    expect(pick(hb.body, 'data', 'deploymentsEtag')).toBe(first.etag);
    await pg.pool.query(`UPDATE container_services SET status = 'stopped' WHERE id = $1`, [svc]);
    const changed = await call(panel.url, 'GET', `/api/workers/${w.workerId}/deployments`, w.token, undefined, {
      'if-none-match': first.etag!,
    });
    expect(changed.status).toBe(200);
    expect(changed.headers.get('etag')).not.toBe(first.etag);
  });
});

describe('status reports', () => {
  const report = (extra: Record<string, unknown>): Record<string, unknown> => ({
    status: 'running',
    seq: 1,
    bootId: 'boot-a',
    reportedAt: new Date().toISOString(),
    ...extra,
  });

  async function setup(): Promise<{
    w: { workerId: string; token: string };
    svc: string;
    dep: string;
    post: (b: Record<string, unknown>) => ReturnType<typeof call>;
  }> {
    const w = await registered();
    const { orgId } = await insertOrg(pg.pool);
    const svc = await insertService(pg.pool, { orgId, status: 'deploying' });
    const dep = await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId });
    return { w, svc, dep, post: (b) => call(panel.url, 'POST', `/api/workers/${w.workerId}/deployments/${dep}/status`, w.token, b) };
  }

  async function rows(svc: string, dep: string): Promise<{ d: Record<string, unknown>; s: Record<string, unknown> }> {
    const d = (await pg.pool.query('SELECT * FROM container_deployments WHERE id = $1', [dep])).rows[0] as Record<string, unknown>;
    const s = (await pg.pool.query('SELECT * FROM container_services WHERE id = $1', [svc])).rows[0] as Record<string, unknown>;
    return { d, s };
  }

  test('a report fills the deployment row and its service in one go', async () => {
    const { svc, dep, post } = await setup();
    const deployedAt = '2026-12-04T10:00:00.000Z';
    const res = await post(report({ swarmServiceId: 'svc123', containerId: 'ctr456', publicUrl: 'http://203.0.113.7:18080', deployedAt }));
    expect(res.status).toBe(200);
    const { d, s } = await rows(svc, dep);
    expect(d).toMatchObject({
      status: 'running',
      swarm_service_id: 'svc123',
      container_id: 'ctr456',
      public_url: 'http://203.0.113.7:18080',
      stopped_at: null,
    });
    expect((d.deployed_at as Date).toISOString()).toBe(deployedAt);
    expect(s).toMatchObject({ status: 'running', public_url: 'http://203.0.113.7:18080' });
    const failed = await post(report({ status: 'failed', seq: 2, deploymentLogs: 'boom\nexit 1' }));
    expect(failed.status).toBe(200);
    expect((await rows(svc, dep)).d).toMatchObject({ status: 'failed', deployment_logs: 'boom\nexit 1', swarm_service_id: 'svc123' });
  });

  test('an older report (lower seq, or an earlier run) is acknowledged and ignored; a later run applies', async () => {
    const { svc, dep, post } = await setup();
    const t0 = Date.now();
    await post(report({ status: 'running', seq: 5, reportedAt: new Date(t0).toISOString() }));
    const late = await post(report({ status: 'deploying', seq: 4, reportedAt: new Date(t0 - 1000).toISOString() }));
    expect(late.status).toBe(200);
    expect(pick(late.body, 'data', 'applied')).toBe(false);
    const replay = await post(report({ status: 'failed', seq: 5, reportedAt: new Date(t0).toISOString() }));
    expect(pick(replay.body, 'data', 'applied')).toBe(false);
    expect((await rows(svc, dep)).d.status).toBe('running');
    const oldBoot = await post(report({ status: 'failed', seq: 99, bootId: 'boot-old', reportedAt: new Date(t0 - 60_000).toISOString() }));
    expect(pick(oldBoot.body, 'data', 'applied')).toBe(false);
    const newBoot = await post(
      report({
        status: 'stopped',
        seq: 1,
        bootId: 'boot-b',
        reportedAt: new Date(t0 + 1000).toISOString(),
        stoppedAt: new Date(t0 + 1000).toISOString(),
      }),
    );
    expect(pick(newBoot.body, 'data', 'applied')).toBe(true);
    expect((await rows(svc, dep)).d.status).toBe('stopped');
  });

  test("the service row follows only its current deployment, and never undoes the owner's stop", async () => {
    const { w, svc, dep, post } = await setup();
    await pg.pool.query(`UPDATE container_services SET status = 'stopped' WHERE id = $1`, [svc]);
    await post(report({ status: 'running', seq: 1 }));
    expect((await rows(svc, dep)).s.status).toBe('stopped');
    const next = await insertDeployment(pg.pool, { serviceId: svc, workerId: w.workerId });
    await pg.pool.query(`UPDATE container_services SET status = 'deploying' WHERE id = $1`, [svc]);
    await post(report({ status: 'failed', seq: 2 }));
    const after = await rows(svc, dep);
    expect(after.d.status).toBe('failed');
    expect(after.s.status).toBe('deploying');
    expect(next).not.toBe(dep);
  });

  test('a deployment of another worker, an unknown one, and an invalid report', async () => {
    const { dep, post } = await setup();
    const other = await registered();
    const foreign = await call(panel.url, 'POST', `/api/workers/${other.workerId}/deployments/${dep}/status`, other.token, report({}));
    expect(foreign.status).toBe(404);
    expect(pick(foreign.body, 'error', 'code')).toBe('DEPLOYMENT_NOT_FOUND');
    const unknown = await call(panel.url, 'POST', `/api/workers/${other.workerId}/deployments/not-a-uuid/status`, other.token, report({}));
    expect(pick(unknown.body, 'error', 'code')).toBe('DEPLOYMENT_NOT_FOUND');
    const invalid = await post(report({ status: 'exploded' }));
    expect(invalid.status).toBe(400);
    expect(pick(invalid.body, 'error', 'field')).toBe('status');
  });
});
