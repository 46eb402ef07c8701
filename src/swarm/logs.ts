/**
 * Docker multiplexes stdout and stderr of a non-TTY container into frames: an 8-byte header
 * (stream, 0, 0, 0, big-endian length) then the payload. Returns the text lines, in order.
 * Input that is not framed (a TTY service) is returned as plain lines.
 */
export function demuxDockerLogs(buf: Buffer): string[] {
  const chunks: Buffer[] = [];
  let off = 0;
  let framed = buf.length >= 8;
  while (framed && off + 8 <= buf.length) {
    const stream = buf[off]!;
    const len = buf.readUInt32BE(off + 4);
    if (stream > 2 || buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0 || off + 8 + len > buf.length) {
      framed = false;
      break;
    }
    chunks.push(buf.subarray(off + 8, off + 8 + len));
    off += 8 + len;
  }
  const text = framed ? Buffer.concat(chunks).toString('utf8') : buf.toString('utf8');
  return text.split('\n').filter((l, i, all) => l.length > 0 || i < all.length - 1);
}
