import { LABEL } from '../../domain/labels.js';
import { unusedSecrets } from '../../domain/secret-gc.js';
import type { SwarmPort } from '../../ports.js';
import type { Logger } from '../logger.js';

/**
 * A secret Swarm would not remove (a service it cannot see uses it: another worker's copy of a
 * deployment that moved here and back), or a sweep that failed, is tried again after this.
 */
export const SECRET_SWEEP_RETRY_MS = 5 * 60_000;

/**
 * Removes this worker's Swarm secrets that nothing uses any more (domain/secret-gc.ts decides).
 * Listing secrets is an Engine call a steady pass does not need, so a sweep runs only when the
 * set of secrets in use changed since the last complete one (a rotation, a removal, an old task
 * that stopped), at the first pass after start (leftovers of an earlier run), and again after
 * SECRET_SWEEP_RETRY_MS while one is left that could not be removed.
 */
export class SecretSweeper {
  #swept: ReadonlySet<string> | undefined;
  #retryAt = Number.POSITIVE_INFINITY;

  constructor(
    private readonly port: Pick<SwarmPort, 'listSecrets' | 'removeSecret'>,
    private readonly workerId: string,
    private readonly logger: Logger,
  ) {}

  /** Never throws: a failed sweep is logged and tried again later; it must not fail the pass. */
  async sweep(inUse: ReadonlySet<string>, now: number): Promise<void> {
    if (this.#swept !== undefined && sameSet(this.#swept, inUse) && now < this.#retryAt) return;
    let left = 0;
    try {
      for (const s of unusedSecrets(await this.port.listSecrets(), inUse, this.workerId)) {
        if (await this.port.removeSecret(s.id)) {
          this.logger.info({ secretName: s.name, deploymentId: s.labels?.[LABEL.deploymentId] }, 'unused secret removed');
        } else {
          this.logger.debug({ secretName: s.name }, 'unused secret still referenced by a service this worker does not own; kept for now');
          left++;
        }
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'removing unused secrets failed; trying again later');
      left++;
    }
    this.#swept = inUse;
    this.#retryAt = left > 0 ? now + SECRET_SWEEP_RETRY_MS : Number.POSITIVE_INFINITY;
  }
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
