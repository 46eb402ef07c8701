import { describeIssue, statusReportSchema, type ReportedStatus, type StatusReport } from '../protocol/status-report.js';
import { toDate, UUID_RE, type Database } from './db.js';
import { failure, type PanelReply } from './reply.js';

/**
 * Call 4: a status report into container_deployments and, when the deployment is its service's
 * current one, the service's status and public_url; one transaction, applied only when newer than
 * the last report applied to that deployment (skypanel_agent_deployment_reports).
 */

/** container_deployments.public_url is VARCHAR(500); a longer URL leaves the column as it was. */
const PUBLIC_URL_COLUMN_MAX = 500;

/** What the service row says while its current deployment is in each reported state. */
const SERVICE_STATUS: Record<ReportedStatus, string> = {
  deploying: 'deploying',
  running: 'running',
  stopped: 'stopped',
  failed: 'failed',
  // Swarm rolled the update back: the previous version serves, so the service is running.
  rolled_back: 'running',
};

interface TargetRow {
  service_id: string;
  worker_id: string | null;
  current_deployment_id: string | null;
  service_status: string | null;
  boot_id: string | null;
  seq: string | number | null;
  reported_at: unknown;
}

/**
 * Newer means: a later seq within the same agent run; across runs (the agent restarted, seq began
 * again at 1), a later reportedAt. Equal is not newer, so a replay changes nothing.
 */
export function isNewer(
  report: Pick<StatusReport, 'bootId' | 'seq' | 'reportedAt'>,
  last: { bootId: string; seq: number; reportedAt: Date } | null,
): boolean {
  if (last === null) return true;
  if (report.bootId === last.bootId) return report.seq > last.seq;
  return Date.parse(report.reportedAt) > last.reportedAt.getTime();
}

const NOT_FOUND = failure(404, 'DEPLOYMENT_NOT_FOUND', 'Deployment is not assigned to this worker');

export async function handleStatusReport(db: Database, workerId: string, deploymentId: string, body: unknown): Promise<PanelReply> {
  const parsed = statusReportSchema.safeParse(body);
  if (!parsed.success) {
    const { field, message } = describeIssue(parsed.error);
    return { status: 400, body: { success: false, error: { code: 'VALIDATION_ERROR', message, field } } };
  }
  if (!UUID_RE.test(deploymentId)) return NOT_FOUND;
  const report = parsed.data;
  return db.transaction(async (tx): Promise<PanelReply> => {
    const { rows } = await tx.query<TargetRow>(
      `SELECT d.service_id, d.worker_id, s.current_deployment_id, s.status AS service_status, r.boot_id, r.seq, r.reported_at
         FROM container_deployments d
         JOIN container_services s ON s.id = d.service_id
         LEFT JOIN skypanel_agent_deployment_reports r ON r.deployment_id = d.id
        WHERE d.id = $1
        FOR UPDATE OF d`,
      [deploymentId],
    );
    const target = rows[0];
    // A deployment moved to another worker belongs to that worker's reports now.
    if (target === undefined || target.worker_id !== workerId) return NOT_FOUND;
    const last =
      target.boot_id === null
        ? null
        : { bootId: target.boot_id, seq: Number(target.seq), reportedAt: toDate(target.reported_at) ?? new Date(0) };
    if (!isNewer(report, last)) return { status: 200, body: { success: true, data: { applied: false } } };

    const publicUrl = report.publicUrl !== undefined && report.publicUrl.length <= PUBLIC_URL_COLUMN_MAX ? report.publicUrl : null;
    // The agent sends logs when a deployment fails; its one-line message stands in when there are none.
    const logs = report.deploymentLogs ?? (report.status === 'failed' || report.status === 'rolled_back' ? (report.message ?? null) : null);
    await tx.query(
      `UPDATE container_deployments
          SET status = $2,
              swarm_service_id = COALESCE($3, swarm_service_id),
              container_id = COALESCE($4, container_id),
              public_url = COALESCE($5, public_url),
              deployment_logs = COALESCE($6, deployment_logs),
              deployed_at = COALESCE($7, deployed_at),
              stopped_at = $8
        WHERE id = $1`,
      [
        deploymentId,
        report.status,
        report.swarmServiceId ?? null,
        report.containerId ?? null,
        publicUrl,
        logs,
        report.deployedAt ?? null,
        report.stoppedAt ?? null,
      ],
    );
    // The service row follows its current deployment only; 'stopped' and 'deleted' are the owner's
    // decisions, which a report (perhaps one sent before the decision) must not undo.
    if (target.current_deployment_id === deploymentId && target.service_status !== 'deleted' && target.service_status !== 'stopped') {
      await tx.query('UPDATE container_services SET status = $2, public_url = COALESCE($3, public_url) WHERE id = $1', [
        target.service_id,
        SERVICE_STATUS[report.status],
        publicUrl,
      ]);
    }
    await tx.query(
      `INSERT INTO skypanel_agent_deployment_reports (deployment_id, worker_id, boot_id, seq, reported_at)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (deployment_id) DO UPDATE
         SET worker_id = EXCLUDED.worker_id, boot_id = EXCLUDED.boot_id, seq = EXCLUDED.seq,
             reported_at = EXCLUDED.reported_at, applied_at = NOW()`,
      [deploymentId, workerId, report.bootId, report.seq, report.reportedAt],
    );
    return { status: 200, body: { success: true, data: { applied: true } } };
  });
}
