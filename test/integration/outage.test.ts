import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';

const SECRET = `outage-test-${randomUUID()}`;
const tokens: string[] = [];

afterAll(() => {
  const all = capturedOutput.join('\n');
  for (const t of tokens) expect(all).not.toContain(t);
});

describe('control plane outage', () => {
  it('keeps retrying while the control plane is down and resumes by itself when it returns', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'skp-outage-'));
    let cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0, jwtSecret: SECRET });
    const port = Number(new URL(cp.url).port);
    const token = cp.mintToken(randomUUID());
    tokens.push(token);
    const config = join(dir, 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '1']);
    expect(reg.code, reg.stderr).toBe(0);
    const { workerId } = JSON.parse(await readFile(config, 'utf8')) as { workerId: string };
    await writeFile(config, JSON.stringify({ ...JSON.parse(await readFile(config, 'utf8')), backoffCapSec: 1 }), { mode: 0o600 });
    await cp.close();

    const agent = new AgentProcess(['run', '--config', config]);
    try {
      await agent.waitForLog((l) => l.outcome === 'network');
      await new Promise((r) => setTimeout(r, 2_000));
      // Back on the same port with an empty database: the agent must find its way back (404 → register → beat).
      cp = await startReferenceControlPlane({ host: '127.0.0.1', port, jwtSecret: SECRET });
      await waitFor(
        () => (cp.workers.get(workerId)?.heartbeats ?? 0) >= 1,
        20_000,
        () => agent.output,
      );
      expect(agent.logs().some((l) => l.msg === 'heartbeat accepted again after failures' || l.msg === 'registered again')).toBe(true);
      // An outage is a few warn lines, not one per attempt.
      expect(agent.logs().filter((l) => l.level === 'warn' && l.outcome === 'network').length).toBeLessThanOrEqual(2);
    } finally {
      await agent.stop('SIGKILL');
      await cp.close();
    }
  });
});
