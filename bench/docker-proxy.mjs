// A counting pass-through in front of the Docker socket: the footprint agent is pointed at it
// (SKYPANEL_AGENT_DOCKER_SOCKET) so the bench sees which Engine API calls a steady agent makes, and
// when, without touching the agent. Bytes are forwarded untouched; request lines are only read.
import { rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';

const REQUEST_LINE = /(GET|POST|PUT|DELETE|HEAD) (\/[^ \r\n]*) HTTP\/1\.[01]\r\n/g;

/** `GET /v1.41/containers/abc123/stats?x` → `GET /containers/{id}/stats` */
export function routeOf(method, url) {
  const path = url.split('?')[0].replace(/^\/v\d+\.\d+/, '');
  return `${method} ${path.replace(/\/[0-9a-f]{64}(?=\/|$)/g, '/{id}').replace(/\/[a-z0-9]{25}(?=\/|$)/g, '/{id}')}`;
}

export async function startDockerProxy(socketPath, upstream = '/var/run/docker.sock') {
  rmSync(socketPath, { force: true });
  /** Every request seen: [Date.now(), route]. */
  const calls = [];
  const sockets = new Set();
  const server = createServer((client) => {
    const engine = createConnection(upstream);
    sockets.add(client);
    sockets.add(engine);
    let carry = '';
    client.on('data', (chunk) => {
      // Request lines can straddle chunks: keep a short tail of the previous one.
      const text = carry + chunk.toString('latin1');
      for (const m of text.matchAll(REQUEST_LINE)) calls.push([Date.now(), routeOf(m[1], m[2])]);
      const cut = text.lastIndexOf('\r\n');
      carry = (cut === -1 ? text : text.slice(cut + 2)).slice(-8192);
    });
    client.pipe(engine);
    engine.pipe(client);
    const end = () => {
      client.destroy();
      engine.destroy();
      sockets.delete(client);
      sockets.delete(engine);
    };
    client.on('error', end);
    engine.on('error', end);
    client.on('close', end);
    engine.on('close', end);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  return {
    socketPath,
    calls,
    /** Calls by route in [from, to] (Date.now() times). */
    countBetween(from, to) {
      const out = {};
      for (const [t, r] of calls) if (t >= from && t <= to) out[r] = (out[r] ?? 0) + 1;
      return out;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
      rmSync(socketPath, { force: true });
    },
  };
}
