import { readFile, stat } from 'node:fs/promises';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from './state/atomic-file.js';
import { assertPrivateFile } from './state/file-trust.js';
import { defaultSocketPath } from '../util/docker-host.js';
import { CONFIG_KEYS, configRefinements, configSchema, type AgentConfig, type AgentConfigInput } from './config-schema.js';

export type ConfigSource = 'flag' | 'env' | 'file' | 'DOCKER_HOST' | 'default';

/** The Docker Engine socket every command talks to, and which layer chose it (logged, shown by status and doctor). */
export interface DockerEndpoint {
  socketPath: string;
  source: ConfigSource;
}

/**
 * The one resolution of the Docker endpoint, shared by run, register, drain, deregister and
 * doctor: flag > SKYPANEL_AGENT_DOCKER_SOCKET > config file > DOCKER_HOST (only a unix://
 * socket: a tcp:// DOCKER_HOST would need TLS settings the agent does not take from the
 * environment) > /var/run/docker.sock. Commands that once followed different rules talked to
 * different engines on one host (register described a worker, run wrote on the manager).
 */
export function resolveDockerEndpoint(layers: { flag?: unknown; file?: unknown }, env: NodeJS.ProcessEnv = process.env): DockerEndpoint {
  const given = (v: unknown): v is string => typeof v === 'string' && v !== '';
  if (given(layers.flag)) return { socketPath: layers.flag, source: 'flag' };
  const fromEnv = env.SKYPANEL_AGENT_DOCKER_SOCKET;
  if (given(fromEnv)) return { socketPath: fromEnv, source: 'env' };
  if (given(layers.file)) return { socketPath: layers.file, source: 'file' };
  const socketPath = defaultSocketPath(env);
  return {
    socketPath,
    source: env.DOCKER_HOST?.startsWith('unix://') && socketPath === env.DOCKER_HOST.slice('unix://'.length) ? 'DOCKER_HOST' : 'default',
  };
}

/**
 * The endpoint for commands that must work without a complete config (drain, doctor, register):
 * the file's `dockerSocket` counts when the file can be read at all.
 */
export async function dockerEndpointFor(
  configPath: string,
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<DockerEndpoint> {
  const file = await readConfigFile(configPath).catch(() => undefined);
  return resolveDockerEndpoint({ flag, file: file?.dockerSocket }, env);
}

/** `unix:///var/run/docker.sock (from DOCKER_HOST)`: how logs, status and doctor name it. */
export function describeEndpoint(e: DockerEndpoint): string {
  return `unix://${e.socketPath}${e.source === 'default' ? ' (default)' : ` (from ${e.source === 'env' ? 'SKYPANEL_AGENT_DOCKER_SOCKET' : e.source === 'flag' ? '--docker-socket' : e.source === 'file' ? 'the config file' : 'DOCKER_HOST'})`}`;
}

export interface LoadConfigOptions {
  path: string;
  /** Values from command-line flags, already mapped to config keys; undefined entries are ignored. */
  flags?: Partial<Record<keyof AgentConfigInput, unknown>>;
  env?: NodeJS.ProcessEnv;
}

export interface LoadedConfig {
  config: AgentConfig;
  sources: Partial<Record<keyof AgentConfigInput, ConfigSource>>;
  fileExisted: boolean;
  /** `config.dockerSocket` and where it came from. */
  dockerEndpoint: DockerEndpoint;
}

/** Keys the file may hold: exactly the schema's keys, so a typo is reported instead of ignored. */
const FILE_KEYS = new Set(Object.keys(configSchema.shape));

/**
 * Read the config file (if any), refusing one that is not private (see assertPrivateFile): it
 * holds the worker token, and we refuse it as ssh refuses a private key others could read or swap.
 */
export async function readConfigFile(path: string): Promise<Record<string, unknown> | undefined> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new AgentError('SKP_ERR_CONFIG_UNREADABLE', `config file ${path} cannot be read (${code ?? 'error'})`);
  }
  if (!st.isFile()) throw new AgentError('SKP_ERR_CONFIG_UNREADABLE', `config file ${path} is not a regular file`);
  await assertPrivateFile(path, st, 'config file');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new AgentError('SKP_ERR_CONFIG_UNREADABLE', `config file ${path} cannot be read (${code})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // JSON.parse messages quote the offending text, which may be part of the token: keep only the position.
    const where = /position \d+/.exec(String((err as Error).message))?.[0] ?? 'unknown position';
    throw new AgentError('SKP_ERR_CONFIG_INVALID', `config file ${path} is not valid JSON (${where})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new AgentError('SKP_ERR_CONFIG_INVALID', `config file ${path} must hold a JSON object`);
  }
  for (const key of Object.keys(parsed)) {
    if (!FILE_KEYS.has(key)) {
      throw new AgentError('SKP_ERR_CONFIG_INVALID', `config file ${path}: unknown key "${key}"`, { field: key });
    }
  }
  return parsed as Record<string, unknown>;
}

function sourceLabel(key: string, source: ConfigSource | undefined, path: string): string {
  const info = CONFIG_KEYS.find((k) => k.key === key);
  switch (source) {
    case 'flag':
      return info?.flag ? ` (from ${info.flag.split(' ')[0]})` : ' (from a flag)';
    case 'env':
      return info ? ` (from ${info.env})` : ' (from the environment)';
    case 'file':
      return ` (from ${path})`;
    case 'DOCKER_HOST':
      return ' (from DOCKER_HOST)';
    default:
      return '';
  }
}

/** Merge flags > environment > file > defaults, validate once, and name the offending key on error. */
export async function loadConfig(opts: LoadConfigOptions): Promise<LoadedConfig> {
  const env = opts.env ?? process.env;
  const file = await readConfigFile(opts.path);
  const merged: Record<string, unknown> = {};
  const sources: LoadedConfig['sources'] = {};
  const layers: [ConfigSource, Record<string, unknown>][] = [['file', file ?? {}]];
  const fromEnv: Record<string, unknown> = {};
  for (const info of CONFIG_KEYS) {
    const v = env[info.env];
    if (v !== undefined && v !== '') fromEnv[info.key] = v;
  }
  layers.push(['env', fromEnv], ['flag', opts.flags ?? {}]);
  for (const [source, values] of layers) {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) continue;
      merged[key] = value;
      sources[key as keyof AgentConfigInput] = source;
    }
  }
  const dockerEndpoint = resolveDockerEndpoint({ flag: opts.flags?.dockerSocket, file: file?.dockerSocket }, env);
  merged.dockerSocket = dockerEndpoint.socketPath;
  if (dockerEndpoint.source === 'default') delete sources.dockerSocket;
  else sources.dockerSocket = dockerEndpoint.source;
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.path.map(String).join('.') || '(root)';
    const missing = issue.code === 'invalid_type' && merged[key] === undefined;
    const hint = missing && file === undefined ? `; config file ${opts.path} does not exist (run \`skypanel-agent register\` first)` : '';
    const what = missing ? 'is required' : issue.message;
    throw new AgentError(
      'SKP_ERR_CONFIG_INVALID',
      `config key "${key}"${sourceLabel(key, sources[key as keyof AgentConfigInput], opts.path)} ${what}${hint}`,
      { field: key },
    );
  }
  for (const rule of configRefinements) {
    if (!rule.check(result.data)) {
      throw new AgentError('SKP_ERR_CONFIG_INVALID', `config key "${rule.field}": ${rule.message}`, { field: rule.field });
    }
  }
  return { config: result.data, sources, fileExisted: file !== undefined, dockerEndpoint };
}

/** Persist the config atomically with mode 0600 (it holds the token). */
export async function writeConfigFile(path: string, config: AgentConfigInput): Promise<void> {
  configSchema.parse(config);
  // Write only what was set: defaults stay defaults, so a later release can change them.
  const explicit = Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined));
  await writeFileAtomic(path, `${JSON.stringify(explicit, null, 2)}\n`, 0o600);
}
