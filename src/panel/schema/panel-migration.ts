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
  `
-- Wakes the blocking desired-set query (GET .../deployments?wait=N): every write that can change
-- a worker's desired set NOTIFYs channel skypanel_agent_desired with that worker's id, whoever
-- makes it (the panel, SkyPanelV2's own code, plain SQL). NOTIFY is delivered at COMMIT and
-- folded per transaction, so a transaction touching many rows of one worker sends it one message.
CREATE OR REPLACE FUNCTION skypanel_agent_notify_desired()
RETURNS TRIGGER AS $fn$
DECLARE
  ids UUID[] := ARRAY[]::UUID[];
  w UUID;
BEGIN
  IF TG_TABLE_NAME = 'container_deployments' THEN
    IF TG_OP <> 'INSERT' THEN ids := ids || OLD.worker_id; END IF;
    IF TG_OP <> 'DELETE' THEN ids := ids || NEW.worker_id; END IF;
  ELSIF TG_TABLE_NAME = 'container_services' THEN
    IF TG_OP <> 'INSERT' THEN
      ids := ids || ARRAY(SELECT worker_id FROM container_deployments WHERE id = OLD.current_deployment_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
      ids := ids || ARRAY(SELECT worker_id FROM container_deployments WHERE id = NEW.current_deployment_id);
    END IF;
  ELSIF TG_TABLE_NAME = 'container_service_secrets' THEN
    IF TG_OP <> 'INSERT' THEN
      ids := ids || ARRAY(SELECT d.worker_id FROM container_services s JOIN container_deployments d ON d.id = s.current_deployment_id WHERE s.id = OLD.service_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
      ids := ids || ARRAY(SELECT d.worker_id FROM container_services s JOIN container_deployments d ON d.id = s.current_deployment_id WHERE s.id = NEW.service_id);
    END IF;
  ELSIF TG_TABLE_NAME = 'container_secrets' THEN
    ids := ids || ARRAY(SELECT d.worker_id FROM container_service_secrets l
      JOIN container_services s ON s.id = l.service_id JOIN container_deployments d ON d.id = s.current_deployment_id
      WHERE l.secret_id = OLD.id);
  END IF;
  FOR w IN SELECT DISTINCT x FROM unnest(ids) AS x WHERE x IS NOT NULL LOOP
    PERFORM pg_notify('skypanel_agent_desired', w::text);
  END LOOP;
  RETURN NULL;
END;
$fn$ LANGUAGE plpgsql;`,
  // Updates only of the columns the desired set is built from: status reports and SkyPanelV2's
  // bookkeeping (deployed_at, public_url, 'deploying' → 'running') wake nobody.
  'DROP TRIGGER IF EXISTS skypanel_agent_desired_deployments ON container_deployments;',
  `CREATE TRIGGER skypanel_agent_desired_deployments AFTER INSERT OR DELETE OR UPDATE OF worker_id, service_id, image_tag, internal_port, external_port, created_at
  ON container_deployments FOR EACH ROW EXECUTE FUNCTION skypanel_agent_notify_desired();`,
  'DROP TRIGGER IF EXISTS skypanel_agent_desired_services ON container_services;',
  `CREATE TRIGGER skypanel_agent_desired_services AFTER UPDATE ON container_services FOR EACH ROW
  WHEN (OLD.current_deployment_id IS DISTINCT FROM NEW.current_deployment_id
     OR OLD.organization_id IS DISTINCT FROM NEW.organization_id
     OR OLD.slug IS DISTINCT FROM NEW.slug
     OR OLD.environment_vars IS DISTINCT FROM NEW.environment_vars
     OR OLD.resource_limits IS DISTINCT FROM NEW.resource_limits
     OR (COALESCE(OLD.status, '') = 'stopped') <> (COALESCE(NEW.status, '') = 'stopped')
     OR (COALESCE(OLD.status, '') = 'deleted') <> (COALESCE(NEW.status, '') = 'deleted'))
  EXECUTE FUNCTION skypanel_agent_notify_desired();`,
  'DROP TRIGGER IF EXISTS skypanel_agent_desired_services_gone ON container_services;',
  `CREATE TRIGGER skypanel_agent_desired_services_gone AFTER DELETE ON container_services
  FOR EACH ROW EXECUTE FUNCTION skypanel_agent_notify_desired();`,
  'DROP TRIGGER IF EXISTS skypanel_agent_desired_service_secrets ON container_service_secrets;',
  `CREATE TRIGGER skypanel_agent_desired_service_secrets AFTER INSERT OR UPDATE OR DELETE ON container_service_secrets
  FOR EACH ROW EXECUTE FUNCTION skypanel_agent_notify_desired();`,
  'DROP TRIGGER IF EXISTS skypanel_agent_desired_secrets ON container_secrets;',
  `CREATE TRIGGER skypanel_agent_desired_secrets AFTER UPDATE OF name, organization_id, encrypted_value ON container_secrets
  FOR EACH ROW EXECUTE FUNCTION skypanel_agent_notify_desired();`,
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
