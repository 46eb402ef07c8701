/**
 * SkyPanelV2's container-platform tables as its migrations 002 (tables, constraints, indexes,
 * updated_at triggers), 003 (organization quota columns and the quota trigger on
 * container_services, which fires on every service status this panel writes) and 004 (secret
 * history) leave them, so the panel is tested against the schema it will meet. Written for this
 * package from those migrations' column lists; the application-template seed rows are left out.
 * Requires SKYPANEL_BASE_SQL (or a real SkyPanelV2 001) first.
 */
export const CONTAINER_PLATFORM_SQL = `
CREATE TABLE container_workers (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  name VARCHAR(255) NOT NULL,
  hostname VARCHAR(255) NOT NULL,
  ip_address INET NOT NULL,
  swarm_node_id VARCHAR(255) UNIQUE,
  auth_token_hash VARCHAR(255) NOT NULL,
  status VARCHAR(50) DEFAULT 'pending'
    CHECK (status IN ('pending', 'active', 'unhealthy', 'draining', 'offline')),
  capacity JSONB NOT NULL DEFAULT '{"cpu_cores": 0, "memory_mb": 0, "disk_gb": 0}',
  current_load JSONB NOT NULL
    DEFAULT '{"cpu_percent": 0, "memory_percent": 0, "disk_percent": 0, "container_count": 0}',
  last_heartbeat_at TIMESTAMP WITH TIME ZONE,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE TABLE application_templates (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  name VARCHAR(255) NOT NULL,
  description TEXT,
  category VARCHAR(100) NOT NULL
    CHECK (category IN ('web', 'api', 'worker', 'database', 'static', 'custom')),
  icon_url VARCHAR(500),
  nix_expression TEXT NOT NULL,
  default_env_vars JSONB DEFAULT '{}',
  default_resource_limits JSONB NOT NULL DEFAULT '{"cpu_cores": 1, "memory_mb": 512, "disk_gb": 10}',
  is_active BOOLEAN DEFAULT TRUE,
  display_order INTEGER DEFAULT 0,
  is_multi_service BOOLEAN DEFAULT FALSE,
  services JSONB DEFAULT NULL,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE TABLE container_services (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  name VARCHAR(255) NOT NULL,
  slug VARCHAR(255) NOT NULL,
  template_id UUID REFERENCES application_templates(id) ON DELETE SET NULL,
  git_repository VARCHAR(500),
  git_branch VARCHAR(255) DEFAULT 'main',
  build_config JSONB NOT NULL DEFAULT '{"environment_type": "nix"}',
  environment_vars JSONB DEFAULT '{}',
  resource_limits JSONB NOT NULL DEFAULT '{"cpu_cores": 1, "memory_mb": 512, "disk_gb": 10}',
  status VARCHAR(50) DEFAULT 'pending'
    CHECK (status IN ('pending', 'building', 'deploying', 'running', 'stopped', 'failed', 'deleted')),
  current_deployment_id UUID,
  public_url VARCHAR(500),
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  UNIQUE (organization_id, slug)
);

CREATE TABLE container_deployments (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  service_id UUID NOT NULL REFERENCES container_services(id) ON DELETE CASCADE,
  worker_id UUID REFERENCES container_workers(id) ON DELETE SET NULL,
  swarm_service_id VARCHAR(255),
  container_id VARCHAR(255),
  image_tag VARCHAR(255) NOT NULL,
  status VARCHAR(50) DEFAULT 'pending'
    CHECK (status IN ('pending', 'building', 'deploying', 'running', 'stopped', 'failed', 'rolled_back')),
  build_logs TEXT,
  deployment_logs TEXT,
  public_url VARCHAR(500),
  internal_port INTEGER,
  external_port INTEGER,
  deployed_at TIMESTAMP WITH TIME ZONE,
  stopped_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

ALTER TABLE container_services ADD CONSTRAINT fk_current_deployment
  FOREIGN KEY (current_deployment_id) REFERENCES container_deployments(id) ON DELETE SET NULL;

CREATE TABLE container_builds (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  service_id UUID NOT NULL REFERENCES container_services(id) ON DELETE CASCADE,
  deployment_id UUID REFERENCES container_deployments(id) ON DELETE SET NULL,
  git_commit_sha VARCHAR(255),
  build_status VARCHAR(50) DEFAULT 'pending'
    CHECK (build_status IN ('pending', 'building', 'success', 'failed', 'cancelled')),
  build_logs TEXT,
  image_tag VARCHAR(255),
  build_duration_seconds INTEGER,
  artifact_size_mb DECIMAL(10,2),
  started_at TIMESTAMP WITH TIME ZONE,
  completed_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE TABLE container_secrets (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  name VARCHAR(255) NOT NULL,
  encrypted_value TEXT NOT NULL,
  created_by UUID NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  last_rotated_at TIMESTAMP WITH TIME ZONE,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  UNIQUE (organization_id, name)
);

CREATE TABLE container_service_secrets (
  service_id UUID NOT NULL REFERENCES container_services(id) ON DELETE CASCADE,
  secret_id UUID NOT NULL REFERENCES container_secrets(id) ON DELETE CASCADE,
  mount_path VARCHAR(500),
  env_var_name VARCHAR(255),
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  PRIMARY KEY (service_id, secret_id)
);

CREATE TABLE container_billing_cycles (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  service_id UUID NOT NULL REFERENCES container_services(id) ON DELETE CASCADE,
  organization_id UUID NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  billing_period_start TIMESTAMP WITH TIME ZONE NOT NULL,
  billing_period_end TIMESTAMP WITH TIME ZONE NOT NULL,
  cpu_hours DECIMAL(10,2) NOT NULL,
  memory_gb_hours DECIMAL(10,2) NOT NULL,
  storage_gb_hours DECIMAL(10,2) NOT NULL,
  network_gb DECIMAL(10,4) NOT NULL,
  build_minutes INTEGER DEFAULT 0,
  total_amount DECIMAL(10,2) NOT NULL,
  status VARCHAR(50) DEFAULT 'pending' CHECK (status IN ('pending', 'billed', 'failed', 'refunded')),
  payment_transaction_id UUID,
  metadata JSONB DEFAULT '{}',
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
  updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE INDEX idx_container_workers_status ON container_workers(status);
CREATE INDEX idx_container_workers_last_heartbeat ON container_workers(last_heartbeat_at);
CREATE INDEX idx_container_workers_swarm_node ON container_workers(swarm_node_id);
CREATE INDEX idx_application_templates_category ON application_templates(category);
CREATE INDEX idx_application_templates_active ON application_templates(is_active);
CREATE INDEX idx_application_templates_display_order ON application_templates(display_order);
CREATE INDEX idx_container_services_org ON container_services(organization_id);
CREATE INDEX idx_container_services_status ON container_services(status);
CREATE INDEX idx_container_services_template ON container_services(template_id);
CREATE INDEX idx_container_services_slug ON container_services(organization_id, slug);
CREATE INDEX idx_container_services_current_deployment ON container_services(current_deployment_id);
CREATE INDEX idx_container_services_created_at ON container_services(created_at DESC);
CREATE INDEX idx_container_deployments_service ON container_deployments(service_id);
CREATE INDEX idx_container_deployments_worker ON container_deployments(worker_id);
CREATE INDEX idx_container_deployments_status ON container_deployments(status);
CREATE INDEX idx_container_deployments_swarm_service ON container_deployments(swarm_service_id);
CREATE INDEX idx_container_deployments_created_at ON container_deployments(created_at DESC);
CREATE INDEX idx_container_deployments_deployed_at ON container_deployments(deployed_at DESC);
CREATE INDEX idx_container_deployments_service_status ON container_deployments(service_id, status);
CREATE INDEX idx_container_builds_service ON container_builds(service_id);
CREATE INDEX idx_container_builds_deployment ON container_builds(deployment_id);
CREATE INDEX idx_container_builds_status ON container_builds(build_status);
CREATE INDEX idx_container_builds_commit ON container_builds(git_commit_sha);
CREATE INDEX idx_container_builds_created_at ON container_builds(created_at DESC);
CREATE INDEX idx_container_builds_service_created ON container_builds(service_id, created_at DESC);
CREATE INDEX idx_container_secrets_org ON container_secrets(organization_id);
CREATE INDEX idx_container_secrets_created_by ON container_secrets(created_by);
CREATE INDEX idx_container_secrets_name ON container_secrets(organization_id, name);
CREATE INDEX idx_container_service_secrets_service ON container_service_secrets(service_id);
CREATE INDEX idx_container_service_secrets_secret ON container_service_secrets(secret_id);
CREATE INDEX idx_container_billing_service ON container_billing_cycles(service_id);
CREATE INDEX idx_container_billing_org ON container_billing_cycles(organization_id);
CREATE INDEX idx_container_billing_status ON container_billing_cycles(status);
CREATE INDEX idx_container_billing_period_start ON container_billing_cycles(billing_period_start);
CREATE INDEX idx_container_billing_period_end ON container_billing_cycles(billing_period_end);
CREATE INDEX idx_container_billing_payment_transaction ON container_billing_cycles(payment_transaction_id);
CREATE INDEX idx_container_billing_org_period ON container_billing_cycles(organization_id, billing_period_start DESC);
CREATE INDEX idx_container_billing_status_period ON container_billing_cycles(status, billing_period_end);

CREATE TRIGGER update_container_workers_updated_at BEFORE UPDATE ON container_workers
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_application_templates_updated_at BEFORE UPDATE ON application_templates
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_container_services_updated_at BEFORE UPDATE ON container_services
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_container_deployments_updated_at BEFORE UPDATE ON container_deployments
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_container_secrets_updated_at BEFORE UPDATE ON container_secrets
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_container_billing_cycles_updated_at BEFORE UPDATE ON container_billing_cycles
  FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

-- 003: quota columns on organizations, recomputed by a trigger whenever a service's status changes.
ALTER TABLE organizations
  ADD COLUMN container_quotas JSONB
    DEFAULT '{"cpu_cores": 10, "memory_mb": 10240, "disk_gb": 100, "max_services": 50}'::jsonb,
  ADD COLUMN container_quota_usage JSONB
    DEFAULT '{"cpu_cores": 0, "memory_mb": 0, "disk_gb": 0, "service_count": 0}'::jsonb,
  ADD COLUMN quota_last_calculated_at TIMESTAMP WITH TIME ZONE;

CREATE INDEX idx_organizations_quota_usage ON organizations USING GIN (container_quota_usage);

CREATE OR REPLACE FUNCTION calculate_organization_quota_usage(org_id UUID)
RETURNS JSONB AS $fn$
DECLARE
  usage JSONB;
BEGIN
  SELECT jsonb_build_object(
           'cpu_cores', COALESCE(SUM((resource_limits->>'cpu_cores')::DECIMAL), 0),
           'memory_mb', COALESCE(SUM((resource_limits->>'memory_mb')::BIGINT), 0),
           'disk_gb', COALESCE(SUM((resource_limits->>'disk_gb')::BIGINT), 0),
           'service_count', COUNT(*))
    INTO usage
    FROM container_services
   WHERE organization_id = org_id AND status IN ('running', 'deploying', 'building', 'pending');
  UPDATE organizations SET container_quota_usage = usage, quota_last_calculated_at = NOW() WHERE id = org_id;
  RETURN usage;
END;
$fn$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION trigger_quota_recalculation()
RETURNS TRIGGER AS $fn$
BEGIN
  IF (TG_OP = 'INSERT' AND NEW.status IN ('running', 'deploying', 'building', 'pending'))
     OR (TG_OP = 'UPDATE' AND OLD.status != NEW.status)
     OR (TG_OP = 'DELETE' AND OLD.status IN ('running', 'deploying', 'building', 'pending')) THEN
    PERFORM calculate_organization_quota_usage(CASE WHEN TG_OP = 'DELETE' THEN OLD.organization_id ELSE NEW.organization_id END);
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END;
$fn$ LANGUAGE plpgsql;

CREATE TRIGGER container_service_quota_trigger AFTER INSERT OR UPDATE OR DELETE ON container_services
  FOR EACH ROW EXECUTE FUNCTION trigger_quota_recalculation();

-- 004: secret rotation history.
CREATE TABLE container_secret_history (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  secret_id UUID NOT NULL REFERENCES container_secrets(id) ON DELETE CASCADE,
  encrypted_value TEXT NOT NULL,
  rotated_by UUID NOT NULL REFERENCES users(id) ON DELETE RESTRICT,
  expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);
CREATE INDEX idx_container_secret_history_secret ON container_secret_history(secret_id);
CREATE INDEX idx_container_secret_history_expires ON container_secret_history(expires_at);
CREATE INDEX idx_container_secret_history_created ON container_secret_history(created_at DESC);
CREATE INDEX idx_container_secret_history_secret_created ON container_secret_history(secret_id, created_at DESC);
`;
