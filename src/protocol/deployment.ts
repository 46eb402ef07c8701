import type { z } from 'zod';
import { NO_HOST_PORT_RULES, refusedHostPort, type HostPortPolicy } from '../domain/host-ports.js';
import { cutBelow, MAX_NESTING_DEPTH, tooDeepAt } from './nesting.js';
import { formatField, OWN, RULES, ruleKey, valueAt, type PathSeg } from './deployment-rules.js';
import { deploymentSchema, idSchema } from './deployment-schema.js';

/**
 * `GET /api/workers/{id}/deployments`: the complete desired set for this worker.
 *
 * Validation is per deployment: one malformed entry must not stop the agent from running the
 * others, so the envelope fails only when it is unusable as a whole. Every rejection message is
 * built from the field path and a fixed rule text, never from the offending value, so secret data
 * and registry passwords cannot leak through a rejection; they are also wrapped in `Secret` as soon
 * as they are parsed, so a parsed deployment can be logged as is.
 */

export const MAX_DEPLOYMENTS = 1000;

export type Deployment = z.output<typeof deploymentSchema>;
export type DeploymentSecret = NonNullable<Deployment['secrets']>[number];
export type RegistryAuth = NonNullable<Deployment['registryAuth']>;

// ---- parsing ----

export interface RejectedDeployment {
  /** The deployment's id when it is itself valid, else null (an invalid id is not echoed). */
  id: string | null;
  /** Same rule for serviceId: lets the planner leave that service alone instead of removing it. */
  serviceId: string | null;
  field: string;
  message: string;
}

export type DesiredSetResult = { ok: true; deployments: Deployment[]; rejected: RejectedDeployment[] } | { ok: false; error: string };

export interface ParseOptions {
  /** Host ports a deployment may not publish on this host (host-ports.ts); none refused when absent. */
  hostPorts?: HostPortPolicy;
  /**
   * The CPUs this node's engine has (`GET /info` NCPU): dockerd refuses a container whose CPU
   * limit exceeds them ("range of CPUs is from 0.01 to N"), so every task would fail. Unchecked when absent.
   */
  hostCpus?: number;
}

const OPTIONAL_KEYS = ['replicas', 'internalPort', 'externalPort', 'command', 'secrets', 'registryAuth'];

/** Panels backed by SQL send null for unset optionals; null and absent mean the same thing here. */
function dropNulls(raw: unknown): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const out: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  for (const k of OPTIONAL_KEYS) if (out[k] === null) delete out[k];
  const limits = out.resourceLimits;
  if (limits && typeof limits === 'object' && (limits as Record<string, unknown>).diskGb === null) {
    const { diskGb: _drop, ...rest } = limits as Record<string, unknown>;
    out.resourceLimits = rest;
  }
  if (Array.isArray(out.secrets)) {
    out.secrets = out.secrets.map((s: unknown) => {
      if (s === null || typeof s !== 'object') return s;
      const copy = { ...(s as Record<string, unknown>) };
      if (copy.mountPath === null) delete copy.mountPath;
      if (copy.envVarName === null) delete copy.envVarName;
      return copy;
    });
  }
  return out;
}

function validId(v: unknown): string | null {
  return typeof v === 'string' && idSchema.safeParse(v).success ? v : null;
}

/** At most this many characters of a panel's `unmappable` reason are kept. */
export const MAX_UNMAPPABLE_LENGTH = 500;

/**
 * A panel whose row cannot become a deployment serves `{id, serviceId, ..., unmappable: "<column>:
 * <why>"}` instead of guessing, so the deployment is reported failed with the panel's own words
 * (control characters escaped, length capped: the text goes into logs and back to the panel).
 */
function unmappableReason(input: unknown): string | null {
  const reason = input !== null && typeof input === 'object' ? (input as Record<string, unknown>).unmappable : undefined;
  if (reason === undefined || reason === null) return null;
  const text = typeof reason === 'string' && reason.trim() !== '' ? reason : 'the panel cannot map this deployment';
  const clean = text.replace(/[^\x20-\x7e\u00a0-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return clean.length > MAX_UNMAPPABLE_LENGTH ? `${clean.slice(0, MAX_UNMAPPABLE_LENGTH)}...` : clean;
}

export function parseDeployment(raw: unknown): { ok: true; deployment: Deployment } | { ok: false; rejected: RejectedDeployment } {
  const input = dropNulls(raw);
  const unmappable = unmappableReason(input);
  if (unmappable !== null) {
    const obj = input as Record<string, unknown>;
    return { ok: false, rejected: { id: validId(obj.id), serviceId: validId(obj.serviceId), field: 'unmappable', message: unmappable } };
  }
  const r = deploymentSchema.safeParse(input);
  if (r.success) return { ok: true, deployment: r.data };
  const issue = r.error.issues[0]!;
  const path = issue.path as PathSeg[];
  const field = formatField(path) || 'deployment';
  const missing = path.length > 0 && valueAt(input, path) === undefined;
  // Our cross-field issues carry hand-written rule text; every other message comes from the table, keyed by path.
  const own = issue.code === 'custom' && issue.params?.[OWN] === true;
  const rule = missing ? 'is required' : own ? issue.message : (RULES[ruleKey(path)] ?? 'is invalid');
  const obj = input !== null && typeof input === 'object' ? (input as Record<string, unknown>) : {};
  return { ok: false, rejected: { id: validId(obj.id), serviceId: validId(obj.serviceId), field, message: `${field}: ${rule}` } };
}

export function parseDesiredSet(body: unknown, opts: ParseOptions = {}): DesiredSetResult {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return { ok: false, error: 'response body is not a JSON object' };
  const b = body as Record<string, unknown>;
  if (b.success === false) return { ok: false, error: 'control plane answered success=false' };
  const data = b.data;
  const list = data !== null && typeof data === 'object' ? (data as Record<string, unknown>).deployments : undefined;
  if (!Array.isArray(list)) return { ok: false, error: 'response has no data.deployments array' };
  if (list.length > MAX_DEPLOYMENTS)
    return { ok: false, error: `data.deployments has ${list.length} entries, more than ${MAX_DEPLOYMENTS}` };

  const deployments: Deployment[] = [];
  const rejected: RejectedDeployment[] = [];
  const ids = new Set<string>();
  const serviceIds = new Set<string>();
  const ports = new Map<number, string>();
  const reject = (d: Deployment, field: string, rule: string): void => {
    rejected.push({ id: d.id, serviceId: d.serviceId, field, message: `${field}: ${rule}` });
  };
  const hostPorts = opts.hostPorts ?? NO_HOST_PORT_RULES;
  // Cross-entry checks run in list order over valid entries, so "the first" is the one the panel listed first.
  for (const [i, raw] of list.entries()) {
    const deepAt = tooDeepAt(raw);
    if (deepAt !== undefined) {
      // A deep object is a deployment with a bad field: rejected alone. A deep entry that is no object
      // is a malformed list, and ignoring it like other junk would leave a set that removes everything.
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
        return { ok: false, error: `data.deployments[${i}] is nested deeper than ${MAX_NESTING_DEPTH} levels` };
      rejected.push(tooDeep(raw as Record<string, unknown>, deepAt));
      continue;
    }
    const r = parseDeployment(raw);
    if (!r.ok) {
      rejected.push(r.rejected);
      continue;
    }
    const d = r.deployment;
    if (opts.hostCpus !== undefined && opts.hostCpus > 0 && d.resourceLimits.cpuCores > opts.hostCpus) {
      reject(d, 'resourceLimits.cpuCores', `must be at most ${opts.hostCpus} (the CPUs this host has; Docker refuses a larger limit)`);
      continue;
    }
    const portRefused = d.externalPort === undefined ? undefined : refusedHostPort(d.externalPort, hostPorts);
    if (portRefused !== undefined) {
      // Stopped ones too: a stopped service keeps the port in its spec, and starting it is one scale away.
      reject(d, 'externalPort', portRefused);
      continue;
    }
    if (ids.has(d.id)) {
      reject(d, 'id', 'duplicates an earlier deployment in the desired set');
      continue;
    }
    ids.add(d.id);
    if (serviceIds.has(d.serviceId)) {
      reject(d, 'serviceId', 'an earlier deployment in the desired set already targets this service');
      continue;
    }
    serviceIds.add(d.serviceId);
    if (d.desiredState === 'running' && d.externalPort !== undefined) {
      const holder = ports.get(d.externalPort);
      if (holder !== undefined) {
        reject(d, 'externalPort', `port ${d.externalPort} is already published by running deployment ${holder}`);
        continue;
      }
      ports.set(d.externalPort, d.id);
    }
    deployments.push(d);
  }
  return { ok: true, deployments, rejected };
}

/**
 * A usable answer as it is kept for a restart: the envelope's other fields dropped and each
 * too-deep entry cut one level below the bound (still too deep, so rejected alike when read back),
 * so it can always be serialised, and parsing it gives what parsing the answer gave. It holds
 * secret values: for the 0600 state file only.
 */
export function storableDesiredSet(body: unknown): { success: true; data: { deployments: unknown[] } } {
  const data = body !== null && typeof body === 'object' ? (body as Record<string, unknown>).data : undefined;
  const list = data !== null && typeof data === 'object' ? (data as Record<string, unknown>).deployments : undefined;
  const entries = Array.isArray(list) ? list : [];
  return { success: true, data: { deployments: entries.map((raw) => (tooDeepAt(raw) === undefined ? raw : cutBelow(raw))) } };
}

/** A deployment nested too deep is not parsed at all: its ids are read only if they are plain valid strings. */
function tooDeep(obj: Record<string, unknown>, path: PathSeg[]): RejectedDeployment {
  const field = formatField(path);
  return {
    id: validId(obj.id),
    serviceId: validId(obj.serviceId),
    field,
    message: `${field}: is nested deeper than ${MAX_NESTING_DEPTH} levels`,
  };
}
