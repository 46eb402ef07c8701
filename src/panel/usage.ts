import { describeIssue } from '../protocol/status-report.js';
import { usageBatchSchema, type UsageRecord } from '../protocol/usage.js';
import { UUID_RE, type Database, type Queryable } from './db.js';
import { type PanelReply } from './reply.js';

/**
 * Call 5: usage records into container_billing_cycles, one row per (service, billing_period_start)
 * however often a batch is replayed. A service can have several deployments in one period (a
 * rolling update replaces one with the next), so the row's metadata keeps each deployment's record
 * under "skypanelAgentUsage"; the row's amounts are the sum over them, and a record already listed
 * there is a duplicate. Rows SkyPanelV2's biller has moved past `pending` are never changed.
 */

/** Prices in the panel's currency; SkyPanelV2's ContainerBillingService constants by default. */
export interface UsagePrices {
  cpuCoreHour: number;
  memoryGbHour: number;
  storageGbHour: number;
  networkGb: number;
}

export const DEFAULT_PRICES: UsagePrices = { cpuCoreHour: 0.01, memoryGbHour: 0.005, storageGbHour: 0.000137, networkGb: 0.01 };

export interface UsageAnswer {
  accepted: number;
  duplicates: number;
  /** Records for a deployment this worker never ran, or that no longer exists: nothing to bill. */
  unknown: number;
  /** Records for a period whose row is already billed: acknowledged, not added. */
  late: number;
}

interface Contribution {
  workerId: string;
  periodEnd: string;
  cpuHours: number;
  memoryGbHours: number;
  storageGbHours: number;
  networkGb: number;
  samples: number;
  complete: boolean;
}

type Contributions = Record<string, Contribution>;

export function totalAmount(
  c: Contributions,
  prices: UsagePrices,
): { cpu: number; memory: number; storage: number; network: number; total: number; periodEnd: string } {
  let cpu = 0,
    memory = 0,
    storage = 0,
    network = 0,
    periodEnd = '';
  for (const r of Object.values(c)) {
    cpu += r.cpuHours;
    memory += r.memoryGbHours;
    storage += r.storageGbHours;
    network += r.networkGb;
    if (r.periodEnd > periodEnd) periodEnd = r.periodEnd;
  }
  const total = cpu * prices.cpuCoreHour + memory * prices.memoryGbHour + storage * prices.storageGbHour + network * prices.networkGb;
  return { cpu, memory, storage, network, total, periodEnd };
}

interface Owner {
  service_id: string;
  organization_id: string;
}

/** The deployment's service and organization as the tables say (the record's own ids are not trusted). */
async function ownerOf(tx: Queryable, workerId: string, deploymentId: string): Promise<Owner | undefined> {
  if (!UUID_RE.test(deploymentId)) return undefined;
  const { rows } = await tx.query<Owner>(
    `SELECT d.service_id, s.organization_id
       FROM container_deployments d
       JOIN container_services s ON s.id = d.service_id
       LEFT JOIN skypanel_agent_deployment_reports r ON r.deployment_id = d.id
      WHERE d.id = $1 AND (d.worker_id = $2 OR r.worker_id = $2)`,
    [deploymentId, workerId],
  );
  return rows[0];
}

function contributionOf(workerId: string, r: UsageRecord): Contribution {
  return {
    workerId,
    periodEnd: new Date(r.periodEnd).toISOString(),
    cpuHours: r.cpuHours,
    memoryGbHours: r.memoryGbHours,
    storageGbHours: r.storageGbHours,
    networkGb: r.networkGb,
    samples: r.samples,
    complete: r.complete,
  };
}

async function recordOne(tx: Queryable, workerId: string, r: UsageRecord, prices: UsagePrices, answer: UsageAnswer): Promise<void> {
  const owner = await ownerOf(tx, workerId, r.deploymentId);
  if (owner === undefined) {
    answer.unknown++;
    return;
  }
  const periodStart = new Date(r.periodStart).toISOString();
  const mine: Contributions = { [r.deploymentId.toLowerCase()]: contributionOf(workerId, r) };
  const sums = totalAmount(mine, prices);
  const inserted = await tx.query(
    `INSERT INTO container_billing_cycles (service_id, organization_id, billing_period_start, billing_period_end,
        cpu_hours, memory_gb_hours, storage_gb_hours, network_gb, total_amount, status, metadata)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10)
     ON CONFLICT (service_id, billing_period_start) WHERE (metadata ? 'skypanelAgentUsage') DO NOTHING
     RETURNING id`,
    [
      owner.service_id,
      owner.organization_id,
      periodStart,
      sums.periodEnd,
      sums.cpu,
      sums.memory,
      sums.storage,
      sums.network,
      sums.total,
      JSON.stringify({ skypanelAgentUsage: mine }),
    ],
  );
  if (inserted.rows.length > 0) {
    answer.accepted++;
    return;
  }
  const { rows } = await tx.query<{ id: string; status: string | null; usage: unknown }>(
    `SELECT id, status, metadata->'skypanelAgentUsage' AS usage FROM container_billing_cycles
      WHERE service_id = $1 AND billing_period_start = $2 AND metadata ? 'skypanelAgentUsage'
      FOR UPDATE`,
    [owner.service_id, periodStart],
  );
  const row = rows[0];
  const held = (row?.usage ?? {}) as Contributions;
  if (row === undefined || Object.hasOwn(held, r.deploymentId.toLowerCase())) {
    answer.duplicates++;
    return;
  }
  if (row.status !== 'pending') {
    answer.late++;
    return;
  }
  const merged: Contributions = { ...held, ...mine };
  const total = totalAmount(merged, prices);
  await tx.query(
    `UPDATE container_billing_cycles
        SET billing_period_end = $2, cpu_hours = $3, memory_gb_hours = $4, storage_gb_hours = $5, network_gb = $6,
            total_amount = $7, metadata = jsonb_set(metadata, '{skypanelAgentUsage}', $8::jsonb)
      WHERE id = $1`,
    [row.id, total.periodEnd, total.cpu, total.memory, total.storage, total.network, total.total, JSON.stringify(merged)],
  );
  answer.accepted++;
}

/** POST /api/workers/:id/usage: the whole batch in one transaction, so a failure leaves nothing half-counted. */
export async function handleUsage(db: Database, workerId: string, body: unknown, prices: UsagePrices): Promise<PanelReply> {
  const parsed = usageBatchSchema.safeParse(body);
  if (!parsed.success) {
    const { field, message } = describeIssue(parsed.error);
    return { status: 400, body: { success: false, error: { code: 'VALIDATION_ERROR', message, field } } };
  }
  const answer: UsageAnswer = { accepted: 0, duplicates: 0, unknown: 0, late: 0 };
  await db.transaction(async (tx) => {
    for (const record of parsed.data.records) await recordOne(tx, workerId, record, prices, answer);
  });
  return { status: 200, body: { success: true, data: answer } };
}
