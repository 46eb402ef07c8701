import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createDockerClient } from '../../src/swarm/docker-client.js';
import { MAX_VERSION_RACES, updateService } from '../../src/swarm/swarm-writer.js';

/*
 * A Swarm manager in the middle of a rollout: its own updater bumps the service's version, so an
 * update sent with the version just read can lose again. Played by an HTTP server on a unix socket
 * that answers the Engine API's "update out of sequence" a set number of times.
 */
const OUT_OF_SEQUENCE = JSON.stringify({ message: 'rpc error: code = Unknown desc = update out of sequence' });

let server: Server | undefined;
let dir: string | undefined;

afterEach(async () => {
  server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  server = undefined;
  dir = undefined;
});

async function racingManager(conflicts: number) {
  dir = await mkdtemp(join(tmpdir(), 'skp-writer-'));
  const socketPath = join(dir, 'docker.sock');
  let version = 10;
  const calls: string[] = [];
  server = createServer((req, res) => {
    calls.push(`${req.method} ${req.url}`);
    req.resume();
    res.setHeader('content-type', 'application/json');
    if (req.method === 'GET') return res.end(JSON.stringify({ ID: 'svc', Version: { Index: ++version } }));
    if (calls.filter((c) => c.startsWith('POST')).length <= conflicts) {
      res.statusCode = 500;
      return res.end(OUT_OF_SEQUENCE);
    }
    res.end(JSON.stringify({ Warnings: null }));
  });
  server.listen(socketPath);
  await once(server, 'listening');
  return { docker: createDockerClient({ socketPath, timeoutMs: 2_000 }), calls };
}

describe('updateService during a rollout', () => {
  it(`re-reads the version and sends again through ${MAX_VERSION_RACES} lost races`, async () => {
    const { docker, calls } = await racingManager(MAX_VERSION_RACES);
    await expect(updateService(docker, 'svc', 10, { Name: 'x' })).resolves.toEqual({ warnings: [] });
    expect(calls.filter((c) => c.startsWith('POST'))).toHaveLength(MAX_VERSION_RACES + 1);
    expect(calls.filter((c) => c.startsWith('GET'))).toHaveLength(MAX_VERSION_RACES);
    // Each resend carries the version just read.
    expect(calls.at(-1)).toMatch(/version=13\b/);
  });

  it('gives up after that with the conflict as its error, so the caller backs off', async () => {
    const { docker, calls } = await racingManager(MAX_VERSION_RACES + 1);
    await expect(updateService(docker, 'svc', 10, { Name: 'x' })).rejects.toThrow(/out of sequence/);
    expect(calls.filter((c) => c.startsWith('POST'))).toHaveLength(MAX_VERSION_RACES + 1);
  });

  it('never retries an error that is not a version race', async () => {
    const { docker, calls } = await racingManager(0);
    server!.removeAllListeners('request');
    server!.on('request', (req, res) => {
      calls.push(`${req.method} ${req.url}`);
      req.resume();
      res.statusCode = 400;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ message: 'invalid spec' }));
    });
    await expect(updateService(docker, 'svc', 10, { Name: 'x' })).rejects.toThrow(/invalid spec/);
    expect(calls).toHaveLength(1);
  });
});
