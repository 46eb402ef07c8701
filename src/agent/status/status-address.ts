import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../state/atomic-file.js';

/**
 * Where the running agent's status API listens, written into the state directory at every start.
 * `run --status-listen` and SKYPANEL_AGENT_STATUS_LISTEN (a unit drop-in) are not in the config
 * file, and port 0 is only known once bound: `status` and `doctor` read this file first, so they
 * find the agent where it really is. It stays after a stop: it then names where the agent last
 * listened, which is where it will listen again unless its flags change.
 */
export const STATUS_ADDRESS_FILE = 'status-api.json';

const statusAddressSchema = z.object({
  /** The listen setting the agent ran with, e.g. "0.0.0.0:9740" or "127.0.0.1:0". */
  listen: z.string(),
  /** The port actually bound (differs from the setting's only for port 0). */
  port: z.number().int().min(1).max(65535),
  tls: z.boolean(),
});

export type StatusAddress = z.infer<typeof statusAddressSchema>;

export async function writeStatusAddress(stateDir: string, address: StatusAddress): Promise<void> {
  await writeFileAtomic(join(stateDir, STATUS_ADDRESS_FILE), `${JSON.stringify(address)}\n`, 0o600);
}

/** undefined when the file is absent, unreadable or malformed: callers fall back to the config. */
export async function readStatusAddress(stateDir: string): Promise<StatusAddress | undefined> {
  try {
    const parsed = statusAddressSchema.safeParse(JSON.parse(await readFile(join(stateDir, STATUS_ADDRESS_FILE), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** The address clients should use: the setting's host with the port really bound. */
export function boundListen(address: StatusAddress): string {
  const host = address.listen.slice(0, address.listen.lastIndexOf(':'));
  return `${host}:${address.port}`;
}
