import type { Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { assertPrivateFile } from '../agent/state/file-trust.js';
import { AgentError } from '../errors.js';
import { Secret } from '../secret.js';

export interface TokenSources {
  token?: string;
  tokenFile?: string;
  stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
}

/**
 * The token comes from --token, --token-file (`-` = stdin) or piped stdin, so it can stay out of
 * shell history. A token file that is not private (others can read it, another user owns it, or its
 * directory is writable by others) is refused, as ssh refuses such a key.
 */
export async function readToken(src: TokenSources): Promise<Secret> {
  let raw: string | undefined = src.token;
  if (raw === undefined && src.tokenFile !== undefined && src.tokenFile !== '-') {
    const path = src.tokenFile;
    let st: Stats;
    try {
      st = await stat(path);
    } catch (err) {
      throw new AgentError('SKP_ERR_USAGE', `--token-file ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
        field: 'token',
      });
    }
    await assertPrivateFile(path, st, '--token-file');
    raw = await readFile(path, 'utf8');
  } else if (raw === undefined && src.stdin && (src.tokenFile === '-' || src.stdin.isTTY !== true)) {
    raw = await readAll(src.stdin);
  }
  const token = raw?.trim();
  if (!token)
    throw new AgentError('SKP_ERR_USAGE', 'a worker token is required: --token, --token-file FILE, or pipe it on stdin', {
      field: 'token',
    });
  if (/\s/.test(token)) throw new AgentError('SKP_ERR_USAGE', 'the worker token must be a single line without spaces', { field: 'token' });
  return new Secret(token);
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) {
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    if (chunks.reduce((n, c) => n + c.length, 0) > 16_384)
      throw new AgentError('SKP_ERR_USAGE', 'token on stdin is longer than 16 KiB', { field: 'token' });
  }
  return Buffer.concat(chunks).toString('utf8');
}
