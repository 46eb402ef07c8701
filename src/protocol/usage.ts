import { z } from 'zod';
import { MAX_ID_LENGTH, fieldError } from './status-report.js';

/**
 * Protocol extension: `POST /api/workers/{id}/usage`, metered usage per deployment and period.
 * (deploymentId, periodStart) identifies a record, so the agent may resend a batch after any
 * failure: the control plane counts each record once.
 */

export const MAX_USAGE_RECORDS_PER_CALL = 1000;

const id = (): z.ZodString =>
  z
    .string(fieldError('must be a string'))
    .min(1, { error: 'must not be empty' })
    .max(MAX_ID_LENGTH, { error: `must be at most ${MAX_ID_LENGTH} characters` });

/** UTC only (`Z`), any sub-second precision. */
const utc = (): z.ZodISODateTime => z.iso.datetime(fieldError('must be an ISO 8601 UTC date-time ending in Z'));

const quantity = (): z.ZodNumber => z.number(fieldError('must be a number')).min(0, { error: 'must be at least 0' });

export const usageRecordSchema = z
  .object({
    deploymentId: id(),
    serviceId: id(),
    organizationId: id(),
    periodStart: utc(),
    periodEnd: utc(),
    cpuHours: quantity(),
    memoryGbHours: quantity(),
    storageGbHours: quantity(),
    networkGb: quantity(),
    samples: z.number(fieldError('must be a number')).int({ error: 'must be an integer' }).min(0, { error: 'must be at least 0' }),
    /** Every record is final (periods are sent once closed); false means the agent was down for part of the period. */
    complete: z.boolean(fieldError('must be true or false')),
  })
  .refine((r) => Date.parse(r.periodEnd) > Date.parse(r.periodStart), { error: 'must be after periodStart', path: ['periodEnd'] });

export type UsageRecord = z.infer<typeof usageRecordSchema>;

export const usageBatchSchema = z.object({
  records: z
    .array(usageRecordSchema, fieldError('must be an array'))
    .max(MAX_USAGE_RECORDS_PER_CALL, { error: `must hold at most ${MAX_USAGE_RECORDS_PER_CALL} records` }),
});

export type UsageBatch = z.infer<typeof usageBatchSchema>;

/** Answer to a usage batch: `accepted` records were new or updated an open period, `duplicates` changed nothing. */
export interface UsageAck {
  accepted: number;
  duplicates: number;
}

/**
 * The identity of a record: `deploymentId|periodStart`, with periodStart canonicalised through
 * Date so `...00Z` and `...00.000Z` name the same period.
 */
export function usageKey(record: Pick<UsageRecord, 'deploymentId' | 'periodStart'>): string {
  return `${record.deploymentId}|${new Date(record.periodStart).toISOString()}`;
}
