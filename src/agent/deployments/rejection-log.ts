import { createHash } from 'node:crypto';
import type { RejectedDeployment } from '../../protocol/deployment.js';
import type { Logger } from '../logger.js';

/**
 * Logs each rejected deployment once per content: a panel that sends the same rejected entries
 * with every poll (no ETag, so no 304) would otherwise write one warning per entry per poll, which
 * at 1000 entries and 1 s polls buries everything else. What was logged is remembered only for the
 * entries of the latest set (at most its 1000 entries), so memory stays bounded and a deployment
 * that leaves the set and comes back is logged again.
 */
export class RejectionLog {
  #logged = new Map<string, string>();

  /** `list` is the raw `data.deployments` array the rejections came from: their content is what a change is judged by. */
  note(rejected: readonly RejectedDeployment[], list: readonly unknown[], logger: Logger): void {
    if (rejected.length === 0 && this.#logged.size === 0) return;
    const wanted = new Set(rejected.map((r) => r.id));
    const contentById = new Map<string, string>();
    for (const raw of list) {
      const id = raw !== null && typeof raw === 'object' ? (raw as Record<string, unknown>).id : undefined;
      if (typeof id === 'string' && wanted.has(id) && !contentById.has(id)) contentById.set(id, fingerprint(raw));
    }
    const next = new Map<string, string>();
    rejected.forEach((r, i) => {
      // An entry without a usable id has nothing stable to be known by but its place and its fault.
      const key = r.id ?? `#${i}:${r.field}`;
      const seen = `${r.field}\u0000${r.message}\u0000${r.id === null ? '' : (contentById.get(r.id) ?? '')}`;
      next.set(key, seen);
      if (this.#logged.get(key) !== seen) logger.warn({ deploymentId: r.id, field: r.field }, `deployment rejected: ${r.message}`);
    });
    this.#logged = next;
  }
}

function fingerprint(raw: unknown): string {
  try {
    return createHash('sha256')
      .update(JSON.stringify(raw) ?? '')
      .digest('base64url');
  } catch {
    // Too deep or too big to serialise: the rejection's field and message still tell changes apart.
    return '';
  }
}
