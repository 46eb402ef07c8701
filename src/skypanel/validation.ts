/**
 * Request validation exactly as stock SkyPanelV2 performs it (api/routes/workers.ts and
 * WorkerService.validateWorkerInfo / validateMetrics), quirks included: truthiness checks rather
 * than type checks, JavaScript's loose comparisons on capacity, and errors classified by message.
 * The reference reproduces the quirks on purpose, so an agent that passes here passes there.
 */

export interface ErrorBody {
  success: false;
  error: { code: string; message: string };
}

export interface Rejection {
  status: number;
  body: ErrorBody;
}

export function rejection(status: number, code: string, message: string): Rejection {
  return { status, body: { success: false, error: { code, message } } };
}

/** Property read with JavaScript semantics: bodies may be arrays, strings or numbers. */
export function prop(value: unknown, key: string): unknown {
  if (value === null || value === undefined) return undefined;
  return (value as Record<string, unknown>)[key];
}

/** The route-level checks in POST /register, before WorkerService is called. */
export function registerFieldsError(body: unknown): string | null {
  const capacity = prop(body, 'capacity');
  if (!prop(body, 'hostname') || !prop(body, 'ipAddress') || !capacity) {
    return 'Missing required fields: hostname, ipAddress, capacity';
  }
  if (!prop(capacity, 'cpuCores') || !prop(capacity, 'memoryMb') || !prop(capacity, 'diskGb')) {
    return 'Capacity must include cpuCores, memoryMb, and diskGb';
  }
  return null;
}

/**
 * WorkerService.isValidIpAddress. `regex.test` coerces its argument, so a non-string that
 * stringifies to a dotted quad passes the regex and then fails on `ip.split` with a TypeError,
 * which stock reports as a 500.
 */
export function isValidIpAddress(ip: unknown): boolean {
  const ipv4Regex = /^(\d{1,3}\.){3}\d{1,3}$/;
  const ipv6Regex = /^([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}$/;
  const text = String(ip);
  if (ipv4Regex.test(text)) {
    if (typeof ip !== 'string') throw new TypeError('ip.split is not a function');
    return ip.split('.').every((part) => {
      const num = parseInt(part, 10);
      return num >= 0 && num <= 255;
    });
  }
  return ipv6Regex.test(text);
}

export interface WorkerInfo {
  hostname: unknown;
  ipAddress: unknown;
  capacity: unknown;
  metadata: unknown;
}

/**
 * WorkerService.validateWorkerInfo, run only for first registrations (stock skips it when the
 * worker row already exists). The capacity comparisons are deliberately loose: `"4" <= 0` is
 * false and `"abc" > 256` is false, so stock accepts non-numeric capacity, and so do we.
 */
export function validateWorkerInfo(info: WorkerInfo): void {
  if (!info.hostname || prop(info.hostname, 'length') === 0) throw new Error('Hostname is required');
  if (!info.ipAddress || !isValidIpAddress(info.ipAddress)) throw new Error('Valid IP address is required');
  if (!info.capacity) throw new Error('Capacity information is required');
  const cpuCores = prop(info.capacity, 'cpuCores') as number;
  const memoryMb = prop(info.capacity, 'memoryMb') as number;
  const diskGb = prop(info.capacity, 'diskGb') as number;
  if (cpuCores <= 0 || cpuCores > 256) throw new Error('CPU cores must be between 1 and 256');
  if (memoryMb <= 0 || memoryMb > 1048576) throw new Error('Memory must be between 1 MB and 1 TB');
  if (diskGb <= 0 || diskGb > 10240) throw new Error('Disk must be between 1 GB and 10 TB');
}

export const METRIC_KEYS = ['cpuPercent', 'memoryPercent', 'diskPercent', 'containerCount'] as const;

export interface HeartbeatMetrics {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  containerCount: number;
}

/** The route-level presence check in POST /:id/heartbeat (`=== undefined`, so null passes it). */
export function heartbeatFieldsError(body: unknown): string | null {
  if (METRIC_KEYS.some((key) => prop(body, key) === undefined)) {
    return 'Missing required metrics: cpuPercent, memoryPercent, diskPercent, containerCount';
  }
  return null;
}

function isPercent(value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && value <= 100;
}

/** WorkerService.validateMetrics. */
export function validateMetrics(body: unknown): HeartbeatMetrics {
  const cpuPercent = prop(body, 'cpuPercent');
  const memoryPercent = prop(body, 'memoryPercent');
  const diskPercent = prop(body, 'diskPercent');
  const containerCount = prop(body, 'containerCount');
  if (!isPercent(cpuPercent)) throw new Error('CPU percent must be between 0 and 100');
  if (!isPercent(memoryPercent)) throw new Error('Memory percent must be between 0 and 100');
  if (!isPercent(diskPercent)) throw new Error('Disk percent must be between 0 and 100');
  if (typeof containerCount !== 'number' || containerCount < 0) {
    throw new Error('Container count must be a non-negative number');
  }
  return { cpuPercent, memoryPercent, diskPercent, containerCount };
}

/** WorkerService's resource-exhaustion rule applied on every heartbeat. */
export function statusForLoad(m: HeartbeatMetrics): 'active' | 'unhealthy' {
  return m.cpuPercent > 90 || m.memoryPercent > 95 || m.diskPercent > 90 ? 'unhealthy' : 'active';
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The catch block of POST /register: the status is chosen by substrings of the message. */
export function classifyRegisterError(err: unknown): Rejection {
  const message = messageOf(err);
  if (message.includes('Invalid') || message.includes('required') || message.includes('must be')) {
    return rejection(400, 'VALIDATION_ERROR', message);
  }
  if (message.includes('token')) return rejection(401, 'AUTHENTICATION_ERROR', message);
  return rejection(500, 'WORKER_REGISTRATION_ERROR', message || 'Failed to register worker');
}

/** The catch block of POST /:id/heartbeat. */
export function classifyHeartbeatError(err: unknown): Rejection {
  const message = messageOf(err);
  if (message.includes('must be') || message.includes('between')) {
    return rejection(400, 'VALIDATION_ERROR', message);
  }
  return rejection(500, 'HEARTBEAT_ERROR', message || 'Failed to update worker heartbeat');
}
