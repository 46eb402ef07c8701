/**
 * Label names the agent puts on every Swarm object it creates (services, their tasks' containers,
 * secrets, networks). They are the only way the agent recognises its own objects: names are
 * derived for humans and DNS, but ownership is decided here, so a look-alike name made by someone
 * else can never be adopted, updated or removed.
 */
export const LABEL = {
  managed: 'skypanel.managed',
  workerId: 'skypanel.worker.id',
  deploymentId: 'skypanel.deployment.id',
  serviceId: 'skypanel.service.id',
  organizationId: 'skypanel.organization.id',
  specHash: 'skypanel.spec-hash',
} as const;

export type LabelName = (typeof LABEL)[keyof typeof LABEL];

/** Docker reports absent label maps as null; treat that as "no labels" rather than crash. */
export type LabelMap = Readonly<Record<string, string>> | null | undefined;

/**
 * True only when both the managed marker and this worker's id are present: a service created by
 * another worker's agent (same swarm, other node) is as foreign as one created by hand.
 */
export function ownedBy(labels: LabelMap, workerId: string): boolean {
  if (!labels || workerId === '') return false;
  return labels[LABEL.managed] === 'true' && labels[LABEL.workerId] === workerId;
}

/** The labels that identify an object as this worker's, for Docker label filters. */
export function ownershipFilter(workerId: string): string[] {
  return [`${LABEL.managed}=true`, `${LABEL.workerId}=${workerId}`];
}
