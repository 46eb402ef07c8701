import type { CallResult } from './control-plane-client.js';

/**
 * What a control-plane answer means to a loop, decided in one place so every loop reads a 404 the
 * same way. The calls beyond stock SkyPanelV2 (deployments, status, usage) are extensions: a panel
 * without them answers 404 with no WORKER_NOT_FOUND code, and the loop waits and asks again later.
 * A 404 naming WORKER_NOT_FOUND means the panel lost this worker's row, whichever call it answered.
 * The heartbeat is a stock call, so any 404 on it means the row is gone.
 */
export type ResponseClass =
  /** 2xx with a body (or none needed). */
  | 'ok'
  /** 304: what the caller holds is current. */
  | 'not-modified'
  /** 404 from a panel without this extension call. */
  | 'extension-missing'
  /** 404 WORKER_NOT_FOUND (or any 404 on a stock call): register again. */
  | 'worker-gone'
  /** The panel named a wait (Retry-After on a 429 or 503): honour it (capped, retry-after.ts). */
  | 'retry-after'
  /** 400 / 413, or 404 DEPLOYMENT_NOT_FOUND: this request will never be accepted; drop it. */
  | 'refused'
  /** Anything else (network, timeout, 5xx, 401/403, an unusable body): back off and try again. */
  | 'failed';

export interface ClassifyOptions {
  /** The call is one of the extensions (default); false for stock calls such as the heartbeat. */
  extension?: boolean;
}

export function classifyResponse(res: CallResult, opts: ClassifyOptions = {}): ResponseClass {
  if (res.ok) return res.status === 304 ? 'not-modified' : 'ok';
  if (res.kind === 'http') {
    if (res.status === 404) {
      if (res.code === 'WORKER_NOT_FOUND' || opts.extension === false) return 'worker-gone';
      // The one 404 that names the request's subject: the status call for a deployment the panel does not assign here.
      return res.code === 'DEPLOYMENT_NOT_FOUND' ? 'refused' : 'extension-missing';
    }
    if (res.status === 400 || res.status === 413) return 'refused';
  }
  return res.retryAfterMs !== undefined ? 'retry-after' : 'failed';
}
