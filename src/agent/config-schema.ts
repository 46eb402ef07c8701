import { z } from 'zod';
import { parsePortRanges } from '../domain/host-ports.js';
import { DEFAULT_ORG_NETWORK_POOL, DEFAULT_ORG_NETWORK_PREFIX, parseCidr } from '../domain/subnets.js';

export { DEFAULT_ORG_NETWORK_POOL, DEFAULT_ORG_NETWORK_PREFIX };

/**
 * The agent's configuration: the single source of truth for every key, its environment
 * variable, its default and its README description. `docs/` and `--help` are generated from
 * or checked against this table.
 */
export interface ConfigKeyInfo {
  key: keyof AgentConfigInput;
  env: string;
  flag?: string;
  default?: string;
  description: string;
}

export const DEFAULT_CONFIG_PATH = '/etc/skypanel-agent/config.json';
export const DEFAULT_STATE_DIR = '/var/lib/skypanel-agent';
/** The system user `install` creates and runs the unit as; it owns the config it is handed. */
export const SERVICE_USER = 'skypanel-agent';
/**
 * Usage samples once a minute (Prometheus' default scrape interval). CPU and network are
 * cumulative counters, exact at any interval; only the memory integral's resolution depends on
 * it, and a sample costs a read of every managed container's counters (bench: at 100 containers,
 * 15 s sampling was most of the agent's idle CPU). It also sets the gap that marks a period
 * incomplete (two intervals plus 1 s), so a restart under two minutes no longer does.
 */
export const DEFAULT_USAGE_SAMPLE_INTERVAL_SEC = 60;
export const DEFAULT_USAGE_PERIOD_SEC = 3600;
/**
 * How long a task may wait for Swarm to place it (state new or pending) before its deployment is
 * reported failed with Swarm's reason. Placement takes milliseconds when a node fits (image pulls
 * come later, in `preparing`), so a minute of waiting means it will not fit until something changes.
 */
export const DEFAULT_UNSCHEDULED_TIMEOUT_SEC = 60;

const ipv4Cidr = z.string().refine((v) => parseCidr(v) !== undefined, 'must be an IPv4 CIDR with zero host bits, e.g. 10.128.0.0/9');
/** Loopback: a Prometheus on this host (or a node-exporter-style sidecar) scrapes it without any token. */
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9741';

const httpUrl = z
  .string()
  .url()
  .refine((u) => /^https?:$/.test(new URL(u).protocol), 'must be an http:// or https:// URL')
  .transform((u) => u.replace(/\/+$/, ''));

export const configSchema = z.object({
  controlPlaneUrl: httpUrl,
  token: z
    .string()
    .min(1, 'must not be empty')
    .max(8192)
    .refine((t) => !/\s/.test(t), 'must not contain whitespace'),
  workerId: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9_.-]+$/, 'must be letters, digits, _ . -')
    .optional(),
  heartbeatIntervalSec: z.coerce.number().int().min(1).max(600).default(30),
  pollIntervalSec: z.coerce.number().int().min(1).max(3600).default(30),
  resyncIntervalSec: z.coerce.number().int().min(5).max(3600).default(300),
  publicUrlTemplate: z
    .string()
    .min(1)
    .max(2048)
    .refine((t) => /^https?:\/\//.test(t), 'must start with http:// or https://')
    .default('http://{ipAddress}:{externalPort}'),
  usageSampleIntervalSec: z.coerce.number().int().min(1).max(300).default(DEFAULT_USAGE_SAMPLE_INTERVAL_SEC),
  usagePeriodSec: z.coerce.number().int().min(10).max(86_400).default(DEFAULT_USAGE_PERIOD_SEC),
  requestTimeoutSec: z.coerce.number().min(1).max(120).default(10),
  backoffCapSec: z.coerce.number().min(1).max(3600).default(60),
  ipAddress: z.string().min(1).optional(),
  name: z.string().min(1).max(255).optional(),
  stateDir: z.string().min(1).default(DEFAULT_STATE_DIR),
  dockerSocket: z.string().min(1).default('/var/run/docker.sock'),
  reconcileMode: z.enum(['auto', 'observe']).default('auto'),
  orgNetworkPool: ipv4Cidr.default(DEFAULT_ORG_NETWORK_POOL),
  orgNetworkPrefix: z.coerce.number().int().min(8).max(28).default(DEFAULT_ORG_NETWORK_PREFIX),
  unscheduledTimeoutSec: z.coerce.number().int().min(5).max(3600).default(DEFAULT_UNSCHEDULED_TIMEOUT_SEC),
  swarmManagerHost: z
    .string()
    .regex(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/, 'must be host:port')
    .optional(),
  swarmManagerCa: z.string().min(1).optional(),
  swarmManagerCert: z.string().min(1).optional(),
  swarmManagerKey: z.string().min(1).optional(),
  statusListen: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):\d{1,5}$/, 'must be host:port or [ipv6]:port')
    .default('0.0.0.0:9740'),
  metricsListen: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):\d{1,5}$|^off$/, 'must be host:port, [ipv6]:port or off')
    .default(DEFAULT_METRICS_LISTEN),
  metricsToken: z
    .string()
    .min(16, 'must be at least 16 characters')
    .max(512)
    .refine((t) => !/\s/.test(t), 'must not contain whitespace')
    .optional(),
  statusTlsCert: z.string().min(1).optional(),
  statusTlsKey: z.string().min(1).optional(),
  // A string from the environment ("80,443,8000-8100"), a string or an array in the file.
  allowedHostPorts: z
    .union([z.string().max(2000), z.array(z.union([z.number(), z.string()])).max(100)])
    .default('')
    .transform((v, ctx) => {
      const ranges = parsePortRanges(v);
      if (typeof ranges !== 'string') return ranges;
      ctx.addIssue({ code: 'custom', message: ranges });
      return z.NEVER;
    }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type AgentConfig = z.infer<typeof configSchema>;

/** Cross-key rules the per-key schema cannot express. */
export const configRefinements: { field: keyof AgentConfig; check: (c: AgentConfig) => boolean; message: string }[] = [
  {
    field: 'swarmManagerHost',
    check: (c) =>
      c.swarmManagerHost === undefined ||
      (c.swarmManagerCa !== undefined && c.swarmManagerCert !== undefined && c.swarmManagerKey !== undefined),
    message: 'needs swarmManagerCa, swarmManagerCert and swarmManagerKey: the manager API is only ever reached over mutual TLS',
  },
  {
    field: 'orgNetworkPrefix',
    check: (c) => c.orgNetworkPrefix >= (parseCidr(c.orgNetworkPool)?.prefix ?? 0),
    message: 'must be at least the prefix length of orgNetworkPool (each organization network is carved out of the pool)',
  },
  {
    field: 'usageSampleIntervalSec',
    check: (c) => c.usageSampleIntervalSec * 2 <= c.usagePeriodSec,
    message: 'must be at most half of usagePeriodSec',
  },
  {
    field: 'statusTlsKey',
    check: (c) => (c.statusTlsCert === undefined) === (c.statusTlsKey === undefined),
    message: 'statusTlsCert and statusTlsKey must be set together',
  },
];
export type AgentConfigInput = z.input<typeof configSchema>;

export const CONFIG_KEYS: readonly ConfigKeyInfo[] = [
  {
    key: 'controlPlaneUrl',
    env: 'SKYPANEL_AGENT_CONTROL_PLANE_URL',
    flag: '--control-plane',
    description: 'Panel origin, e.g. https://panel.example.com',
  },
  {
    key: 'token',
    env: 'SKYPANEL_AGENT_TOKEN',
    flag: '--token / --token-file',
    description: 'Worker token issued by the panel (kept only in the 0600 config file)',
  },
  { key: 'workerId', env: 'SKYPANEL_AGENT_WORKER_ID', description: 'Worker id returned by register; written by `register`' },
  {
    key: 'heartbeatIntervalSec',
    env: 'SKYPANEL_AGENT_HEARTBEAT_INTERVAL',
    flag: '--heartbeat-interval',
    default: '30',
    description: 'Seconds between heartbeats (the panel marks a worker offline after 120 s)',
  },
  {
    key: 'pollIntervalSec',
    env: 'SKYPANEL_AGENT_POLL_INTERVAL',
    flag: '--poll-interval',
    default: '30',
    description:
      'Seconds between desired-state polls (If-None-Match: an unchanged set costs one 304; skipped when a heartbeat answer since the last poll named the set held)',
  },
  {
    key: 'resyncIntervalSec',
    env: 'SKYPANEL_AGENT_RESYNC_INTERVAL',
    default: '300',
    description:
      'Seconds between full reconcile passes when nothing changed (Docker events start one at once; every 60 s at most while the event stream is down)',
  },
  {
    key: 'publicUrlTemplate',
    env: 'SKYPANEL_AGENT_PUBLIC_URL_TEMPLATE',
    default: 'http://{ipAddress}:{externalPort}',
    description:
      'Public URL reported per deployment: {ipAddress} (bracketed when IPv6), {externalPort}, {slug} and {serviceId} (URL-encoded); none until a port is published',
  },
  {
    key: 'usageSampleIntervalSec',
    env: 'SKYPANEL_AGENT_USAGE_SAMPLE_INTERVAL',
    default: String(DEFAULT_USAGE_SAMPLE_INTERVAL_SEC),
    description: 'Seconds between usage samples of the managed containers',
  },
  {
    key: 'usagePeriodSec',
    env: 'SKYPANEL_AGENT_USAGE_PERIOD',
    flag: '--usage-period',
    default: String(DEFAULT_USAGE_PERIOD_SEC),
    description: 'Usage period length, aligned to UTC multiples (3600 = hourly billing)',
  },
  {
    key: 'requestTimeoutSec',
    env: 'SKYPANEL_AGENT_REQUEST_TIMEOUT',
    default: '10',
    description: 'Bound on each control-plane request (connect, headers, body)',
  },
  {
    key: 'backoffCapSec',
    env: 'SKYPANEL_AGENT_BACKOFF_CAP',
    default: '60',
    description: 'Longest wait between retries after failures (jittered over the whole window)',
  },
  {
    key: 'ipAddress',
    env: 'SKYPANEL_AGENT_IP_ADDRESS',
    flag: '--ip-address',
    description: 'Address reported to the panel; default: the local address used to reach it',
  },
  { key: 'name', env: 'SKYPANEL_AGENT_NAME', flag: '--name', description: 'Human-readable worker name sent in register metadata' },
  {
    key: 'stateDir',
    env: 'SKYPANEL_AGENT_STATE_DIR',
    flag: '--state-dir',
    default: DEFAULT_STATE_DIR,
    description: 'Directory for durable agent state',
  },
  {
    key: 'dockerSocket',
    env: 'SKYPANEL_AGENT_DOCKER_SOCKET',
    flag: '--docker-socket',
    default: '/var/run/docker.sock',
    description:
      'Docker Engine API socket, used by every command; unset, DOCKER_HOST counts when it names a unix socket (unix://PATH), then the default',
  },
  {
    key: 'reconcileMode',
    env: 'SKYPANEL_AGENT_RECONCILE_MODE',
    default: 'auto',
    description: 'auto (write through a manager when there is one) or observe (report only, never write)',
  },
  {
    key: 'orgNetworkPool',
    env: 'SKYPANEL_AGENT_ORG_NETWORK_POOL',
    default: DEFAULT_ORG_NETWORK_POOL,
    description:
      'IPv4 range new organization overlay networks get their subnets from (one per organization; existing networks keep theirs)',
  },
  {
    key: 'orgNetworkPrefix',
    env: 'SKYPANEL_AGENT_ORG_NETWORK_PREFIX',
    default: String(DEFAULT_ORG_NETWORK_PREFIX),
    description: 'Prefix length of each new organization network: 20 = 4,093 task addresses (22: about 1,000)',
  },
  {
    key: 'unscheduledTimeoutSec',
    env: 'SKYPANEL_AGENT_UNSCHEDULED_TIMEOUT',
    default: String(DEFAULT_UNSCHEDULED_TIMEOUT_SEC),
    description:
      "Seconds a task may wait for Swarm to place it (new/pending) before its deployment is reported failed with Swarm's reason; it turns running by itself once placed",
  },
  {
    key: 'swarmManagerHost',
    env: 'SKYPANEL_AGENT_SWARM_MANAGER_HOST',
    description: "A manager's Engine API (host:port, TLS) for a worker node to write its services through",
  },
  { key: 'swarmManagerCa', env: 'SKYPANEL_AGENT_SWARM_MANAGER_CA', description: 'CA certificate file for swarmManagerHost' },
  { key: 'swarmManagerCert', env: 'SKYPANEL_AGENT_SWARM_MANAGER_CERT', description: 'Client certificate file for swarmManagerHost' },
  { key: 'swarmManagerKey', env: 'SKYPANEL_AGENT_SWARM_MANAGER_KEY', description: 'Client key file for swarmManagerHost' },
  {
    key: 'statusListen',
    env: 'SKYPANEL_AGENT_STATUS_LISTEN',
    flag: '--status-listen',
    default: '0.0.0.0:9740',
    description: 'Address of the status API (healthz, status, deployments, metrics)',
  },
  {
    key: 'metricsListen',
    env: 'SKYPANEL_AGENT_METRICS_LISTEN',
    flag: '--metrics-listen',
    default: DEFAULT_METRICS_LISTEN,
    description: 'Address of the Prometheus /metrics listener, which needs no worker token; off to disable',
  },
  {
    key: 'metricsToken',
    env: 'SKYPANEL_AGENT_METRICS_TOKEN',
    description: 'Optional bearer token (16+ characters) the metrics listener requires; not the worker token',
  },
  {
    key: 'statusTlsCert',
    env: 'SKYPANEL_AGENT_STATUS_TLS_CERT',
    description: 'PEM certificate file: serve the status API over HTTPS (with statusTlsKey)',
  },
  { key: 'statusTlsKey', env: 'SKYPANEL_AGENT_STATUS_TLS_KEY', description: 'PEM private key file for statusTlsCert' },
  {
    key: 'allowedHostPorts',
    env: 'SKYPANEL_AGENT_ALLOWED_HOST_PORTS',
    description:
      'Host ports deployments may publish although reserved (22, 2375-2377, 4789, 7946 and all below 1024 are refused otherwise), e.g. `80,443` or `8000-8100`; the status port is never allowed',
  },
  {
    key: 'logLevel',
    env: 'SKYPANEL_AGENT_LOG_LEVEL',
    flag: '--log-level',
    default: 'info',
    description: 'fatal, error, warn, info, debug, trace or silent',
  },
];
