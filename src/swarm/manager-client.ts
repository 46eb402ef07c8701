import { readFile } from 'node:fs/promises';
import type Docker from 'dockerode';
import { AgentError } from '../errors.js';
import { createDockerClient } from './docker-client.js';

export interface ManagerEndpoint {
  swarmManagerHost?: string;
  swarmManagerCa?: string;
  swarmManagerCert?: string;
  swarmManagerKey?: string;
}

/**
 * A manager's Engine API, reached only over mutual TLS: the config refuses a host without all three
 * files, and this refuses to build a client without them, so there is no plain-TCP fallback.
 */
export async function createManagerClient(c: ManagerEndpoint): Promise<Docker> {
  if (!c.swarmManagerHost || !c.swarmManagerCa || !c.swarmManagerCert || !c.swarmManagerKey) {
    throw new AgentError('SKP_ERR_CONFIG_INVALID', 'swarmManagerHost needs swarmManagerCa, swarmManagerCert and swarmManagerKey', { field: 'swarmManagerHost' });
  }
  const read = async (key: 'swarmManagerCa' | 'swarmManagerCert' | 'swarmManagerKey') => {
    try {
      return await readFile(c[key]!);
    } catch (err) {
      throw new AgentError('SKP_ERR_CONFIG_UNREADABLE', `config key "${key}": cannot read ${c[key]} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { field: key });
    }
  };
  const [ca, cert, key] = await Promise.all([read('swarmManagerCa'), read('swarmManagerCert'), read('swarmManagerKey')]);
  const i = c.swarmManagerHost.lastIndexOf(':');
  const host = c.swarmManagerHost.slice(0, i).replace(/^\[|\]$/g, '');
  return createDockerClient({ host, port: Number(c.swarmManagerHost.slice(i + 1)), ca, cert, key, timeoutMs: 15_000 });
}
