import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { LABEL } from '../../src/domain/labels.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, removeWorkerLeftovers, TEST_IMAGE } from '../helpers/docker.js';

/**
 * A broken disk: the agent's state directory is a 256 KiB tmpfs that the test fills for real
 * (ENOSPC, no fake). Desired-set changes (a stop, a removal, a create) must still reach the swarm
 * from memory; the failure shows in /healthz, /v1/status and /metrics and is logged once, not per
 * poll; once space is back the retried write puts the newest set on disk.
 */

const ready = await ensureDocker();
const isRoot = process.getuid?.() === 0;
if (ready.ok && !isRoot) process.stderr.write('\n[skypanel-agent tests] skipping the disk-full test: mounting a tmpfs needs root\n\n');
const docker = dockerode({ timeoutMs: 30_000 });
type RefCp = Awaited<ReturnType<typeof startReferenceControlPlane>>;
const ORG = `org-diskfull-${randomUUID().slice(0, 8)}`;
const SECRET = `diskfull-secret-${randomUUID()}`;

function deployment(slug: string): Record<string, unknown> {
  return {
    id: randomUUID(),
    serviceId: randomUUID(),
    organizationId: ORG,
    slug,
    imageTag: TEST_IMAGE,
    desiredState: 'running',
    environmentVars: {},
    resourceLimits: { cpuCores: 0.02, memoryMb: 8 },
    command: ['sleep', '3600'],
    secrets: [{ name: 'token', value: SECRET, envVarName: 'TOKEN' }],
  };
}

describe.skipIf(!ready.ok || !isRoot)('state directory on a full disk (real ENOSPC on a tmpfs)', () => {
  let cp: RefCp;
  let agent: AgentProcess | undefined;
  let workerId: string;
  let token: string;
  let stateDir: string | undefined;
  let mounted = false;

  const services = async () =>
    (await docker.listServices({ filters: JSON.stringify({ label: [`${LABEL.workerId}=${workerId}`] }) })) as unknown as {
      ID: string;
      Spec: { Labels: Record<string, string>; Mode?: { Replicated?: { Replicas?: number } } };
    }[];
  const byDeployment = async () => new Map((await services()).map((s) => [s.Spec.Labels[LABEL.deploymentId]!, s]));

  beforeAll(async () => {
    cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await agent?.stop();
    if (mounted && stateDir) execFileSync('umount', [stateDir]);
    if (workerId) {
      for (const s of await services())
        await docker
          .getService(s.ID)
          .remove()
          .catch(() => {});
      await removeWorkerLeftovers(docker, workerId);
    }
    const everything = capturedOutput.join('\n') + JSON.stringify(cp?.requests ?? []);
    if (token) expect(everything).not.toContain(token);
    expect(everything).not.toContain(SECRET);
    await cp?.close();
  });

  it('applies a stop, a removal and a create from memory, reports the failure, and writes the set once space is back', async () => {
    workerId = randomUUID();
    token = cp.mintToken(workerId);
    const dir = await mkdtemp(join(tmpdir(), 'skp-diskfull-'));
    const config = join(dir, 'config.json');
    const reg = await runCli(['register', '--control-plane', cp.url, '--token', token, '--config', config, '--heartbeat-interval', '1']);
    expect(reg.code, reg.stderr).toBe(0);
    stateDir = join(dir, 'state');
    await mkdir(stateDir, { mode: 0o700 });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', stateDir]);
    mounted = true;

    const A = deployment('diskfull-a');
    const B = deployment('diskfull-b');
    cp.setDeployments(workerId, [A, B]);
    agent = new AgentProcess(['run', '--config', config], {
      SKYPANEL_AGENT_STATE_DIR: stateDir,
      SKYPANEL_AGENT_POLL_INTERVAL: '1',
      SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
      SKYPANEL_AGENT_BACKOFF_CAP: '2',
    });
    const a = agent;
    const tail = () => a.output.slice(-4000);
    const api = String((await a.waitForLog((l) => l.msg === 'agent started')).statusApi);
    const get = async (path: string) => fetch(`http://${api}${path}`, { headers: { authorization: `Bearer ${token}` } });
    const status = (id: unknown) => cp.deploymentStatusOf(workerId).get(id as string)?.status;
    await waitFor(
      () => status(A.id) === 'running' && status(B.id) === 'running',
      60_000,
      () => `A and B running\n${tail()}`,
    );

    // Fill the filesystem for real: the write stops at ENOSPC.
    const fill = await writeFile(join(stateDir, 'filler'), Buffer.alloc(1024 * 1024)).then(
      () => 'written',
      (err: NodeJS.ErrnoException) => err.code,
    );
    expect(fill).toBe('ENOSPC');

    // A stopped, B removed, C new: each must reach the swarm although desired.json cannot be written.
    const C = deployment('diskfull-c');
    cp.setDeployments(workerId, [{ ...A, desiredState: 'stopped' }, C]);
    await waitFor(
      async () => {
        const now = await byDeployment();
        return now.get(A.id as string)?.Spec.Mode?.Replicated?.Replicas === 0 && !now.has(B.id as string) && now.has(C.id as string);
      },
      60_000,
      () => `A scaled to 0, B removed, C created\n${tail()}`,
    );
    await waitFor(
      () => status(A.id) === 'stopped' && status(C.id) === 'running',
      60_000,
      () => `A stopped and C running reported\n${tail()}`,
    );

    // Reported where an operator looks.
    const health = (await (await fetch(`http://${api}/healthz`)).json()) as { status: string; reason?: string };
    expect(health.status).toBe('degraded');
    expect(health.reason).toMatch(/desired\.json \(ENOSPC/);
    const view = (await (await get('/v1/status')).json()) as { stateDir: { failing: { file: string; error: string }[] } };
    expect(view.stateDir.failing).toContainEqual(expect.objectContaining({ file: 'desired.json', error: 'ENOSPC' }));
    const metrics = await (await get('/metrics')).text();
    expect(metrics).toMatch(/skypanel_agent_state_write_failures_total\{file="desired\.json"\} [1-9]/);
    expect(metrics).toContain('skypanel_agent_state_write_failing{file="desired.json"} 1');
    // Once per failure streak and file, not once per poll; no poll failed over it.
    expect(
      a.logs().filter((l) => l.msg === 'cannot write a state file; working from memory and retrying' && l.file === 'desired.json'),
    ).toHaveLength(1);
    expect(a.logs().filter((l) => String(l.msg).startsWith('desired-state poll failed'))).toEqual([]);
    // No temp file is left behind to hold the space.
    expect((await readdir(stateDir)).filter((e) => e.endsWith('.tmp'))).toEqual([]);

    // Space back: the retried write (at most 30 s apart) puts the newest set on disk.
    await rm(join(stateDir, 'filler'));
    await waitFor(
      async () => ((await (await fetch(`http://${api}/healthz`)).json()) as { status: string }).status === 'ok',
      45_000,
      () => `healthz ok again\n${tail()}`,
    );
    const stored = JSON.parse(await readFile(join(stateDir, 'desired.json'), 'utf8')) as {
      body: { data: { deployments: { id: string }[] } };
    };
    expect(stored.body.data.deployments.map((d) => d.id).sort()).toEqual([A.id as string, C.id as string].sort());
    expect(a.logs().some((l) => l.msg === 'state file written again after failures' && l.file === 'desired.json')).toBe(true);
    expect(a.child.exitCode).toBeNull();
  }, 180_000);
});
