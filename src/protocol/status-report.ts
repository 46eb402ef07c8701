import { z } from 'zod';

/**
 * Protocol extension: `POST /api/workers/{id}/deployments/{deploymentId}/status`, the agent's report
 * of what a deployment is doing. This schema is the single source of truth: the agent builds its
 * reports against it and the reference control plane validates them with it.
 */

export const DEPLOYMENT_STATUSES = ['deploying', 'running', 'stopped', 'failed', 'rolled_back'] as const;
export type ReportedStatus = (typeof DEPLOYMENT_STATUSES)[number];

export const MAX_ID_LENGTH = 128;
export const MAX_PUBLIC_URL_LENGTH = 2048;
/** deploymentLogs is a tail of at most 64 KiB, counted in UTF-8 bytes. */
export const MAX_DEPLOYMENT_LOG_BYTES = 64 * 1024;
/** In UTF-16 code units, as String.prototype.length counts. */
export const MAX_MESSAGE_LENGTH = 4096;
export const MAX_BOOT_ID_LENGTH = 64;

type ErrorFn = { error: (issue: { input?: unknown }) => string };

/** Error text for a field's base type: "is required" when absent, `text` otherwise. */
export function fieldError(text: string): ErrorFn {
  return { error: (issue) => (issue.input === undefined ? 'is required' : text) };
}

const id = (): z.ZodString =>
  z
    .string(fieldError('must be a string'))
    .min(1, { error: 'must not be empty' })
    .max(MAX_ID_LENGTH, { error: `must be at most ${MAX_ID_LENGTH} characters` });

/** ISO 8601 date-time with `Z` or a numeric offset, e.g. Date.prototype.toISOString(). */
const datetime = (): z.ZodISODateTime => z.iso.datetime({ offset: true, ...fieldError('must be an ISO 8601 date-time') });

export const reportedStatusSchema = z.enum(DEPLOYMENT_STATUSES, fieldError(`must be one of ${DEPLOYMENT_STATUSES.join(', ')}`));

/**
 * Unknown fields are stripped rather than refused, so a newer agent can add fields a panel does not
 * know yet; `null` is refused wherever a field is optional (omit the field instead).
 */
export const statusReportSchema = z.object({
  status: reportedStatusSchema,
  swarmServiceId: id().optional(),
  containerId: id().optional(),
  publicUrl: z
    .url({ protocol: /^https?$/, ...fieldError('must be an http or https URL') })
    .max(MAX_PUBLIC_URL_LENGTH, { error: `must be at most ${MAX_PUBLIC_URL_LENGTH} characters` })
    .optional(),
  externalPort: z
    .number(fieldError('must be a number'))
    .int({ error: 'must be an integer' })
    .min(1, { error: 'must be between 1 and 65535' })
    .max(65535, { error: 'must be between 1 and 65535' })
    .optional(),
  deploymentLogs: z
    .string(fieldError('must be a string'))
    .refine((s) => Buffer.byteLength(s, 'utf8') <= MAX_DEPLOYMENT_LOG_BYTES, {
      error: `must be at most ${MAX_DEPLOYMENT_LOG_BYTES} bytes of UTF-8`,
    })
    .optional(),
  message: z
    .string(fieldError('must be a string'))
    .max(MAX_MESSAGE_LENGTH, { error: `must be at most ${MAX_MESSAGE_LENGTH} characters` })
    .optional(),
  deployedAt: datetime().optional(),
  stoppedAt: datetime().optional(),
  /** Monotonic per agent boot, from 1. */
  seq: z.number(fieldError('must be a number')).int({ error: 'must be a safe integer' }).min(1, { error: 'must be at least 1' }),
  /** Identifies the agent process; (deploymentId, bootId, seq) identifies a report. */
  bootId: z
    .string(fieldError('must be a string'))
    .min(1, { error: 'must not be empty' })
    .max(MAX_BOOT_ID_LENGTH, { error: `must be at most ${MAX_BOOT_ID_LENGTH} characters` }),
  reportedAt: datetime(),
});

export type StatusReport = z.infer<typeof statusReportSchema>;

/** What the agent decides; the envelope fields (seq, bootId, reportedAt) are added when it is queued. */
export type StatusReportContent = Omit<StatusReport, 'seq' | 'bootId' | 'reportedAt'>;

/** `records[3].cpuHours`; `body` for the top level. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out === '' ? 'body' : out;
}

/** The first problem, as a field name and a sentence naming it: `seq: must be at least 1`. */
export function describeIssue(error: z.ZodError): { field: string; message: string } {
  const issue = error.issues[0];
  if (issue === undefined) return { field: 'body', message: 'body: is invalid' };
  const field = formatPath(issue.path);
  const text = issue.path.length === 0 && issue.code === 'invalid_type' ? 'must be a JSON object' : issue.message;
  return { field, message: `${field}: ${text}` };
}
