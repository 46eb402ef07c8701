import { z } from 'zod';
import { NO_HOST_PORT_RULES, refusedHostPort, type HostPortPolicy } from '../domain/host-ports.js';
import { Secret } from '../secret.js';
import { cutBelow, MAX_NESTING_DEPTH, tooDeepAt } from './nesting.js';
import { MAX_CPU_CORES, MAX_MEMORY_MB, MIN_CPU_CORES, MIN_MEMORY_MB } from './resource-limits.js';

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
const ID_RE = /^[A-Za-z0-9_.-]+$/;
const POSIX_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SECRET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MAX_ENV_VARS = 200;
const MAX_ENV_VALUE_BYTES = 32 * 1024;
const MAX_SECRET_BYTES = 500 * 1024;

// ---- Docker image reference (distribution/reference grammar, sha256 digests only) ----

const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const IPV6_HOST = /^\[[0-9a-fA-F:]+\]$/;
// Docker also accepts runs of '-' as a separator; '__' is the only multi-char '_' separator.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

function isValidHost(hostPort: string): boolean {
  const m = /^(.*?)(?::([0-9]{1,5}))?$/.exec(hostPort);
  if (!m || !m[1]) return false;
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return false;
  const host = m[1];
  if (IPV6_HOST.test(host)) return true;
  return host.split('.').every((c) => DOMAIN_COMPONENT.test(c));
}

/** `[host[:port]/]path[/path...][:tag][@sha256:<64 hex>]`, at most 255 characters. */
export function isValidImageReference(ref: string): boolean {
  if (ref.length === 0 || ref.length > 255) return false;
  let rest = ref;
  const at = rest.indexOf('@');
  if (at !== -1) {
    if (!DIGEST_RE.test(rest.slice(at + 1))) return false;
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    if (!TAG_RE.test(rest.slice(colon + 1))) return false;
    rest = rest.slice(0, colon);
  }
  const parts = rest.split('/');
  const first = parts[0]!;
  // Same rule as Docker's splitDockerDomain: the first component is a registry only if it looks like one.
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())) {
    if (!isValidHost(first)) return false;
    parts.shift();
  }
  return parts.length > 0 && parts.every((p) => PATH_COMPONENT.test(p));
}

/** Absolute, no NUL, no `.`/`..` segment (a mount target must not climb out of its directory), not a directory. */
export function isSafeMountPath(p: string): boolean {
  if (!p.startsWith('/') || p.endsWith('/') || p.includes('\0') || p.length > 4096) return false;
  return p.split('/').every((seg) => seg !== '..' && seg !== '.');
}

// ---- schema ----

const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');
const idSchema = z.string().min(1).max(128).regex(ID_RE);
const portSchema = z.number().int().min(1).max(65535);
const noNul = (s: string): boolean => !s.includes('\0');
// Marks issues whose message we wrote (and vetted: never the value) apart from zod's generic ones.
const OWN = 'skypanelRule';
type IssueSink = { addIssue(issue: { code: 'custom'; message: string; path?: PropertyKey[]; params?: Record<string, unknown> }): void };
const fail = (ctx: IssueSink, path: PropertyKey[], message: string): void =>
  ctx.addIssue({ code: 'custom', path, message, params: { [OWN]: true } });

// A hand-rolled record: zod's record assigns keys with `=`, which silently drops `__proto__`.
const environmentVarsSchema = z.unknown().transform((raw, ctx): Record<string, string> => {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    fail(ctx, [], RULES.environmentVars!);
    return z.NEVER;
  }
  const entries = Object.entries(raw);
  if (entries.length > MAX_ENV_VARS) {
    fail(ctx, [], RULES.environmentVars!);
    return z.NEVER;
  }
  for (const [name, value] of entries) {
    if (!POSIX_NAME_RE.test(name)) {
      fail(ctx, [name], 'name must match ^[A-Za-z_][A-Za-z0-9_]*$');
    } else if (typeof value !== 'string' || !noNul(value) || byteLength(value) > MAX_ENV_VALUE_BYTES) {
      fail(ctx, [name], RULES['environmentVars.*']!);
    }
  }
  return Object.fromEntries(entries) as Record<string, string>;
});

const secretSchema = z.object({
  name: z.string().regex(SECRET_NAME_RE),
  value: z
    .string()
    .min(1)
    .refine((v) => byteLength(v) <= MAX_SECRET_BYTES)
    .transform((v) => new Secret(v)),
  mountPath: z.string().refine(isSafeMountPath).optional(),
  envVarName: z.string().regex(POSIX_NAME_RE).optional(),
});

const registryAuthSchema = z.object({
  serveraddress: z.string().min(1).max(1024),
  username: z.string().max(1024),
  password: z
    .string()
    .max(16 * 1024)
    .transform((v) => new Secret(v)),
});

export const deploymentSchema = z
  .object({
    id: idSchema,
    serviceId: idSchema,
    organizationId: idSchema,
    slug: z.string().max(255),
    imageTag: z.string().refine(isValidImageReference),
    desiredState: z.enum(['running', 'stopped']),
    replicas: z.number().int().min(0).max(100).default(1),
    environmentVars: environmentVarsSchema,
    resourceLimits: z.object({
      cpuCores: z.number().min(MIN_CPU_CORES).max(MAX_CPU_CORES),
      memoryMb: z.number().int().min(MIN_MEMORY_MB).max(MAX_MEMORY_MB),
      diskGb: z.number().gt(0).max(10240).optional(),
    }),
    internalPort: portSchema.optional(),
    externalPort: portSchema.optional(),
    command: z.array(z.string().refine(noNul)).max(64).optional(),
    secrets: z.array(secretSchema).max(50).optional(),
    registryAuth: registryAuthSchema.optional(),
  })
  .superRefine((d, ctx) => {
    // Rules spanning fields: each is what Swarm would otherwise fail on at runtime, or silently mis-run.
    if (d.externalPort !== undefined && d.internalPort === undefined) {
      fail(ctx, ['externalPort'], 'requires internalPort (the container port to publish)');
    }
    if (d.externalPort !== undefined && d.desiredState === 'running' && d.replicas > 1) {
      fail(ctx, ['replicas'], 'must be at most 1 when externalPort is set (one host-mode port on one node)');
    }
    const names = new Set<string>();
    const targets = new Set<string>();
    const envNames = new Set<string>();
    (d.secrets ?? []).forEach((s, i) => {
      if (names.has(s.name)) fail(ctx, ['secrets', i, 'name'], 'duplicates an earlier secret name');
      names.add(s.name);
      const target = secretMountTarget(s);
      if (targets.has(target)) fail(ctx, ['secrets', i], 'mounts at the same path as an earlier secret');
      targets.add(target);
      if (s.envVarName === undefined) return;
      if (Object.hasOwn(d.environmentVars, `${s.envVarName}_FILE`)) {
        fail(ctx, ['secrets', i, 'envVarName'], `${s.envVarName}_FILE is already set in environmentVars`);
      }
      if (envNames.has(s.envVarName)) fail(ctx, ['secrets', i, 'envVarName'], 'duplicates an earlier secret envVarName');
      envNames.add(s.envVarName);
    });
  });

export type Deployment = z.output<typeof deploymentSchema>;
export type DeploymentSecret = NonNullable<Deployment['secrets']>[number];
export type RegistryAuth = NonNullable<Deployment['registryAuth']>;

/**
 * Where a secret's file lands in the container. Swarm cannot put a secret into an environment
 * variable without writing the value into the service spec (readable by anyone who can inspect
 * services), so `envVarName` means: file at /run/secrets/<envVarName> (or mountPath) plus
 * `<envVarName>_FILE=<path>`, the convention official images (postgres, mysql, ...) already read.
 */
export function secretMountTarget(s: { name: string; mountPath?: string | undefined; envVarName?: string | undefined }): string {
  return s.mountPath ?? `/run/secrets/${s.envVarName ?? s.name}`;
}

// ---- rejection messages: fixed text per field, never the value ----

const ID_RULE = 'must be a string of 1 to 128 characters from [A-Za-z0-9_.-]';
const PORT_RULE = 'must be an integer between 1 and 65535';
const RULES: Record<string, string> = {
  '': 'must be an object',
  id: ID_RULE,
  serviceId: ID_RULE,
  organizationId: ID_RULE,
  slug: 'must be a string of at most 255 characters',
  imageTag: 'must be a valid Docker image reference ([registry[:port]/]name[:tag][@sha256:digest], at most 255 characters)',
  desiredState: "must be 'running' or 'stopped'",
  replicas: 'must be an integer between 0 and 100',
  environmentVars: `must be an object of at most ${MAX_ENV_VARS} variables`,
  'environmentVars.*': 'value must be a string without NUL of at most 32 KiB',
  resourceLimits: 'must be an object',
  'resourceLimits.cpuCores': `must be a number of at least ${MIN_CPU_CORES} (the smallest CPU limit Docker can enforce) and at most ${MAX_CPU_CORES}`,
  'resourceLimits.memoryMb': `must be an integer between ${MIN_MEMORY_MB} (the smallest memory limit Docker accepts) and ${MAX_MEMORY_MB}`,
  'resourceLimits.diskGb': 'must be a number greater than 0 and at most 10240',
  internalPort: PORT_RULE,
  externalPort: PORT_RULE,
  command: 'must be an array of at most 64 strings',
  'command[]': 'must be a string without NUL',
  secrets: 'must be an array of at most 50 secrets',
  'secrets[]': 'must be an object',
  'secrets[].name': 'must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$',
  'secrets[].value': 'must be a non-empty string of at most 500 KiB',
  'secrets[].mountPath': "must be an absolute file path without NUL, '.' or '..' segments",
  'secrets[].envVarName': 'must match ^[A-Za-z_][A-Za-z0-9_]*$',
  registryAuth: 'must be an object',
  'registryAuth.serveraddress': 'must be a non-empty string of at most 1024 characters',
  'registryAuth.username': 'must be a string of at most 1024 characters',
  'registryAuth.password': 'must be a string of at most 16 KiB',
};

type PathSeg = PropertyKey;

/** Dotted path for humans; keys are escaped and cut so a hostile name cannot flood or corrupt a log line. */
function formatField(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const key = String(seg).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
      out += (out === '' ? '' : '.') + (key.length > 64 ? `${key.slice(0, 64)}...` : key);
    }
  }
  return out;
}

function ruleKey(path: readonly PathSeg[]): string {
  if (path[0] === 'environmentVars' && path.length > 1) return 'environmentVars.*';
  return formatField(path.map((s) => (typeof s === 'number' ? -1 : s))).replace(/\[-1\]/g, '[]');
}

function valueAt(root: unknown, path: readonly PathSeg[]): unknown {
  let cur = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

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
