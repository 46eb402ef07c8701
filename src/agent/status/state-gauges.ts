import { AGENT_VERSION } from '../../version.js';
import type { GaugeSample, Registry } from './metrics.js';

/** Read at scrape time; an absent source leaves its metric at 0. */
export interface StateGaugeSources {
  /** Usage records waiting to be sent, and those dropped (outbox full, or refused by the panel) since start. */
  usageUnsent?: () => number;
  usageDropped?: () => number;
  /** Docker's event stream: true connected, false lost, undefined when the agent does not watch it. */
  engineEventsConnected?: () => boolean | undefined;
  /** Deployments the panel sent that the agent refused to parse, per top-level field that broke them. */
  rejectedDeployments?: () => Record<string, number>;
  /** 1 while deployments are not applied here (stock panel without the deployments API, no swarm). */
  heartbeatOnly?: () => boolean;
}

/**
 * Metrics read from the agent's parts at scrape time, for alerts an operator writes without the
 * status API: which build runs, whether usage records pile up or get dropped, whether Docker's
 * event stream is connected, deployments the panel sent that the agent refused, heartbeat-only mode.
 */
export function registerStateGauges(registry: Registry, sources: StateGaugeSources): void {
  registry.gauge<'version' | 'node_version'>({
    name: 'skypanel_agent_build_info',
    help: 'Always 1; the labels name the agent and Node.js versions.',
    labelNames: ['version', 'node_version'],
    collect: () => [{ labels: { version: AGENT_VERSION, node_version: process.versions.node }, value: 1 }],
  });
  const { usageUnsent, usageDropped, engineEventsConnected, rejectedDeployments, heartbeatOnly } = sources;
  registry.gauge({
    name: 'skypanel_agent_usage_outbox_records',
    help: 'Usage records waiting to be sent to the control plane.',
    ...(usageUnsent ? { collect: usageUnsent } : {}),
  });
  registry.counter({
    name: 'skypanel_agent_usage_records_dropped_total',
    help: 'Usage records dropped since start: outbox full, or refused by the control plane.',
    ...(usageDropped ? { collect: usageDropped } : {}),
  });
  registry.gauge({
    name: 'skypanel_agent_docker_events_connected',
    help: "1 while Docker's event stream is connected, 0 while it is lost (reconcile passes then run every minute).",
    ...(engineEventsConnected ? { collect: () => (engineEventsConnected() === false ? 0 : 1) } : {}),
  });
  registry.gauge<'field'>({
    name: 'skypanel_agent_deployments_rejected',
    help: 'Deployments the panel sent that failed validation (reported failed), by the field that broke them.',
    labelNames: ['field'],
    maxSeries: 32,
    ...(rejectedDeployments ? { collect: () => fieldSamples(rejectedDeployments()) } : {}),
  });
  registry.gauge({
    name: 'skypanel_agent_heartbeat_only',
    help: '1 while deployments are not applied here: the panel has no deployments API, or the engine is in no swarm.',
    ...(heartbeatOnly ? { collect: () => (heartbeatOnly() ? 1 : 0) } : {}),
  });
}

/** Field names come from the deployment schema (camelCase); anything else collapses to "other", so the label stays bounded. */
function fieldSamples(counts: Record<string, number>): GaugeSample<'field'>[] {
  const merged = new Map<string, number>();
  for (const [field, n] of Object.entries(counts)) {
    const label = /^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(field) ? field : 'other';
    merged.set(label, (merged.get(label) ?? 0) + n);
  }
  return [...merged].map(([field, value]) => ({ labels: { field }, value }));
}
