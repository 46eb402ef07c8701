/**
 * Waits the control plane asks for. Whatever a panel sends, the agent waits at most
 * MAX_SERVER_WAIT_MS: SkyPanelV2's own rate-limit window (15 minutes) is honoured in full, while a
 * day-long or far-future value cannot silence a worker (the panel marks it offline after 2 minutes
 * without a heartbeat) and a value past the 32-bit timer range cannot reach a timer (node fires
 * those after 1 ms: a hot loop).
 */
export const MAX_SERVER_WAIT_MS = 15 * 60_000;

type HeaderValue = string | string[] | undefined;

/** An HTTP-date in one of RFC 9110's three forms: a day name first and an hh:mm:ss time. Date.parse alone takes "5.5" or "-1" as dates. */
const HTTP_DATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]{0,6},? [\w -]{6,24} \d{2}:\d{2}:\d{2}(?: GMT| \d{4})$/;

function first(value: HeaderValue): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  return v === undefined ? undefined : v.trim();
}

function clampWait(ms: number): number {
  return Math.min(MAX_SERVER_WAIT_MS, Math.max(0, ms));
}

/**
 * Retry-After is delta-seconds or an HTTP-date (RFC 9110 §10.2.3); returns milliseconds in
 * [0, MAX_SERVER_WAIT_MS], or undefined for anything else (negative numbers, fractions, garbage).
 */
export function parseRetryAfter(value: HeaderValue, now = Date.now()): number | undefined {
  const v = first(value);
  if (v === undefined) return undefined;
  // Any number of digits: "99999999999" is a valid delta, just a long one (Number() of a huge one is Infinity, clamped too).
  if (/^\d+$/.test(v)) return clampWait(Number(v) * 1000);
  if (!HTTP_DATE.test(v)) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : clampWait(at - now);
}

/**
 * Seconds until the rate-limit window ends, from the IETF draft headers express-rate-limit sends
 * (SkyPanelV2's limiter): `RateLimit-Reset: N` (draft 6) or `RateLimit: limit=…, remaining=…, reset=N`
 * (draft 7). Milliseconds in [0, MAX_SERVER_WAIT_MS], or undefined.
 */
export function parseRateLimitReset(headers: Readonly<Record<string, HeaderValue>>): number | undefined {
  const reset = first(headers['ratelimit-reset']);
  if (reset !== undefined && /^\d+$/.test(reset)) return clampWait(Number(reset) * 1000);
  const combined = first(headers.ratelimit);
  const m = combined === undefined ? null : /(?:^|[\s,;])reset=(\d+)(?:$|[\s,;])/i.exec(combined);
  return m ? clampWait(Number(m[1]) * 1000) : undefined;
}

/**
 * How long the server asked us to wait before calling again, or undefined when it did not say.
 * On a 429 the end of the rate-limit window wins when it comes sooner: SkyPanelV2 sends its whole
 * window as Retry-After (900 s) even when the window ends in seconds.
 * On other statuses (a 503 from a proxy in maintenance) only Retry-After counts: rate-limit headers
 * there describe a window that is not what refused us.
 */
export function serverRequestedWaitMs(
  status: number,
  headers: Readonly<Record<string, HeaderValue>>,
  now = Date.now(),
): number | undefined {
  const retryAfter = parseRetryAfter(headers['retry-after'], now);
  if (status !== 429) return retryAfter;
  const reset = parseRateLimitReset(headers);
  if (reset === undefined) return retryAfter;
  return retryAfter === undefined ? reset : Math.min(retryAfter, reset);
}
