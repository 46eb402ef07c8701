export {
  createReferenceControlPlane,
  startReferenceControlPlane,
  type ReferenceControlPlane,
} from './server.js';
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
} from './jwt.js';
export type {
  Fault,
  RateLimitOptions,
  ReferenceControlPlaneOptions,
  RequestRecord,
  WorkerLoad,
  WorkerRow,
  WorkerStatus,
} from './types.js';
export { isValidIpAddress, validateMetrics, validateWorkerInfo } from './skypanel-validation.js';
