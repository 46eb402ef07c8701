import type { ServerResponse } from 'node:http';

/** How much an endless body offers at most before it ends by itself: far past any client cap. */
const OFFERED_BYTES = 8 << 20;

/**
 * Writes 64 KiB chunks (chunked: no Content-Length a client could refuse up front) until
 * OFFERED_BYTES or until the client goes away, honouring backpressure. Resolves true when the
 * client closed the connection before taking it all: what a size cap must do instead of reading on.
 */
export function endlessBody(res: ServerResponse): Promise<boolean> {
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  let sent = 0;
  return new Promise((resolve) => {
    res.on('close', () => resolve(sent < OFFERED_BYTES));
    const pump = () => {
      while (sent < OFFERED_BYTES && !res.destroyed) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
}
