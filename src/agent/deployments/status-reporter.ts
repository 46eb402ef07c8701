import type { Deployment } from '../../protocol/deployment.js';
import type { RejectedDeployment } from '../../protocol/deployment.js';
import type { ReportContent, ReportOutbox } from './report-outbox.js';
import type { StatusChange } from './reconciler.js';
import { redact, type SecretLike } from '../../secret.js';

/** deploymentLogs is a tail of at most 64 KiB (protocol v1). */
export const MAX_LOG_BYTES = 64 * 1024;

/** A report's message is cut to this many characters, after redaction. */
export const MAX_MESSAGE_CHARS = 4096;

export function tailBytes(lines: readonly string[], maxBytes = MAX_LOG_BYTES): string {
  const kept: string[] = [];
  let size = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    const n = Buffer.byteLength(lines[i]!) + 1;
    if (size + n > maxBytes) break;
    kept.unshift(lines[i]!);
    size += n;
  }
  return kept.join('\n');
}

export function secretValuesOf(deployments: readonly Deployment[]): string[] {
  const out: string[] = [];
  for (const d of deployments) {
    for (const s of d.secrets ?? []) out.push(s.value.reveal());
    if (d.registryAuth) out.push(d.registryAuth.password.reveal());
  }
  return out;
}

/**
 * Turns the reconciler's per-pass statuses into reports and hands them to the outbox, which keeps
 * only those that changed. deployedAt is when a deployment was first seen running, stoppedAt when it
 * was first seen stopped; both survive restarts through the outbox's last sent reports.
 */
export class StatusReporter {
  readonly #outbox: ReportOutbox;
  readonly #secrets: () => readonly SecretLike[];
  /** Per deployment: lifecycle times, and the log tail taken when it failed (kept while it stays failed). */
  readonly #times = new Map<string, { deployedAt?: string; stoppedAt?: string; logs?: string }>();

  constructor(outbox: ReportOutbox, secrets: () => readonly SecretLike[]) {
    this.#outbox = outbox;
    this.#secrets = secrets;
  }

  publish(changes: readonly StatusChange[], rejected: readonly RejectedDeployment[]): void {
    const now = new Date().toISOString();
    for (const c of changes) {
      const last = this.#outbox.lastReported(c.deploymentId);
      const t = this.#times.get(c.deploymentId) ?? { deployedAt: last?.deployedAt, stoppedAt: last?.stoppedAt };
      if (c.derived.status === 'running') {
        t.deployedAt ??= now;
        t.stoppedAt = undefined;
      }
      if (c.derived.status === 'stopped') t.stoppedAt ??= now;
      // Logs are read once, when a deployment turns failed; later passes must not report them away.
      if (c.derived.status !== 'failed') t.logs = undefined;
      else if (c.logs && c.logs.length > 0) {
        // Every line is redacted before the tail is cut, so the cut cannot split a secret.
        const secrets = this.#secrets();
        t.logs = tailBytes(c.logs.map((l) => redact(l, secrets)));
      }
      this.#times.set(c.deploymentId, t);
      const content: ReportContent = { status: c.derived.status };
      if (c.derived.swarmServiceId) content.swarmServiceId = c.derived.swarmServiceId;
      if (c.derived.containerId) content.containerId = c.derived.containerId;
      if (c.publicUrl) content.publicUrl = c.publicUrl;
      if (c.derived.externalPort !== null) content.externalPort = c.derived.externalPort;
      if (c.derived.message) content.message = redact(c.derived.message, this.#secrets(), { maxLength: MAX_MESSAGE_CHARS });
      if (t.logs) content.deploymentLogs = t.logs;
      if (t.deployedAt) content.deployedAt = t.deployedAt;
      if (t.stoppedAt) content.stoppedAt = t.stoppedAt;
      if (c.derived.status === 'stopped' && c.derived.desiredReplicas === 0 && c.derived.swarmServiceId === null)
        this.#times.delete(c.deploymentId);
      this.#outbox.offer(c.deploymentId, content);
    }
    // A deployment the agent cannot even parse is failed, with the field and rule that broke it.
    for (const r of rejected) {
      if (r.id === null) continue;
      this.#outbox.offer(r.id, {
        status: 'failed',
        message: redact(`invalid deployment: ${r.message}`, this.#secrets(), { maxLength: MAX_MESSAGE_CHARS }),
      });
    }
  }
}
