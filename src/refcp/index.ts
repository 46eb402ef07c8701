export { createReferenceControlPlane, startReferenceControlPlane, type ReferenceControlPlane } from './server.js';
export {
  WORKER_TOKEN_LIFETIME_SECONDS,
  hashToken,
  signJwt,
  signWorkerToken,
  verify,
  type JwtPayload,
  type SignWorkerTokenOptions,
  type VerifyFailure,
  type VerifyOptions,
  type VerifyResult,
  type WorkerTokenClaims,
} from '../skypanel/jwt.js';
export type {
  Fault,
  RateLimitOptions,
  ReferenceControlPlaneOptions,
  RequestRecord,
  StatusReportRecord,
  WorkerLoad,
  WorkerRow,
  WorkerStatus,
} from './types.js';
export type { DeploymentsControl } from './extension-store.js';
export { etagMatches, strongEtag } from '../protocol/etag.js';
export { adminTokenMatches } from './admin-routes.js';
export { isValidIpAddress, validateMetrics, validateWorkerInfo } from '../skypanel/validation.js';
