import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { startReferenceControlPlane } from '../../src/refcp/index.js';
import { AgentProcess, capturedOutput, runCli, waitFor } from '../helpers/cli.js';
import { dockerode, ensureDocker, TEST_IMAGE } from '../helpers/docker.js';

/*
 * Draining the shared test swarm's only node would evict every other test's services, even if it
 * were set back to active a moment later. So drain runs against a private dockerd started here: its
 * own data root, exec root, socket and managed containerd, in its own network namespace (so its
 * swarm ports, ingress sandbox and docker_gwbridge never meet the host's), with a single-node swarm
 * of its own. The shared swarm is only ever touched with --dry-run, and checked to be unchanged.
 * Every run names a temporary --state-dir, so no drain marker lands in a real /var/lib/skypanel-agent.
 */

const run = promisify(execFile);
const dockerReady = await ensureDocker();

async function have(cmd: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${cmd}`]).then(
    () => true,
    () => false,
  );
}

function skipReason(): Promise<string | undefined> {
  return (async () => {
    if (!dockerReady.ok) return `Docker is not available: ${dockerReady.reason}`;
    if (process.getuid?.() !== 0) return 'not root: a private dockerd cannot be started';
    for (const cmd of ['dockerd', 'unshare', 'ip']) if (!(await have(cmd))) return `${cmd} is not installed`;
    return undefined;
  })();
}
const reason = await skipReason();
if (reason) process.stderr.write(`\n[skypanel-agent tests] skipping drain on a private dockerd: ${reason}\n\n`);

interface PrivateDockerd {
  dir: string;
  sock: string;
  docker: Docker;
  child: ChildProcess;
}

async function startPrivateDockerd(): Promise<PrivateDockerd> {
  const dir = await mkdtemp('/tmp/skp-drain-');
  const sock = join(dir, 'docker.sock');
  const log = openSync(join(dir, 'dockerd.log'), 'a');
  const args = [
    '--data-root',
    join(dir, 'data'),
    '--exec-root',
    join(dir, 'exec'),
    '--pidfile',
    join(dir, 'docker.pid'),
    '--host',
    `unix://${sock}`,
    '--bridge=none',
    '--iptables=false',
    '--ip6tables=false',
    '--storage-driver=vfs',
  ];
  // `ip netns exec` would remount /sys without the cgroup hierarchy dockerd needs; unshare keeps it.
  const child = spawn('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && exec dockerd "$@"', 'sh', ...args], {
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const docker = dockerode({ socketPath: sock, timeoutMs: 5_000 });
  await waitFor(
    async () =>
      child.exitCode === null &&
      existsSync(sock) &&
      (await docker.ping().then(
        () => true,
        () => false,
      )),
    60_000,
    () => `private dockerd on ${sock} (exit ${child.exitCode}); log: ${join(dir, 'dockerd.log')}`,
  );
  return { dir, sock, docker, child };
}

async function stopPrivateDockerd(d: PrivateDockerd): Promise<void> {
  const exited = new Promise<void>((r) =>
    d.child.exitCode !== null || d.child.signalCode !== null ? r() : d.child.once('exit', () => r()),
  );
  d.child.kill('SIGTERM');
  const clean = await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 30_000))]);
  if (!clean) d.child.kill('SIGKILL');
  // Only processes started for this daemon (its containerd and shims name the private directory).
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(d.dir)) process.kill(Number(pid), 'SIGKILL');
  }
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(d.dir));
  for (const m of mounts.sort().reverse()) await run('umount', ['-l', m]).catch(() => undefined);
  await rm(d.dir, { recursive: true, force: true, maxRetries: 3 });
}

type NodeView = { ID: string; Version: { Index: number }; Spec: { Availability: string } };

async function availability(docker: Docker, id: string): Promise<string> {
  return ((await docker.getNode(id).inspect()) as NodeView).Spec.Availability;
}

describe.skipIf(reason !== undefined)('drain and deregister on a private single-node swarm', () => {
  let d: PrivateDockerd;
  let nodeId: string;
  let work: string;

  beforeAll(async () => {
    d = await startPrivateDockerd();
    work = await mkdtemp(join(tmpdir(), 'skp-drain-work-'));
  }, 120_000);

  afterAll(async () => {
    if (d) await stopPrivateDockerd(d);
    if (work) await rm(work, { recursive: true, force: true });
  }, 60_000);

  const marker = () => join(work, 'state', 'drain.json');
  const drain = (...args: string[]) => runCli(['drain', '--docker-socket', d.sock, '--state-dir', join(work, 'state'), ...args]);

  it('outside a swarm: writes the drain marker and says there is no node to drain (exit 0); --undo removes it', async () => {
    await mkdir(join(work, 'state'), { mode: 0o700 });
    const res = await drain();
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`wrote the drain marker ${marker()}`);
    expect(res.stdout).toMatch(/not part of a swarm \(state inactive\): no swarm node to drain/);
    expect(JSON.parse(await readFile(marker(), 'utf8'))).toMatchObject({ since: expect.any(String), reason: 'skypanel-agent drain' });
    expect((await stat(marker())).mode & 0o777).toBe(0o600);
    const undo = await drain('--undo');
    expect(undo.code, undo.stderr).toBe(0);
    expect(undo.stdout).toContain(`removed the drain marker ${marker()}`);
    expect(existsSync(marker())).toBe(false);

    await d.docker.swarmInit({ ListenAddr: '127.0.0.1:2377', AdvertiseAddr: '127.0.0.1' });
    nodeId = ((await d.docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID;
    expect(await availability(d.docker, nodeId)).toBe('active');
  });

  it('--dry-run prints the marker and the node update it would make, and changes neither', async () => {
    const version = ((await d.docker.getNode(nodeId).inspect()) as NodeView).Version.Index;
    const res = await drain('--dry-run');
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`[dry-run] write the drain marker ${marker()}`);
    expect(res.stdout).toContain(`[dry-run] set node ${nodeId}`);
    expect(res.stdout).toContain(`availability active → drain (POST /nodes/${nodeId}/update?version=${version})`);
    expect(existsSync(marker())).toBe(false);
    expect(await availability(d.docker, nodeId)).toBe('active');
    expect(((await d.docker.getNode(nodeId).inspect()) as NodeView).Version.Index).toBe(version);
  });

  it('drains the node through the Engine API and writes the marker, and is idempotent', async () => {
    const res = await drain();
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`node ${nodeId}`);
    expect(res.stdout).toContain('availability active → drain');
    expect(res.stdout).toContain('no running tasks on this node');
    expect(res.stdout).toContain('skypanel-agent drain --undo');
    expect(await availability(d.docker, nodeId)).toBe('drain');
    expect(existsSync(marker())).toBe(true);

    const again = await drain();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/drain marker already in/);
    expect(again.stdout).toMatch(/already drain: nothing to change/);
  });

  it('--undo sets the node active again and removes the marker', async () => {
    const res = await drain('--undo');
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('availability drain → active');
    expect(await availability(d.docker, nodeId)).toBe('active');
    expect(existsSync(marker())).toBe(false);
  });

  it('names the deployments pinned to the node that a drain stops', async () => {
    // The test image moves into the private engine by save/load: nothing is pulled.
    const tar = join(work, 'image.tar');
    await run('docker', ['save', '-o', tar, TEST_IMAGE]);
    await run('docker', ['-H', `unix://${d.sock}`, 'load', '-i', tar]);
    const svc = await d.docker.createService({
      Name: 'sp-drain-test',
      Labels: { 'skypanel.managed': 'true', 'skypanel.worker.id': 'w-drain' },
      TaskTemplate: {
        ContainerSpec: { Image: TEST_IMAGE, Args: ['sleep', '600'] },
        Placement: { Constraints: [`node.id==${nodeId}`] },
      },
      Mode: { Replicated: { Replicas: 1 } },
    } as never);
    const tasks = () =>
      d.docker.listTasks({ filters: JSON.stringify({ service: [svc.id] }) }) as Promise<
        { DesiredState: string; Status: { State: string } }[]
      >;
    await waitFor(
      async () => (await tasks()).some((t) => t.DesiredState === 'running'),
      30_000,
      () => 'a task of the pinned service',
    );

    const dry = await drain('--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/1 running task\(s\) of 1 service\(s\) would stop here: sp-drain-test/);
    expect(dry.stdout).toMatch(/1 of them are SkyPanel deployments pinned to this node/);

    const res = await drain();
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/1 running task\(s\) of 1 service\(s\) stop here: sp-drain-test/);
    // Swarm shuts the task down and has nowhere else to put it.
    await waitFor(
      async () => (await tasks()).every((t) => t.DesiredState !== 'running'),
      30_000,
      () => 'the task to be shut down by the drain',
    );

    const undo = await drain('--undo');
    expect(undo.code, undo.stderr).toBe(0);
    await waitFor(
      async () => (await tasks()).some((t) => t.DesiredState === 'running'),
      30_000,
      () => 'the task to be scheduled again',
    );
    await d.docker.getService(svc.id).remove();
  }, 120_000);

  it('the running agent sees the drain before its next heartbeat, and the undo too', async () => {
    const cp = await startReferenceControlPlane({ host: '127.0.0.1', port: 0 });
    let agent: AgentProcess | undefined;
    try {
      const token = cp.mintToken(randomUUID());
      const tokenFile = join(work, 'agent.token');
      await writeFile(tokenFile, token, { mode: 0o600 });
      const config = join(work, 'agent.json');
      const stateDir = join(work, 'agent-state');
      await mkdir(stateDir, { mode: 0o700 });
      const reg = await runCli([
        'register',
        '--control-plane',
        cp.url,
        '--token-file',
        tokenFile,
        '--config',
        config,
        '--docker-socket',
        d.sock,
        '--heartbeat-interval',
        '1',
      ]);
      expect(reg.code, reg.stderr).toBe(0);
      const workerId = (JSON.parse(await readFile(config, 'utf8')) as { workerId: string }).workerId;
      agent = new AgentProcess(['run', '--config', config], { SKYPANEL_AGENT_STATE_DIR: stateDir });
      const draining = () => cp.workers.get(workerId)?.lastHeartbeatExtras?.draining;
      await waitFor(
        () => draining() === false,
        15_000,
        () => agent!.output.slice(-2000),
      );

      // drain finds the state dir through the environment, as the agent does.
      const res = await runCli(['drain', '--config', config], { env: { SKYPANEL_AGENT_STATE_DIR: stateDir } });
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toContain(`wrote the drain marker ${join(stateDir, 'drain.json')}`);
      await waitFor(
        () => draining() === true,
        10_000,
        () => agent!.output.slice(-2000),
      );
      await agent.waitForLog((l) => l.msg === 'draining: no new deployments will be started here');
      expect(await availability(d.docker, nodeId)).toBe('drain');

      const undo = await runCli(['drain', '--config', config, '--undo'], { env: { SKYPANEL_AGENT_STATE_DIR: stateDir } });
      expect(undo.code, undo.stderr).toBe(0);
      await waitFor(
        () => draining() === false,
        10_000,
        () => agent!.output.slice(-2000),
      );
      expect(await availability(d.docker, nodeId)).toBe('active');
      expect(capturedOutput.join('\n')).not.toContain(token);
    } finally {
      await agent?.stop('SIGTERM');
      await cp.close();
    }
  });

  it('deregister --dry-run changes nothing', async () => {
    const { config, stateDir } = await writeConfig('dry');
    const res = await runCli(['deregister', '--config', config, '--dry-run']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`[dry-run] remove ${config}`);
    expect(existsSync(config)).toBe(true);
    expect(existsSync(join(stateDir, 'drain.json'))).toBe(false);
    expect(await availability(d.docker, nodeId)).toBe('active');
  });

  it('deregister drains, removes the config file only, and says what it did', async () => {
    const { config, stateDir } = await writeConfig('real');
    const res = await runCli(['deregister', '--config', config]);
    expect(res.code, res.stderr).toBe(0);
    expect(await availability(d.docker, nodeId)).toBe('drain');
    expect(existsSync(config)).toBe(false);
    expect((await stat(stateDir)).isDirectory()).toBe(true);
    expect(existsSync(join(stateDir, 'desired.json'))).toBe(true);
    expect(existsSync(join(stateDir, 'drain.json'))).toBe(true);
    expect(res.stdout).toContain('availability active → drain');
    expect(res.stdout).toContain(`removed ${config} (worker w-drain`);
    expect(res.stdout).toContain(`kept ${stateDir}`);
    expect(res.stdout).toMatch(/panel still lists worker w-drain/);
    const undo = await runCli(['drain', '--docker-socket', d.sock, '--state-dir', stateDir, '--undo']);
    expect(undo.code, undo.stderr).toBe(0);
    expect(existsSync(join(stateDir, 'drain.json'))).toBe(false);
  });

  async function writeConfig(name: string): Promise<{ config: string; stateDir: string }> {
    const stateDir = join(work, `state-${name}`);
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    await writeFile(join(stateDir, 'desired.json'), '{}');
    const config = join(work, `${name}.json`);
    const body = {
      controlPlaneUrl: 'http://127.0.0.1:9',
      token: 'tok-drain-test-not-real',
      workerId: 'w-drain',
      dockerSocket: d.sock,
      stateDir,
    };
    await writeFile(config, JSON.stringify(body), { mode: 0o600 });
    return { config, stateDir };
  }
});

describe.skipIf(!dockerReady.ok)('drain on the shared test swarm: --dry-run only', () => {
  it('describes the drain of this node and changes nothing', async () => {
    const docker = dockerode();
    const id = ((await docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID;
    const before = (await docker.getNode(id).inspect()) as NodeView;
    expect(before.Spec.Availability).toBe('active');
    const stateDir = await mkdtemp(join(tmpdir(), 'skp-drain-shared-'));
    const res = await runCli(['drain', '--dry-run', '--config', join(stateDir, 'none.json'), '--state-dir', stateDir]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain(`[dry-run] set node ${id}`);
    expect(await readdir(stateDir)).toEqual([]);
    await rm(stateDir, { recursive: true });
    const after = (await docker.getNode(id).inspect()) as NodeView;
    expect(after.Spec.Availability).toBe('active');
    // The spec, not Version.Index: swarm bumps the node object's version for status changes too
    // (workers of the multinode tests joining and leaving meanwhile), which a dry run did not cause.
    expect(after.Spec).toEqual(before.Spec);
  });
});

afterAll(() => {
  expect(capturedOutput.join('\n')).not.toContain('tok-drain-test-not-real');
});
