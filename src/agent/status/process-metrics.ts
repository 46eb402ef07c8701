import { readFileSync, readdirSync } from 'node:fs';

/**
 * The process and Node.js metrics, under the names prom-client's collectDefaultMetrics uses, so
 * the usual Node dashboards and alerts work on the agent without prom-client itself (its
 * collectors add timers and perf hooks this small agent does not need). Read at render time from
 * the running process and /proc; nothing is spawned and nothing is cached.
 */

function openFdCount(): number | undefined {
  try {
    // readdirSync holds one descriptor of its own on /proc/self/fd while listing; do not count it.
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return undefined; // not Linux, or /proc not mounted: leave the metric out
  }
}

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** VmSize and VmData of /proc/self/status, in bytes (prom-client: virtual memory and "heap"). */
function procStatusBytes(text: string | undefined, field: string): number | undefined {
  const m = text === undefined ? null : new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

function maxFds(): number | undefined {
  const m = /^Max open files\s+(\d+)/m.exec(readProc('/proc/self/limits') ?? '');
  return m ? Number(m[1]) : undefined;
}

type Row = [name: string, type: 'gauge' | 'counter', help: string, value: number | undefined, labels?: string];

export function renderProcessMetrics(formatValue: (n: number) => string): string {
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  const status = readProc('/proc/self/status');
  const [major, minor, patch] = process.versions.node.split('.');
  const rows: Row[] = [
    ['process_cpu_user_seconds_total', 'counter', 'Total user CPU time spent in seconds.', cpu.user / 1e6],
    ['process_cpu_system_seconds_total', 'counter', 'Total system CPU time spent in seconds.', cpu.system / 1e6],
    ['process_cpu_seconds_total', 'counter', 'Total user and system CPU time spent in seconds.', (cpu.user + cpu.system) / 1e6],
    [
      'process_start_time_seconds',
      'gauge',
      'Start time of the process since unix epoch in seconds.',
      Math.round(Date.now() / 1000 - process.uptime()),
    ],
    ['process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', mem.rss],
    ['process_virtual_memory_bytes', 'gauge', 'Virtual memory size in bytes.', procStatusBytes(status, 'VmSize')],
    ['process_heap_bytes', 'gauge', 'Process heap size in bytes.', procStatusBytes(status, 'VmData')],
    ['process_open_fds', 'gauge', 'Number of open file descriptors.', openFdCount()],
    ['process_max_fds', 'gauge', 'Maximum number of open file descriptors.', maxFds()],
    ['nodejs_heap_size_total_bytes', 'gauge', 'Process heap size from Node.js in bytes.', mem.heapTotal],
    ['nodejs_heap_size_used_bytes', 'gauge', 'Process heap size used from Node.js in bytes.', mem.heapUsed],
    ['nodejs_external_memory_bytes', 'gauge', 'Node.js external memory size in bytes.', mem.external],
    [
      'nodejs_version_info',
      'gauge',
      'Node.js version info.',
      1,
      `{version="v${process.versions.node}",major="${major}",minor="${minor}",patch="${patch}"}`,
    ],
  ];
  return rows
    .filter((r): r is [string, 'gauge' | 'counter', string, number, string?] => r[3] !== undefined)
    .map(([name, type, help, v, labels]) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name}${labels ?? ''} ${formatValue(v)}\n`)
    .join('');
}
