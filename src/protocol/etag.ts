import { createHash } from 'node:crypto';

/**
 * The desired set's entity tag, for both panels that serve call 3 (the panel half and the
 * reference panel): how it is made and how If-None-Match is compared, so the two cannot drift.
 */

/** Strong ETag: the first 32 hex digits of the body's SHA-256, quoted. */
export function strongEtag(body: string): string {
  return `"${createHash('sha256').update(body, 'utf8').digest('hex').slice(0, 32)}"`;
}

/**
 * If-None-Match by weak comparison (RFC 9110 §13.1.2): `W/` is ignored, a list matches when any
 * member does, and `*` matches any current representation.
 */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  const opaque = etag.replace(/^W\//, '');
  for (const m of header.matchAll(/(?:W\/)?("[^"]*")/g)) if (m[1] === opaque) return true;
  return false;
}
