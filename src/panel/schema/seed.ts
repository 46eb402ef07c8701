import type { Queryable } from '../db.js';

/**
 * One organization (with its owner), one service and one deployment assigned to a worker: what
 * `skypanel-agent dev` shows a newcomer. FOR A DEV OR TEST DATABASE built from SKYPANEL_BASE_SQL:
 * a real SkyPanelV2 has its own users and organizations. The worker row must exist (register first).
 */

export interface ExampleServiceInput {
  workerId: string;
  imageTag: string;
  slug?: string;
  environmentVars?: Record<string, string>;
  /** SkyPanelV2's snake_case keys. */
  resourceLimits?: { cpu_cores: number; memory_mb: number; disk_gb?: number };
  internalPort?: number;
  externalPort?: number;
}

export interface ExampleService {
  userId: string;
  organizationId: string;
  serviceId: string;
  deploymentId: string;
}

export async function seedExampleService(db: Queryable, input: ExampleServiceInput): Promise<ExampleService> {
  const slug = input.slug ?? 'hello';
  const user = await db.query<{ id: string }>(
    `INSERT INTO users (email, name) VALUES ($1, 'Dev Owner') ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id`,
    [`dev-owner+${slug}@example.com`],
  );
  const userId = user.rows[0]!.id;
  const org = await db.query<{ id: string }>(
    `INSERT INTO organizations (name, slug, owner_id) VALUES ('Dev Organization', $1, $2)
     ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id`,
    [`dev-${slug}`, userId],
  );
  const organizationId = org.rows[0]!.id;
  const service = await db.query<{ id: string }>(
    `INSERT INTO container_services (organization_id, name, slug, status, environment_vars, resource_limits)
     VALUES ($1, $2, $2, 'deploying', $3, $4) RETURNING id`,
    [organizationId, slug, JSON.stringify(input.environmentVars ?? {}), JSON.stringify(input.resourceLimits ?? { cpu_cores: 0.25, memory_mb: 64, disk_gb: 1 })],
  );
  const serviceId = service.rows[0]!.id;
  const deployment = await db.query<{ id: string }>(
    `INSERT INTO container_deployments (service_id, worker_id, image_tag, internal_port, external_port) VALUES ($1, $2, $3, $4, $5) RETURNING id`,
    [serviceId, input.workerId, input.imageTag, input.internalPort ?? null, input.externalPort ?? null],
  );
  const deploymentId = deployment.rows[0]!.id;
  await db.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [serviceId, deploymentId]);
  return { userId, organizationId, serviceId, deploymentId };
}
