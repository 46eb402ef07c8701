import { readFile } from 'node:fs/promises';
import { AgentError } from '../errors.js';
import { createDockerClient, type EngineClient } from './docker-client.js';

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
export async function createManagerClient(c: ManagerEndpoint): Promise<EngineClient> {
  if (!c.swarmManagerHost || !c.swarmManagerCa || !c.swarmManagerCert || !c.swarmManagerKey) {
    throw new AgentError('SKP_ERR_CONFIG_INVALID', 'swarmManagerHost needs swarmManagerCa, swarmManagerCert and swarmManagerKey', {
      field: 'swarmManagerHost',
    });
  }
  const read = async (key: 'swarmManagerCa' | 'swarmManagerCert' | 'swarmManagerKey') => {
    try {
      return await readFile(c[key]!);
    } catch (err) {
      throw new AgentError(
        'SKP_ERR_CONFIG_UNREADABLE',
        `config key "${key}": cannot read ${c[key]} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
        { field: key },
      );
    }
  };
  const [ca, cert, key] = await Promise.all([read('swarmManagerCa'), read('swarmManagerCert'), read('swarmManagerKey')]);
  const i = c.swarmManagerHost.lastIndexOf(':');
  const host = c.swarmManagerHost.slice(0, i).replace(/^\[|\]$/g, '');
  const endpoint = c.swarmManagerHost;
  return createDockerClient({
    host,
    port: Number(c.swarmManagerHost.slice(i + 1)),
    ca,
    cert,
    key,
    timeoutMs: MANAGER_TIMEOUT_MS,
    explainTransportError: (err, elapsedMs) => explainManagerError(err, endpoint, elapsedMs) as Error,
  });
}

const MANAGER_TIMEOUT_MS = 15_000;

/** The server's certificate did not verify against swarmManagerCa (Node's codes for it). */
const SERVER_CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * A refused TLS connection surfaces as bare "socket hang up" or an OpenSSL alert string, which says
 * nothing about the cause or the endpoint. Connection-level errors of the manager client (never
 * HTTP answers, which carry the Engine API's own message) are reworded to name the endpoint and
 * the config key to check. The original code is kept.
 */
export function explainManagerError(err: unknown, endpoint: string, elapsedMs: number, timeoutMs = MANAGER_TIMEOUT_MS): unknown {
  if (!(err instanceof Error) || (err as { statusCode?: unknown }).statusCode !== undefined) return err;
  const code = String((err as NodeJS.ErrnoException).code ?? '');
  const detail = err.message
    .replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:/, '')
    .replace(/:\.\.\/.*$/s, '')
    .trim();
  let text: string | undefined;
  if (/^ERR_SSL_.*ALERT/.test(code) || /^ERR_SSL_.*CERTIFICATE_REQUIRED/.test(code)) {
    text = `refused this agent's TLS client certificate (${detail}): swarmManagerCert and swarmManagerKey must be a pair signed by a CA the manager trusts (dockerd --tlscacert)`;
  } else if (SERVER_CERT_CODES.has(code)) {
    text = `presented a certificate that does not verify against swarmManagerCa (${code}: ${detail})`;
  } else if ((code === 'ECONNRESET' || /socket hang up/.test(err.message)) && elapsedMs < timeoutMs * 0.9) {
    text = `closed the TLS connection without answering (${detail}); a manager that verifies client certificates does this when it does not trust swarmManagerCert`;
  } else if (code === 'ECONNRESET' || code === 'ETIMEDOUT' || /socket hang up/.test(err.message)) {
    text = `did not answer within ${timeoutMs} ms`;
  }
  if (text === undefined) return err;
  const out = new Error(`manager ${endpoint} (mutual TLS) ${text}`) as NodeJS.ErrnoException;
  if (code) out.code = code;
  return out;
}
