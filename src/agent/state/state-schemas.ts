import { z } from 'zod';
import { parseDesiredSet } from '../../protocol/deployment.js';
import { statusReportSchema } from '../../protocol/status-report.js';
import type { MeterState } from '../usage/usage-meter.js';

/**
 * The shape of every document in the state directory. StateStore.read checks a file against its
 * schema before anyone uses it: a file of the wrong shape (hand-edited, written by another
 * version, damaged) is moved aside and the agent starts without it, instead of crashing on it.
 * Unknown fields are stripped, so a newer agent's extra fields do not make an older one refuse
 * the file.
 */

/**
 * What node:http accepts in a header value (it throws on anything else): an ETag stored here is
 * sent back as If-None-Match, so CR/LF or a character above U+00FF would break every poll.
 */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
export const MAX_STORED_ETAG_LENGTH = 1024;

const finite = () => z.number().refine(Number.isFinite, { error: 'must be a finite number' });
const nullableTime = () => finite().nullable();

export const storedDesiredSchema = z.object({
  etag: z.string().max(MAX_STORED_ETAG_LENGTH).regex(HEADER_VALUE, { error: 'must be a valid HTTP header value' }).nullable(),
  // The set itself is checked by the same parser as a fresh answer: one that parses as a whole is usable.
  body: z.unknown().refine((b) => b !== undefined && parseDesiredSet(b).ok, { error: 'must be a desired set the agent can parse' }),
  savedAt: finite(),
});
export type StoredDesired = z.infer<typeof storedDesiredSchema>;

export const reportContentSchema = statusReportSchema.omit({ seq: true, bootId: true, reportedAt: true });

export const outboxEntrySchema = z.object({
  deploymentId: z.string().min(1),
  content: reportContentSchema,
  bootId: z.string().min(1),
  seq: z.number().int().min(1),
  reportedAt: z.string(),
});

export const storedOutboxSchema = z.object({
  pending: z.array(outboxEntrySchema),
  lastSent: z.record(z.string(), reportContentSchema),
  /** The last seq handed out, so an outbox rebuilt within the same boot never reuses one. */
  lastSeq: z.object({ bootId: z.string(), seq: z.number().int().min(0) }).optional(),
});
export type StoredOutbox = z.infer<typeof storedOutboxSchema>;

/** Records are checked one by one on load (usageRecordSchema): one bad record is dropped, not the outbox. */
export const storedUsageOutboxSchema = z.object({
  version: z.literal(1),
  /** End of the last period the meter closed into this outbox (epoch ms). */
  closedThrough: nullableTime(),
  pending: z.array(z.unknown()),
});

const trackedSchema = z.object({
  deploymentId: z.string(),
  serviceId: z.string(),
  organizationId: z.string(),
  startedAtMs: finite(),
  cpuNs: finite(),
  networkBytes: finite(),
  memoryBytes: finite(),
  storageBytes: finite().optional(),
  lastAt: finite(),
});

const accumulatorSchema = z.object({
  deploymentId: z.string(),
  serviceId: z.string(),
  organizationId: z.string(),
  periodStart: finite(),
  periodEnd: finite(),
  cpuSec: finite(),
  memoryGiBSec: finite(),
  storageGiBSec: finite(),
  networkBytes: finite(),
  samples: finite(),
  incomplete: z.boolean(),
});

export const meterStateSchema: z.ZodType<MeterState> = z.object({
  version: z.literal(1),
  periodMs: finite().refine((n) => n > 0, { error: 'must be positive' }),
  lastAt: nullableTime(),
  historyStart: nullableTime(),
  closedThrough: nullableTime(),
  containers: z.record(z.string(), trackedSchema),
  open: z.array(accumulatorSchema),
});
