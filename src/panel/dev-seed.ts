import { AgentError } from '../errors.js';
import type { Database, Queryable } from './db.js';

/**
 * The rows `dev` writes so a newcomer sees the whole path: an organization (and the user who owns
 * it), and per deployment a container_services row plus a container_deployments row assigned to
 * the dev worker and made the service's current deployment, exactly as SkyPanelV2's UI would leave
 * them before handing work to a worker. From there on only the panel module and the agent touch them.
 */

/** What `dev --deployments FILE` accepts per entry: the protocol's field names, limited to what SkyPanelV2's columns can hold. */
export interface SeedDeployment {
  slug: string;
  imageTag: string;
  internalPort?: number | null;
  externalPort?: number | null;
  environmentVars?: Record<string, string>;
  resourceLimits?: { cpuCores?: number; memoryMb?: number; diskGb?: number };
  desiredState?: 'running' | 'stopped';
}

/** The image scripts/ensure-docker.sh builds: static busybox whose CMD serves $GREETING on 8080. */
export const DEV_HELLO_IMAGE = 'skypanel-test/hello:1';

export const DEFAULT_SEED: SeedDeployment = {
  slug: 'hello-world',
  imageTag: DEV_HELLO_IMAGE,
  internalPort: 8080,
  externalPort: 18080,
  environmentVars: { GREETING: 'hello from skypanel-agent' },
  resourceLimits: { cpuCores: 0.25, memoryMb: 64 },
};

// Fields of the protocol's deployment that no SkyPanelV2 column holds: refused rather than dropped,
// so a file written for the old in-memory panel does not silently run something else.
const NO_COLUMN: Record<string, string> = {
  command: 'bake the command into the image (its CMD)',
  replicas: 'SkyPanelV2 runs one replica per deployment',
  secrets: 'create them in container_secrets (see docs/PANEL.md)',
};
const IGNORED = new Set(['id', 'serviceId', 'organizationId']);
const KNOWN = new Set(['slug', 'imageTag', 'internalPort', 'externalPort', 'environmentVars', 'resourceLimits', 'desiredState']);

/** Checks one entry of a `--deployments` file; the error names the entry and the field. */
export function toSeedDeployment(entry: unknown, index: number): SeedDeployment {
  const where = `deployments[${index}]`;
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new AgentError('SKP_ERR_USAGE', `${where}: expected an object`, { field: 'deployments' });
  }
  const e = entry as Record<string, unknown>;
  for (const key of Object.keys(e)) {
    if (key in NO_COLUMN && !(key === 'replicas' && e[key] === 1) && !(key === 'secrets' && Array.isArray(e[key]) && e[key].length === 0)) {
      throw new AgentError('SKP_ERR_USAGE', `${where}.${key}: no SkyPanelV2 column holds it; ${NO_COLUMN[key]}`, { field: 'deployments' });
    }
    if (!KNOWN.has(key) && !IGNORED.has(key) && !(key in NO_COLUMN)) {
      throw new AgentError('SKP_ERR_USAGE', `${where}.${key}: unknown field`, { field: 'deployments' });
    }
  }
  if (typeof e.slug !== 'string' || e.slug === '')
    throw new AgentError('SKP_ERR_USAGE', `${where}.slug: required`, { field: 'deployments' });
  if (typeof e.imageTag !== 'string' || e.imageTag === '')
    throw new AgentError('SKP_ERR_USAGE', `${where}.imageTag: required`, { field: 'deployments' });
  // Everything else is written as given: the panel maps the row and the agent's validator names
  // whatever is wrong, which is the path a bad row from SkyPanelV2 takes too.
  return e as unknown as SeedDeployment;
}

export interface SeededOrganization {
  organizationId: string;
  userId: string;
}

/** One user and the organization it owns; reused when a previous run on the same database made them. */
export async function seedOrganization(db: Queryable): Promise<SeededOrganization> {
  const user = await db.query<{ id: string }>(
    `INSERT INTO users (email, name, role) VALUES ('dev@skypanel-agent.local', 'skypanel-agent dev', 'admin')
     ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id`,
  );
  const userId = user.rows[0]!.id;
  const org = await db.query<{ id: string }>(
    `INSERT INTO organizations (name, slug, owner_id) VALUES ('Dev Organization', 'skypanel-agent-dev', $1)
     ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id`,
    [userId],
  );
  return { organizationId: org.rows[0]!.id, userId };
}

export interface SeededDeployment {
  serviceId: string;
  deploymentId: string;
  slug: string;
}

/**
 * One service with one current deployment on `workerId`. A service of the same slug from an earlier
 * run gets a new deployment (the old rows stay, as SkyPanelV2 keeps deployment history).
 */
export async function seedDeployment(
  db: Database,
  org: SeededOrganization,
  workerId: string,
  d: SeedDeployment,
): Promise<SeededDeployment> {
  const limits = d.resourceLimits ?? {};
  const resourceLimits = {
    cpu_cores: limits.cpuCores ?? 1,
    memory_mb: limits.memoryMb ?? 512,
    ...(limits.diskGb === undefined ? {} : { disk_gb: limits.diskGb }),
  };
  return db.transaction(async (tx) => {
    const service = await tx.query<{ id: string }>(
      `INSERT INTO container_services (organization_id, name, slug, environment_vars, resource_limits, status)
       VALUES ($1, $2, $2, $3::jsonb, $4::jsonb, $5)
       ON CONFLICT (organization_id, slug) DO UPDATE
         SET environment_vars = EXCLUDED.environment_vars, resource_limits = EXCLUDED.resource_limits, status = EXCLUDED.status
       RETURNING id`,
      [
        org.organizationId,
        d.slug,
        JSON.stringify(d.environmentVars ?? {}),
        JSON.stringify(resourceLimits),
        d.desiredState === 'stopped' ? 'stopped' : 'deploying',
      ],
    );
    const serviceId = service.rows[0]!.id;
    const deployment = await tx.query<{ id: string }>(
      `INSERT INTO container_deployments (service_id, worker_id, image_tag, status, internal_port, external_port)
       VALUES ($1, $2, $3, 'pending', $4, $5) RETURNING id`,
      [serviceId, workerId, d.imageTag, d.internalPort ?? null, d.externalPort ?? null],
    );
    const deploymentId = deployment.rows[0]!.id;
    await tx.query('UPDATE container_services SET current_deployment_id = $2 WHERE id = $1', [serviceId, deploymentId]);
    return { serviceId, deploymentId, slug: d.slug };
  });
}

export interface DeploymentRowView {
  id: string;
  slug: string;
  status: string | null;
  public_url: string | null;
}

/** The rows `dev` prints as they change: what an admin would see in SkyPanelV2's table. */
export async function readWorkerDeployments(db: Queryable, workerId: string): Promise<DeploymentRowView[]> {
  const { rows } = await db.query<DeploymentRowView>(
    `SELECT d.id, s.slug, d.status, d.public_url
       FROM container_deployments d JOIN container_services s ON s.id = d.service_id
      WHERE d.worker_id = $1 ORDER BY d.created_at, d.id`,
    [workerId],
  );
  return rows;
}

export async function countBillingCycles(db: Queryable, organizationId: string): Promise<number> {
  const { rows } = await db.query<{ n: string | number }>('SELECT count(*) AS n FROM container_billing_cycles WHERE organization_id = $1', [
    organizationId,
  ]);
  return Number(rows[0]?.n ?? 0);
}
