import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A unix-socket proxy in front of the real Docker socket that records the request line of every
 * Engine API call passing through, so a test can assert what an agent did (or never did) to Docker.
 */
export class DockerProxy {
  readonly socketPath = join(mkdtempSync(join(tmpdir(), 'skp-dproxy-')), 'docker.sock');
  readonly requests: string[] = [];
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();

  async start(target = '/var/run/docker.sock'): Promise<void> {
    this.#server = createServer((client) => {
      const upstream = createConnection(target);
      this.#sockets.add(client).add(upstream);
      client.on('data', (chunk: Buffer) => {
        for (const m of chunk.toString('latin1').matchAll(/(?:^|\r\n)(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP\/1\.[01]/g)) {
          this.requests.push(`${m[1]} ${decodeURIComponent(m[2]!).split('?')[0]}`);
        }
      });
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
    await new Promise<void>((resolve) => this.#server!.listen(this.socketPath, resolve));
  }

  writes(): string[] {
    return this.requests.filter((r) => !r.startsWith('GET') && !r.startsWith('HEAD'));
  }

  async stop(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}
