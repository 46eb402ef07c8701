import { isIPv4, isIPv6 } from 'node:net';

/**
 * What Postgres (through node-postgres) does to the values SkyPanelV2 writes into
 * `container_workers`. Stock SkyPanelV2 validates only part of its input in JavaScript and leaves
 * the rest to column types, so a faithful reference has to fail where Postgres would, with the
 * message node-postgres would surface (the routes then classify errors by message, like stock).
 */

export class PgError extends Error {
  override readonly name = 'PgError';
}

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * node-postgres `prepareValue` for the value kinds a JSON body can hold: objects are
 * JSON-encoded, arrays become Postgres array literals, everything else goes through String().
 */
export function pgParam(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (Array.isArray(value)) return arrayLiteral(value);
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function arrayLiteral(values: unknown[]): string {
  const parts = values.map((v) => {
    if (v === null || v === undefined) return 'NULL';
    if (Array.isArray(v)) return arrayLiteral(v);
    const text = pgParam(v) ?? '';
    return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  });
  return `{${parts.join(',')}}`;
}

function checkText(text: string): void {
  if (text.includes('\u0000')) throw new PgError('invalid byte sequence for encoding "UTF8": 0x00');
}

/** A `uuid` column or parameter; Postgres prints uuids in lower case. */
export function pgUuid(value: unknown): string {
  const text = pgParam(value);
  // The canonical form only: the agent and SkyPanelV2 never produce the braces/no-hyphen variants.
  if (text === null || !UUID_PATTERN.test(text)) throw new PgError('invalid input syntax for type uuid');
  return text.toLowerCase();
}

/** A `VARCHAR(n)` column; Postgres counts characters, not bytes. */
export function pgVarchar(value: unknown, max: number): string {
  const text = pgParam(value) ?? '';
  checkText(text);
  if ([...text].length > max) throw new PgError(`value too long for type character varying(${max})`);
  return text;
}

/** A `JSONB` column written as `JSON.stringify(value)` and read back parsed, as stock does. */
export function pgJsonb(value: unknown): unknown {
  const text = JSON.stringify(value);
  if (text === undefined) return null;
  if (text.includes('\\u0000')) throw new PgError('unsupported Unicode escape sequence');
  return JSON.parse(text) as unknown;
}

/** An `INET` column: accepts what Postgres accepts (roughly) and returns Postgres' text form. */
export function pgInet(value: unknown): string {
  const text = pgParam(value) ?? '';
  const fail = (): never => {
    throw new PgError(`invalid input syntax for type inet: "${text.slice(0, 100)}"`);
  };
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const bitsText = slash === -1 ? undefined : text.slice(slash + 1);
  const v4 = parseIPv4(address);
  const family = v4 !== null ? 4 : isIPv6(address) && !address.includes('%') ? 6 : fail();
  const maxBits = family === 4 ? 32 : 128;
  let suffix = '';
  if (bitsText !== undefined) {
    if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > maxBits) fail();
    if (Number(bitsText) !== maxBits) suffix = `/${Number(bitsText)}`;
  }
  return (v4 ?? formatIPv6(address)) + suffix;
}

/** Postgres reads octets as decimal and tolerates leading zeros ("010" is 10). */
function parseIPv4(address: string): string | null {
  const parts = address.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return parts.map(Number).join('.');
}

/** Lower-case hex, no leading zeros, longest run (>= 2) of zero groups as `::`, mapped IPv4 dotted. */
function formatIPv6(address: string): string {
  const words = expandIPv6(address);
  let best = { base: -1, len: 0 };
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > best.len) best = { base: i, len: j - i };
    i = j;
  }
  if (best.len < 2) best = { base: -1, len: 0 };
  if (best.base === 0 && best.len === 5 && words[5] === 0xffff) {
    const [hi = 0, lo = 0] = words.slice(6);
    return `::ffff:${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  const hex = words.map((w) => w.toString(16));
  if (best.base === -1) return hex.join(':');
  return `${hex.slice(0, best.base).join(':')}::${hex.slice(best.base + best.len).join(':')}`;
}

function expandIPv6(address: string): number[] {
  let text = address.toLowerCase();
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (isIPv4(tail)) {
    const o = tail.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, lastColon + 1)}${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  if (rest === undefined) return parse(head);
  const left = parse(head);
  const right = parse(rest);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}
