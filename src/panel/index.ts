/**
 * `skypanel-agent/panel`: the control-plane half of the protocol on SkyPanelV2's own tables.
 * See docs/PANEL.md for the mapping, the additive migration and the two ways to wire it in.
 */
export { pgPoolDatabase, type Database, type Queryable, type PgPoolLike } from './db.js';
export {
  createPanelHandler,
  matchPanelRoute,
  type PanelHandler,
  type PanelLogger,
  type PanelOptions,
  type PanelRequest,
  type PanelRoute,
} from './handler.js';
export { createPanelMiddleware, type PanelMiddleware, type NextFunction } from './http.js';
export { startPanelServer, type PanelServer, type PanelServerOptions } from './server.js';
export { HealthMonitor } from './health-monitor.js';
export { DesiredFeed, DESIRED_CHANNEL, type ListenClient, type ListenConnector } from './desired-feed.js';
export { DEFAULT_MAX_WAIT_SEC } from './blocking-query.js';
export { DEFAULT_HEALTH, type HealthOptions } from './health.js';
export { DEFAULT_HEARTBEAT_BATCH, type HeartbeatBatchOptions } from './heartbeat-batcher.js';
export { DEFAULT_PRICES, type UsagePrices } from './usage.js';
export { encryptSecret, decryptSecret, secretKey } from './crypto.js';
export { applyPanelMigration, PANEL_MIGRATION_STATEMENTS } from './schema/panel-migration.js';
export { CONTAINER_PLATFORM_SQL } from './schema/container-platform.js';
export { SKYPANEL_BASE_SQL } from './schema/base.js';
export { DEFAULT_SEED, seedDeployment, seedOrganization, type SeedDeployment } from './dev-seed.js';
export type { PanelReply } from './reply.js';
