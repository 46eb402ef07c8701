import { readFile } from 'node:fs/promises';
import { availableParallelism, hostname as osHostname, release } from 'node:os';

/** PRETTY_NAME from os-release, read once at start-up (systeminformation would fork lsb_release). */
export function parseOsRelease(text: string): string | undefined {
  const m = /^PRETTY_NAME=(.*)$/m.exec(text);
  if (!m) return undefined;
  return m[1]!.trim().replace(/^["']|["']$/g, '');
}

export async function readOsVersion(): Promise<string> {
  for (const path of ['/etc/os-release', '/usr/lib/os-release']) {
    try {
      const name = parseOsRelease(await readFile(path, 'utf8'));
      if (name) return `${name} (kernel ${release()})`;
    } catch {
      // try the next location
    }
  }
  return `Linux (kernel ${release()})`;
}

export function readHostname(): string {
  return osHostname();
}

export function readCpuCores(): number {
  return availableParallelism();
}
