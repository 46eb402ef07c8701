// One resolution of the Docker endpoint for every command: flag > SKYPANEL_AGENT_DOCKER_SOCKET >
// config file > DOCKER_HOST (unix only) > /var/run/docker.sock. The commands themselves against
// a real worker node: test/e2e/multinode-mixed-fleet.test.ts.
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeEndpoint, dockerEndpointFor, loadConfig, resolveDockerEndpoint } from '../../src/agent/config.js';

const TOKEN = 'tok-docker-endpoint-test-1';

describe('the Docker endpoint', () => {
  it('takes each layer over the ones below it', () => {
    const env = { SKYPANEL_AGENT_DOCKER_SOCKET: '/run/env.sock', DOCKER_HOST: 'unix:///run/dh.sock' };
    expect(resolveDockerEndpoint({ flag: '/run/flag.sock', file: '/run/file.sock' }, env)).toEqual({
      socketPath: '/run/flag.sock',
      source: 'flag',
    });
    expect(resolveDockerEndpoint({ file: '/run/file.sock' }, env)).toEqual({ socketPath: '/run/env.sock', source: 'env' });
    expect(resolveDockerEndpoint({ file: '/run/file.sock' }, { DOCKER_HOST: 'unix:///run/dh.sock' })).toEqual({
      socketPath: '/run/file.sock',
      source: 'file',
    });
    expect(resolveDockerEndpoint({}, { DOCKER_HOST: 'unix:///run/dh.sock' })).toEqual({
      socketPath: '/run/dh.sock',
      source: 'DOCKER_HOST',
    });
    expect(resolveDockerEndpoint({}, {})).toEqual({ socketPath: '/var/run/docker.sock', source: 'default' });
  });

  it('ignores a DOCKER_HOST that is not a unix socket, and empty values', () => {
    expect(resolveDockerEndpoint({}, { DOCKER_HOST: 'tcp://10.0.0.1:2376' })).toEqual({
      socketPath: '/var/run/docker.sock',
      source: 'default',
    });
    expect(resolveDockerEndpoint({ flag: '' }, { SKYPANEL_AGENT_DOCKER_SOCKET: '', DOCKER_HOST: 'unix://' })).toEqual({
      socketPath: '/var/run/docker.sock',
      source: 'default',
    });
  });

  it('is what loadConfig puts in dockerSocket (run), and what commands without a full config get from the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-endpoint-'));
    const path = join(dir, 'config.json');
    await writeFile(path, JSON.stringify({ controlPlaneUrl: 'http://127.0.0.1:9', token: TOKEN }), { mode: 0o600 });
    await chmod(path, 0o600);
    const env = { DOCKER_HOST: 'unix:///run/worker.sock' };
    const loaded = await loadConfig({ path, env });
    expect(loaded.config.dockerSocket).toBe('/run/worker.sock');
    expect(loaded.dockerEndpoint).toEqual({ socketPath: '/run/worker.sock', source: 'DOCKER_HOST' });
    expect(loaded.sources.dockerSocket).toBe('DOCKER_HOST');
    expect(await dockerEndpointFor(path, undefined, env)).toEqual(loaded.dockerEndpoint);

    await writeFile(path, JSON.stringify({ controlPlaneUrl: 'http://127.0.0.1:9', token: TOKEN, dockerSocket: '/run/pinned.sock' }), {
      mode: 0o600,
    });
    expect((await loadConfig({ path, env })).config.dockerSocket).toBe('/run/pinned.sock');
    expect(await dockerEndpointFor(path, undefined, env)).toEqual({ socketPath: '/run/pinned.sock', source: 'file' });
    // A file the agent would refuse (here: no token) still names the socket for drain and doctor.
    await writeFile(path, JSON.stringify({ dockerSocket: '/run/pinned.sock' }), { mode: 0o600 });
    expect(await dockerEndpointFor(path, undefined, env)).toEqual({ socketPath: '/run/pinned.sock', source: 'file' });
    expect(await dockerEndpointFor(join(dir, 'absent.json'), undefined, env)).toEqual({
      socketPath: '/run/worker.sock',
      source: 'DOCKER_HOST',
    });
  });

  it('is described with where it came from', () => {
    expect(describeEndpoint({ socketPath: '/run/w.sock', source: 'DOCKER_HOST' })).toBe('unix:///run/w.sock (from DOCKER_HOST)');
    expect(describeEndpoint({ socketPath: '/var/run/docker.sock', source: 'default' })).toBe('unix:///var/run/docker.sock (default)');
  });
});
