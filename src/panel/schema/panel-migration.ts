import type { Database } from '../db.js';

/**
 * The panel's own migration: it only ADDS objects named skypanel_agent_* and never alters a
 * SkyPanelV2 column, so SkyPanelV2's code and later migrations keep working beside it. Idempotent;
 * `skypanel-agent panel` applies it at start (under an advisory lock, so two panels starting
 * together do not race). docs/PANEL.md explains each object to operators.
 */
export const PANEL_MIGRATION_STATEMENTS: readonly string[] = [
  `
-- The last status report applied per deployment, so a late or replayed report never overwrites a
-- newer one. container_deployments has no column for it (and no JSONB column to borrow).
-- worker_id has no foreign key: the order must hold even after the worker row is gone.
CREATE TABLE IF NOT EXISTS skypanel_agent_deployment_reports (
  deployment_id UUID PRIMARY KEY REFERENCES container_deployments(id) ON DELETE CASCADE,
  worker_id UUID NOT NULL,
  boot_id VARCHAR(64) NOT NULL,
  seq BIGINT NOT NULL,
  reported_at TIMESTAMP WITH TIME ZONE NOT NULL,
  applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);`,
  `
-- Workers an admin deleted. SkyPanelV2 deletes the row outright, and its register route would
-- insert it again for the same token; the panel refuses a tombstoned worker id instead.
CREATE TABLE IF NOT EXISTS skypanel_agent_deleted_workers (
  worker_id UUID PRIMARY KEY,
  deleted_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);`,
  `
CREATE OR REPLACE FUNCTION skypanel_agent_remember_deleted_worker()
RETURNS TRIGGER AS $fn$
BEGIN
  INSERT INTO skypanel_agent_deleted_workers (worker_id) VALUES (OLD.id) ON CONFLICT DO NOTHING;
  RETURN OLD;
END;
$fn$ LANGUAGE plpgsql;`,
  `
DROP TRIGGER IF EXISTS skypanel_agent_worker_deleted ON container_workers;`,
  `
CREATE TRIGGER skypanel_agent_worker_deleted AFTER DELETE ON container_workers
  FOR EACH ROW EXECUTE FUNCTION skypanel_agent_remember_deleted_worker();`,
  `
-- One usage row per (service, period start) among the rows this panel writes (their metadata
-- carries "skypanelAgentUsage"). Partial, so rows SkyPanelV2's own estimating biller wrote for
-- the same start neither block this migration nor its inserts.
CREATE UNIQUE INDEX IF NOT EXISTS skypanel_agent_billing_period
  ON container_billing_cycles (service_id, billing_period_start)
  WHERE (metadata ? 'skypanelAgentUsage');`,
];

/** Any 64-bit constant works; this one is "skypanel" in ASCII, so it is recognisable in pg_locks. */
const MIGRATION_LOCK = '8316874660447675756';

export async function applyPanelMigration(db: Database): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
    // One statement per call: embedded drivers (PGlite) run a single statement per query.
    for (const statement of PANEL_MIGRATION_STATEMENTS) await tx.query(statement);
  });
}
