import { MAX_CPU_CORES, MAX_MEMORY_MB, MIN_CPU_CORES, MIN_MEMORY_MB } from './resource-limits.js';

/**
 * A deployment's field rules as people read them: the limits the schema (deployment-schema.ts)
 * enforces, and the fixed rejection text for each field, never the offending value.
 */

export const ID_RE = /^[A-Za-z0-9_.-]+$/;
export const POSIX_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const SECRET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const MAX_ENV_VARS = 200;
export const MAX_ENV_VALUE_BYTES = 32 * 1024;
export const MAX_SECRET_BYTES = 500 * 1024;

// Marks issues whose message we wrote (and vetted: never the value) apart from zod's generic ones.
export const OWN = 'skypanelRule';

// ---- rejection messages: fixed text per field, never the value ----

const ID_RULE = 'must be a string of 1 to 128 characters from [A-Za-z0-9_.-]';
const PORT_RULE = 'must be an integer between 1 and 65535';
export const RULES: Record<string, string> = {
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

export type PathSeg = PropertyKey;

/** Dotted path for humans; keys are escaped and cut so a hostile name cannot flood or corrupt a log line. */
export function formatField(path: readonly PathSeg[]): string {
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

/** The RULES key of an issue's path: indexes read `[]`, every environment variable `environmentVars.*`. */
export function ruleKey(path: readonly PathSeg[]): string {
  if (path[0] === 'environmentVars' && path.length > 1) return 'environmentVars.*';
  return formatField(path.map((s) => (typeof s === 'number' ? -1 : s))).replace(/\[-1\]/g, '[]');
}

/** The input's own value at `path`, undefined when absent: what tells 'is required' from a broken value. */
export function valueAt(root: unknown, path: readonly PathSeg[]): unknown {
  let cur = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}
