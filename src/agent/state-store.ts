import { mkdir, readFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.js';

/**
 * The agent's durable state directory: small JSON documents, each written atomically, mode 0600
 * in a 0700 directory (the desired set holds deployment secrets). Intent is persisted; actual
 * state is always re-read from Docker.
 */
export class StateStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
  }

  async read<T>(name: string): Promise<T | undefined> {
    let text: string;
    try {
      text = await readFile(join(this.dir, name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      // A torn file cannot happen with atomic writes; a hand-edited one is treated as absent.
      return undefined;
    }
  }

  async write(name: string, value: unknown): Promise<void> {
    await writeFileAtomic(join(this.dir, name), JSON.stringify(value), 0o600);
  }
}
