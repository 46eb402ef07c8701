import { z } from 'zod';
import { Secret } from '../secret.js';
import { MAX_CPU_CORES, MAX_MEMORY_MB, MIN_CPU_CORES, MIN_MEMORY_MB } from './resource-limits.js';
import {
  ID_RE,
  MAX_ENV_VALUE_BYTES,
  MAX_ENV_VARS,
  MAX_SECRET_BYTES,
  OWN,
  POSIX_NAME_RE,
  RULES,
  SECRET_NAME_RE,
} from './deployment-rules.js';
import { isValidImageReference } from './image-reference.js';

/**
 * The zod schema of one deployment. Secret values and registry passwords are wrapped in `Secret` as
 * soon as they are parsed; rules spanning fields raise issues with our own vetted text.
 */

/** Absolute, no NUL, no `.`/`..` segment (a mount target must not climb out of its directory), not a directory. */
export function isSafeMountPath(p: string): boolean {
  if (!p.startsWith('/') || p.endsWith('/') || p.includes('\0') || p.length > 4096) return false;
  return p.split('/').every((seg) => seg !== '..' && seg !== '.');
}

const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');
export const idSchema = z.string().min(1).max(128).regex(ID_RE);
const portSchema = z.number().int().min(1).max(65535);
const noNul = (s: string): boolean => !s.includes('\0');
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

/**
 * Where a secret's file lands in the container. Swarm cannot put a secret into an environment
 * variable without writing the value into the service spec (readable by anyone who can inspect
 * services), so `envVarName` means: file at /run/secrets/<envVarName> (or mountPath) plus
 * `<envVarName>_FILE=<path>`, the convention official images (postgres, mysql, ...) already read.
 */
export function secretMountTarget(s: { name: string; mountPath?: string | undefined; envVarName?: string | undefined }): string {
  return s.mountPath ?? `/run/secrets/${s.envVarName ?? s.name}`;
}
