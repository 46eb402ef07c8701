import { randomUUID } from 'node:crypto';
import { mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';

/**
 * Hostile desired sets at the protocol level, without Docker (the agent runs with no engine, so it
 * polls and validates but applies nothing; test/e2e/resilience-hostile-input.test.ts covers the
 * same inputs against a real swarm). What this file pins down: a panel that keeps serving an
 * unusable answer is not hammered, every rejection is logged naming its field without a secret
 * value, and the process never exits.
 */

type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const SECRET = `hostile-int-secret-${randomUUID()}`;
const REGISTRY_PASSWORD = `hostile-int-registry-${randomUUID()}`;

function row(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: randomUUID(), serviceId: randomUUID(), organizationId: 'org-hostile-int', slug: 'x', imageTag: 'registry.example.com/app:1', desiredState: 'running',
    environmentVars: {}, resourceLimits: { cpuCores: 0.1, memoryMb: 16 },
    ...overrides,
  };
}

describe('hostile desired sets: polling discipline and logs (no Docker)', () => {
  let cp: RefCp;
  let agent: AgentProcess;
  let workerId: string;
  let token: string;
  const polls = (from = 0) => cp.requests.slice(from).filter((r) => r.method === 'GET' && r.path.endsWith('/deployments'));
  const beats = (from = 0) => cp.requests.slice(from).filter((r) => r.path.endsWith('/heartbeat') && r.status === 200);

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const config = join(await mkdtemp(join(tmpdir(), 'skp-hostile-int-')), 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '1']);
    expect(reg.code, reg.stderr).toBe(0);
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      // No engine here: the agent heartbeats dockerHealthy=false and polls, but applies nothing.
      SKYPANEL_AGENT_DOCKER_SOCKET: join(tmpdir(), `no-docker-${randomUUID()}`, 'docker.sock'),
    });
    await agent.waitForLog((l) => l.msg === 'agent started');
  });

  afterAll(async () => {
    await agent?.stop();
    const everything = capturedOutput.join('\n') + JSON.stringify(cp?.requests ?? []);
    expect(everything).not.toContain(token);
    expect(everything).not.toContain(SECRET);
    expect(everything).not.toContain(REGISTRY_PASSWORD);
    await cp?.close();
  });

  it('logs every rejected deployment with its field, never a secret value', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [row({ resourceLimits: { cpuCores: 0.1, memoryMb: -1 }, secrets: [{ name: 'db', value: SECRET }] }), 'resourceLimits.memoryMb'],
      [row({ secrets: [{ name: '../../etc/passwd', value: SECRET }] }), 'secrets[0].name'],
      [row({ secrets: [{ name: 'db', value: { v: SECRET } }] }), 'secrets[0].value'],
      [row({ registryAuth: { serveraddress: 'r.example.com', username: 'u', password: [REGISTRY_PASSWORD] } }), 'registryAuth.password'],
      [row({ environmentVars: { 'A=B': SECRET } }), 'environmentVars.A=B'],
      [row({ internalPort: 0 }), 'internalPort'],
      [row({ internalPort: 80, externalPort: 70_000 }), 'externalPort'],
      [row({ desiredState: 'paused' }), 'desiredState'],
      [row({ imageTag: 'Not A Valid/Image' }), 'imageTag'],
    ];
    const good = row({ secrets: [{ name: 'ok', value: SECRET }], registryAuth: { serveraddress: 'r.example.com', username: 'u', password: REGISTRY_PASSWORD } });
    cp.setDeployments(workerId, [good, ...cases.map(([r]) => r)]);
    for (const [r, field] of cases) {
      const line = await agent.waitForLog((l) => l.deploymentId === r.id && String(l.msg).startsWith('deployment rejected:'));
      expect(line.field).toBe(field);
      expect(String(line.msg)).toContain(`${field}: `);
    }
    // The stored desired set holds secrets: owner-only.
    expect((await stat(join(agent.stateDir, 'desired.json'))).mode & 0o777).toBe(0o600);
    expect(agent.child.exitCode).toBeNull();
  }, 60_000);

  it('does not hammer a panel that keeps answering 200 with an unusable body', async () => {
    // Before the fix the failure count was reset by every 200, so each retry came within 1 s, forever.
    for (const body of ['{"success":true,"data":{}}', '<html>maintenance</html>', `{"pad":"${'x'.repeat(2 * 1024 * 1024)}"}`]) {
      const mark = cp.requests.length;
      cp.setDeploymentsBody(workerId, body);
      await new Promise((r) => setTimeout(r, 8_000));
      const n = polls(mark).length;
      console.log(`hostile-input: ${n} polls in 8 s of ${body.length > 100 ? `a ${body.length}-byte body` : body} (poll interval 1 s, backoff cap 60 s)`);
      // Full-jitter backoff from where the streak stands: a handful, not ~16 (one per ≤ 1 s).
      expect(n).toBeLessThanOrEqual(8);
      // The agent is alive and heartbeating throughout.
      expect(beats(mark).length).toBeGreaterThanOrEqual(5);
      expect(agent.child.exitCode).toBeNull();
    }
    expect(agent.logs().filter((l) => l.msg === 'desired-state poll failed unexpectedly')).toEqual([]);
  }, 60_000);
});
