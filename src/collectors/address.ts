import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

/**
 * SkyPanelV2 accepts only dotted IPv4 or fully expanded 8-group IPv6 (it rejects `fd00::5`), so
 * every IPv6 address is written out in full before it is sent.
 */
export function expandIpv6(addr: string): string {
  let a = addr.split('%')[0]!.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (v4) {
    const [b1, b2, b3, b4] = v4.slice(1).map(Number) as [number, number, number, number];
    a = a.slice(0, v4.index) + ((b1 << 8) | b2).toString(16) + ':' + ((b3 << 8) | b4).toString(16);
  }
  const [head, tail] = a.includes('::') ? (a.split('::') as [string, string]) : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : new Array(8 - h.length - t.length).fill('0');
  const groups = [...h, ...fill, ...t];
  if (groups.length !== 8) throw new Error(`not an IPv6 address: ${addr}`);
  return groups.map((g) => g.padStart(4, '0')).join(':');
}

/** Normalise an address to the form SkyPanelV2 accepts; undefined when it is not an IP at all. */
export function toPanelIp(addr: string): string | undefined {
  const kind = isIP(addr.split('%')[0]!);
  if (kind === 4) return addr;
  if (kind === 6) {
    const full = expandIpv6(addr);
    // IPv4-mapped IPv6 (::ffff:a.b.c.d) is really IPv4.
    const mapped = /^0000:0000:0000:0000:0000:ffff:([0-9a-f]{4}):([0-9a-f]{4})$/.exec(full);
    if (mapped) {
      const hi = parseInt(mapped[1]!, 16);
      const lo = parseInt(mapped[2]!, 16);
      return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
    }
    return full;
  }
  return undefined;
}

/**
 * The local address this host uses to reach the control plane: "connect" a UDP socket (which
 * sends nothing) and ask the kernel which source address it chose for that route.
 */
export async function localAddressToward(url: string): Promise<string> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
  const target = isIP(host) ? { address: host, family: isIP(host) } : await lookup(host);
  const sock = createSocket(target.family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(port, target.address, () => resolve());
    });
    const local = sock.address().address;
    const ip = toPanelIp(local);
    if (!ip) throw new Error(`unexpected local address ${local}`);
    return ip;
  } finally {
    sock.close();
  }
}

export type AddressScope = 'loopback' | 'private' | 'link-local' | 'public';

/**
 * Which network an address belongs to, for the warning at register: SkyPanelV2 builds a
 * deployment's public URL from the worker's address, and a loopback or private one only works
 * from this host or its LAN. Takes either form toPanelIp returns (dotted IPv4, full IPv6).
 */
export function addressScope(ip: string): AddressScope {
  const v4 = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(ip);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    if (a === 127) return 'loopback';
    if (a === 169 && b === 254) return 'link-local';
    // RFC 1918, and RFC 6598 carrier-grade NAT (100.64/10): not reachable from the internet either.
    if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127)) return 'private';
    return 'public';
  }
  const full = isIP(ip) === 6 ? expandIpv6(ip) : ip;
  if (full === '0000:0000:0000:0000:0000:0000:0000:0001') return 'loopback';
  if (/^fe[89ab]/.test(full)) return 'link-local';
  if (/^f[cd]/.test(full)) return 'private';
  return 'public';
}
