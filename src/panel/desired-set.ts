import { MAX_DEPLOYMENTS, parseDeployment } from '../protocol/deployment.js';
import { strongEtag } from '../protocol/etag.js';
import { decryptSecret, SecretDecryptError } from './crypto.js';
import type { Queryable } from './db.js';

/**
 * Call 3's answer for one worker, from SkyPanelV2's rows: every container_deployments row
 * assigned to the worker that is its service's current_deployment_id, service not deleted. A row
 * that does not make a valid deployment is served as `{id, serviceId, ..., unmappable}` naming the
 * column, so the agent reports it failed (and leaves whatever runs for that service alone) instead
 * of the whole set failing or the panel guessing.
 */

interface DeploymentRow {
  id: string;
  service_id: string;
  organization_id: string;
  slug: string;
  image_tag: string;
  internal_port: number | null;
  external_port: number | null;
  service_status: string | null;
  environment_vars: unknown;
  resource_limits: unknown;
}

interface SecretRow {
  service_id: string;
  secret_org: string;
  name: string;
  encrypted_value: string;
  mount_path: string | null;
  env_var_name: string | null;
}

export interface DesiredSet {
  /** The exact 200 body of GET .../deployments. */
  body: string;
  /** Strong ETag over the body (also the heartbeat's desired-set hint). */
  etag: string;
  count: number;
}

/** A string, or a numeric string / number read as a number; anything else is passed through for the validator to name. */
function numberish(value: unknown): unknown {
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  return value;
}

/** JSONB env values: strings as they are, numbers and booleans as their text (what a shell would see). */
function envVars(value: unknown): unknown {
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'number' || typeof v === 'boolean' ? String(v) : v]),
  );
}

/** resource_limits holds snake_case keys in SkyPanelV2 (cpu_cores, memory_mb, disk_gb). */
function resourceLimits(value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const v = value as Record<string, unknown>;
  const out: Record<string, unknown> = { cpuCores: numberish(v.cpu_cores), memoryMb: numberish(v.memory_mb) };
  if (v.disk_gb !== undefined && v.disk_gb !== null) out.diskGb = numberish(v.disk_gb);
  return out;
}

/** The column a protocol field comes from, for the `unmappable` text. */
export function columnOf(field: string): string {
  const secret = /^secrets\[\d+\](?:\.(\w+))?/.exec(field);
  if (secret !== null) {
    const sub = secret[1];
    if (sub === 'value') return 'container_secrets.encrypted_value';
    if (sub === 'name') return 'container_secrets.name';
    if (sub === 'mountPath') return 'container_service_secrets.mount_path';
    if (sub === 'envVarName') return 'container_service_secrets.env_var_name';
    return 'container_service_secrets';
  }
  const limit = /^resourceLimits\.(cpuCores|memoryMb|diskGb)/.exec(field);
  if (limit !== null)
    return `container_services.resource_limits.${{ cpuCores: 'cpu_cores', memoryMb: 'memory_mb', diskGb: 'disk_gb' }[limit[1] as 'cpuCores']}`;
  if (field.startsWith('resourceLimits')) return 'container_services.resource_limits';
  if (field.startsWith('environmentVars')) return 'container_services.environment_vars';
  if (field.startsWith('secrets')) return 'container_service_secrets';
  const direct: Record<string, string> = {
    imageTag: 'container_deployments.image_tag',
    internalPort: 'container_deployments.internal_port',
    externalPort: 'container_deployments.external_port',
    slug: 'container_services.slug',
    id: 'container_deployments.id',
    serviceId: 'container_deployments.service_id',
    organizationId: 'container_services.organization_id',
  };
  return direct[field] ?? 'container_deployments';
}

function unmappable(row: DeploymentRow, reason: string): Record<string, unknown> {
  return { id: row.id, serviceId: row.service_id, organizationId: row.organization_id, slug: row.slug, unmappable: reason };
}

function mapRow(row: DeploymentRow, secrets: readonly SecretRow[], key: Buffer): Record<string, unknown> {
  const mappedSecrets: Record<string, unknown>[] = [];
  for (const s of secrets) {
    // Tenant isolation: a link to another organization's secret is a broken row, never served.
    if (s.secret_org !== row.organization_id) {
      return unmappable(row, `container_service_secrets.secret_id: secret "${s.name.slice(0, 64)}" belongs to another organization`);
    }
    let value: string;
    try {
      value = decryptSecret(s.encrypted_value, key);
    } catch (err) {
      if (!(err instanceof SecretDecryptError)) throw err;
      return unmappable(row, `container_secrets.encrypted_value: secret "${s.name.slice(0, 64)}" ${err.message}`);
    }
    mappedSecrets.push({ name: s.name, value, mountPath: s.mount_path, envVarName: s.env_var_name });
  }
  const deployment: Record<string, unknown> = {
    id: row.id,
    serviceId: row.service_id,
    organizationId: row.organization_id,
    slug: row.slug,
    imageTag: row.image_tag,
    desiredState: row.service_status === 'stopped' ? 'stopped' : 'running',
    replicas: 1,
    environmentVars: envVars(row.environment_vars),
    resourceLimits: resourceLimits(row.resource_limits),
    internalPort: row.internal_port,
    externalPort: row.external_port,
    secrets: mappedSecrets,
  };
  // The agent's own validator is the one source of the rules; a failure is translated to the column.
  const parsed = parseDeployment(deployment);
  if (!parsed.ok) return unmappable(row, `${columnOf(parsed.rejected.field)}: ${parsed.rejected.message}`);
  return deployment;
}

export async function loadDesiredSet(db: Queryable, workerId: string, key: Buffer): Promise<DesiredSet> {
  return (await loadDesiredSets(db, [workerId], key)).get(workerId)!;
}

/**
 * The sets of several workers in two queries (held calls woken together reload together); every
 * id asked for is in the map, an unknown worker with the empty set.
 */
export async function loadDesiredSets(db: Queryable, workerIds: readonly string[], key: Buffer): Promise<Map<string, DesiredSet>> {
  const { rows } = await db.query<DeploymentRow & { worker_id: string }>(
    `SELECT * FROM (
       SELECT d.worker_id, d.id, d.service_id, s.organization_id, s.slug, d.image_tag, d.internal_port, d.external_port,
              s.status AS service_status, s.environment_vars, s.resource_limits, d.created_at,
              row_number() OVER (PARTITION BY d.worker_id ORDER BY d.created_at, d.id) AS n
         FROM container_deployments d
         JOIN container_services s ON s.current_deployment_id = d.id
        WHERE d.worker_id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid) AND s.status IS DISTINCT FROM 'deleted'
     ) x WHERE n <= $2
     ORDER BY worker_id, created_at, id`,
    // JSON arrays rather than driver array parameters: embedded drivers serialise arrays differently.
    [JSON.stringify(workerIds), MAX_DEPLOYMENTS],
  );
  const secretsByService = new Map<string, SecretRow[]>();
  if (rows.length > 0) {
    const secretRows = await db.query<SecretRow>(
      `SELECT l.service_id, c.organization_id AS secret_org, c.name, c.encrypted_value, l.mount_path, l.env_var_name
         FROM container_service_secrets l
         JOIN container_secrets c ON c.id = l.secret_id
        WHERE l.service_id IN (SELECT jsonb_array_elements_text($1::jsonb)::uuid)
        ORDER BY l.service_id, c.name`,
      [JSON.stringify(rows.map((r) => r.service_id))],
    );
    for (const s of secretRows.rows) {
      const list = secretsByService.get(s.service_id) ?? [];
      list.push(s);
      secretsByService.set(s.service_id, list);
    }
  }
  const byWorker = new Map<string, Record<string, unknown>[]>();
  for (const r of rows) {
    const list = byWorker.get(r.worker_id.toLowerCase()) ?? [];
    list.push(mapRow(r, secretsByService.get(r.service_id) ?? [], key));
    byWorker.set(r.worker_id.toLowerCase(), list);
  }
  const out = new Map<string, DesiredSet>();
  for (const id of workerIds) {
    const deployments = byWorker.get(id.toLowerCase()) ?? [];
    const body = JSON.stringify({ success: true, data: { deployments } });
    out.set(id, { body, etag: strongEtag(body), count: deployments.length });
  }
  return out;
}
