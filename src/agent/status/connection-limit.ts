import { isIPv6 } from 'node:net';
import type { Server } from 'node:net';
import type { Socket } from 'node:net';

/**
 * Connections one client address may hold on the status API at once. The server-wide cap (64)
 * alone let one client fill every slot with sockets that never finish their headers, so the
 * panel's pulls found none free; with this, one address holds at most an eighth of them. The
 * panel needs one or two at a time (a scraper alongside it, a few more).
 */
export const MAX_CONNECTIONS_PER_ADDRESS = 8;

/**
 * The key a client's connections are counted under: its IPv4 address, or its IPv6 /64 (one host
 * usually has a whole /64 to pick source addresses from). IPv4-mapped addresses count as IPv4.
 */
export function clientKey(address: string | undefined): string {
  if (address === undefined) return '?';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  return expandV6(address).slice(0, 4).join(':');
}

function expandV6(address: string): string[] {
  const [head, tail] = address.split('%')[0]!.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? [] : Array.from({ length: 8 - left.length - right.length }, () => '0');
  return [...left, ...fill, ...right].map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''));
}

/**
 * Refuses a connection beyond `max` from one client key as it is accepted: before TLS and before
 * any byte is read, so a refused socket costs nothing but its accept. The count drops as each
 * socket closes; the map holds only clients with a connection open.
 */
export function limitConnectionsPerAddress(
  server: Server,
  max: number = MAX_CONNECTIONS_PER_ADDRESS,
  onRefused?: (key: string) => void,
): void {
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const key = clientKey(socket.remoteAddress);
    const n = open.get(key) ?? 0;
    if (n >= max) {
      onRefused?.(key);
      socket.destroy();
      return;
    }
    open.set(key, n + 1);
    socket.once('close', () => {
      const left = (open.get(key) ?? 1) - 1;
      if (left <= 0) open.delete(key);
      else open.set(key, left);
    });
  });
}
