import type { Fault } from './types.js';

/** Holds the current injected fault and spends its `count` one request at a time. */
export class FaultSlot {
  #fault: Fault | null = null;
  #remaining = Infinity;

  set(fault: Fault | null): void {
    if (fault !== null) validateFault(fault);
    this.#fault = fault === null ? null : { ...fault };
    this.#remaining = fault?.count ?? Infinity;
  }

  /** The fault that applies to the request arriving now, if any. */
  take(path = ''): Fault | null {
    const fault = this.#fault;
    if (fault === null) return null;
    if (fault.pathEndsWith !== undefined && !path.endsWith(fault.pathEndsWith)) return null;
    this.#remaining--;
    if (this.#remaining <= 0) this.#fault = null;
    return fault;
  }
}

function validateFault(fault: Fault): void {
  if (fault.count !== undefined && (!Number.isInteger(fault.count) || fault.count < 1)) {
    throw new RangeError('fault.count must be a positive integer');
  }
  switch (fault.kind) {
    case 'status':
      if (!Number.isInteger(fault.status) || fault.status < 100 || fault.status > 599) {
        throw new RangeError('fault.status must be an HTTP status code');
      }
      if (fault.retryAfter !== undefined && !/^[\x20-\x7e]*$/.test(fault.retryAfter)) {
        throw new RangeError('fault.retryAfter must be printable ASCII');
      }
      for (const [name, value] of Object.entries(fault.headers ?? {})) {
        if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || !/^[\x20-\x7e]*$/.test(value)) {
          throw new RangeError('fault.headers must map header names to printable ASCII values');
        }
      }
      return;
    case 'delay':
      // Past 2^31 - 1 ms node fires a timer after 1 ms: a "delay" that would answer at once.
      if (!Number.isFinite(fault.ms) || fault.ms < 0 || fault.ms > 2 ** 31 - 1)
        throw new RangeError('fault.ms must be a number of milliseconds from 0 to 2147483647');
      return;
    case 'garbage':
    case 'reset':
      return;
    default:
      throw new RangeError(`unknown fault kind ${String((fault as { kind: unknown }).kind)}`);
  }
}

/** Body of a status fault when the test gave none: shaped like SkyPanelV2's own errors. */
export function defaultFaultBody(status: number): string {
  return JSON.stringify({ success: false, error: `Injected fault: HTTP ${status}` });
}

/** A 200 that is not JSON, like a captive portal or a misrouted reverse proxy would send. */
export const GARBAGE_BODY = '<html>oops</html>';
