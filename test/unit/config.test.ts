import { chmod, chown, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, writeConfigFile } from '../../src/agent/config.js';
import { CONFIG_KEYS, configSchema } from '../../src/agent/config-schema.js';
import { AgentError, exitCodeFor } from '../../src/errors.js';
import { readToken } from '../../src/cli/token-input.js';

const TOKEN = 'tok-3f9a1c0b7e-config-test';
let dir: string;
let path: string;

async function writeRaw(content: string, mode = 0o600) {
  await writeFile(path, content, { mode });
  await chmod(path, mode);
}

async function expectConfigError(p: Promise<unknown>, pattern: RegExp, field?: string) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  expect((err as AgentError).message).toMatch(pattern);
  expect(exitCodeFor(err)).toBe(78);
  if (field) expect((err as AgentError).field).toBe(field);
  expect((err as AgentError).message).not.toContain(TOKEN);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'skp-config-'));
  path = join(dir, 'config.json');
});

describe('config precedence: flags > env > file > defaults', () => {
  it('layers each source over the one below', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://file.example', token: TOKEN, heartbeatIntervalSec: 20, logLevel: 'warn' }));
    const env = { SKYPANEL_AGENT_HEARTBEAT_INTERVAL: '15', SKYPANEL_AGENT_LOG_LEVEL: 'debug' };
    const { config, sources } = await loadConfig({ path, env, flags: { heartbeatIntervalSec: 5 } });
    expect(config.heartbeatIntervalSec).toBe(5);
    expect(sources.heartbeatIntervalSec).toBe('flag');
    expect(config.logLevel).toBe('debug');
    expect(sources.logLevel).toBe('env');
    expect(config.controlPlaneUrl).toBe('http://file.example');
    expect(config.stateDir).toBe('/var/lib/skypanel-agent');
    expect(config.requestTimeoutSec).toBe(10);
  });

  it('works from the environment alone when no file exists', async () => {
    const { config, fileExisted } = await loadConfig({
      path,
      env: { SKYPANEL_AGENT_CONTROL_PLANE_URL: 'https://panel.example.com/', SKYPANEL_AGENT_TOKEN: TOKEN },
    });
    expect(fileExisted).toBe(false);
    expect(config.controlPlaneUrl).toBe('https://panel.example.com');
  });

  it('every schema key has a row in the config table (one source of truth for docs and env)', () => {
    expect(CONFIG_KEYS.map((k) => k.key).sort()).toEqual(Object.keys(configSchema.shape).sort());
  });
});

describe('bad config gets one clear error naming the key, exit code 78 (EX_CONFIG)', () => {
  it('missing file and no env: says to register first', async () => {
    await expectConfigError(loadConfig({ path, env: {} }), /"controlPlaneUrl".*is required.*does not exist.*register/);
  });

  it('invalid JSON: names the file and position, not the content', async () => {
    await writeRaw(`{"token": "${TOKEN}", oops}`);
    await expectConfigError(loadConfig({ path, env: {} }), /not valid JSON \(position \d+\)/);
  });

  it('world- or group-readable file is refused like ssh refuses a key', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN }), 0o644);
    await expectConfigError(loadConfig({ path, env: {} }), /mode 0644.*chmod 600/);
  });

  // As ssh's StrictModes: the owner must be the running user or root, the directory not writable by others.
  it.skipIf(process.getuid?.() !== 0)(
    'a file owned by another user is refused, naming the file and the fix (root only: needs chown)',
    async () => {
      await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN }));
      await chown(path, 12345, 12345);
      await expectConfigError(loadConfig({ path, env: {} }), new RegExp(`config file ${path} is owned by uid 12345.*Fix: chown 0 ${path}`));
      // The service user `install` hands the config to is trusted by root too; any other user is not.
    },
  );

  it.skipIf(process.getuid?.() !== 0)('a file in a directory owned by another user is refused (root only: needs chown)', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN }));
    await chown(dir, 12345, 12345);
    await expectConfigError(
      loadConfig({ path, env: {} }),
      new RegExp(`config file ${path} is in ${dir}, owned by uid 12345.*Fix: chown 0 ${dir}`),
    );
  });

  it('a file in a group- or world-writable directory is refused, naming the directory and the fix', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN }));
    for (const mode of [0o770, 0o777, 0o1777]) {
      await chmod(dir, mode);
      await expectConfigError(
        loadConfig({ path, env: {} }),
        new RegExp(`is in ${dir}, which group or others can write \\(mode ${mode.toString(8).padStart(4, '0')}\\).*Fix: chmod go-w ${dir}`),
      );
    }
    await chmod(dir, 0o755);
    await expect(loadConfig({ path, env: {} })).resolves.toBeDefined();
  });

  it('a token file in a world-writable directory is refused like the config', async () => {
    const tokenPath = join(dir, 'worker.token');
    await writeFile(tokenPath, TOKEN, { mode: 0o600 });
    await chmod(dir, 0o777);
    await expectConfigError(readToken({ tokenFile: tokenPath }), /--token-file .*worker\.token is in .*which group or others can write/);
    await chmod(dir, 0o700);
    expect((await readToken({ tokenFile: tokenPath })).reveal()).toBe(TOKEN);
  });

  it('a directory instead of a file', async () => {
    await expectConfigError(loadConfig({ path: dir, env: {} }), /not a regular file|mode/);
  });

  it('unknown key (a typo) is named', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN, hearbeatIntervalSec: 5 }));
    await expectConfigError(loadConfig({ path, env: {} }), /unknown key "hearbeatIntervalSec"/, 'hearbeatIntervalSec');
  });

  it('out-of-range value names key and source', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN }));
    await expectConfigError(
      loadConfig({ path, env: { SKYPANEL_AGENT_HEARTBEAT_INTERVAL: '0' } }),
      /"heartbeatIntervalSec" \(from SKYPANEL_AGENT_HEARTBEAT_INTERVAL\)/,
      'heartbeatIntervalSec',
    );
  });

  it('allowedHostPorts: none by default, a list from the environment or an array in the file, a bad entry named', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN }));
    expect((await loadConfig({ path, env: {} })).config.allowedHostPorts).toEqual([]);
    const fromEnv = await loadConfig({ path, env: { SKYPANEL_AGENT_ALLOWED_HOST_PORTS: '80,443,8000-8100' } });
    expect(fromEnv.config.allowedHostPorts).toEqual([
      { from: 80, to: 80 },
      { from: 443, to: 443 },
      { from: 8000, to: 8100 },
    ]);
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: TOKEN, allowedHostPorts: [22, '2377'] }));
    expect((await loadConfig({ path, env: {} })).config.allowedHostPorts).toEqual([
      { from: 22, to: 22 },
      { from: 2377, to: 2377 },
    ]);
    await expectConfigError(
      loadConfig({ path, env: { SKYPANEL_AGENT_ALLOWED_HOST_PORTS: '80,ssh' } }),
      /"allowedHostPorts" \(from SKYPANEL_AGENT_ALLOWED_HOST_PORTS\) entry "ssh" must be a port/,
      'allowedHostPorts',
    );
  });

  it('a non-http URL', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'ftp://x', token: TOKEN }));
    await expectConfigError(loadConfig({ path, env: {} }), /"controlPlaneUrl".*http/, 'controlPlaneUrl');
  });

  it('a token with whitespace, without echoing it', async () => {
    await writeRaw(JSON.stringify({ controlPlaneUrl: 'http://x', token: `${TOKEN} x` }));
    await expectConfigError(loadConfig({ path, env: {} }), /"token".*whitespace/, 'token');
  });
});

describe('writing the config', () => {
  it('is atomic, mode 0600, and keeps only explicit keys', async () => {
    await writeConfigFile(path, { controlPlaneUrl: 'http://x', token: TOKEN, workerId: 'w1' });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({ controlPlaneUrl: 'http://x', token: TOKEN, workerId: 'w1' });
  });

  it('refuses to write an invalid config', async () => {
    await expect(writeConfigFile(path, { controlPlaneUrl: 'nope', token: TOKEN })).rejects.toThrow();
  });
});

describe('atomic writes as root keep the owner', () => {
  it.skipIf(process.getuid?.() !== 0)('a file owned by a service user stays owned by it after root rewrites it', async () => {
    const { chown } = await import('node:fs/promises');
    await writeConfigFile(path, { controlPlaneUrl: 'http://x', token: TOKEN });
    await chown(path, 65534, 65534);
    await writeConfigFile(path, { controlPlaneUrl: 'http://x', token: TOKEN, workerId: 'w9' });
    const st = await stat(path);
    expect([st.uid, st.gid]).toEqual([65534, 65534]);
    expect(st.mode & 0o777).toBe(0o600);
  });
});
