import { execFile, spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { AgentProcess, runCli } from './cli.js';
import { dockerode, ensureDocker, TEST_IMAGE } from './docker.js';

/**
 * A real multi-node Docker Swarm on one machine, for end-to-end tests: N worker nodes (1 or 2),
 * each a dockerd in its own network namespace joined as a WORKER to the local single-node swarm
 * (the host's dockerd, the manager), plus the manager's Engine API exposed over mutual TLS on the
 * host side of a veth link. Agents for the workers run in the host namespace (they are plain node
 * processes) and reach their worker's dockerd through its unix socket.
 *
 * Per worker k (slot): netns `skpmn<k>`, veth `skpmn<k>h` (host, 10.252.k.1/30) ↔ `skpmn<k>w`
 * (worker, 10.252.k.2/30), dockerd with its own data-root/exec-root/pidfile/socket/config-file
 * under /tmp/skp-multinode/s<k>, cgroup parent /skpmn<k>, bridge 10.253.k.1/24.
 *
 * Safety on a shared dockerd: the manager is never left, drained, removed or restarted; teardown
 * (test/helpers/multinode-down.sh) removes only this slot's node, the services pinned to it, and
 * its namespace, links, cgroups and files. Teardown runs from the test's afterAll, from process
 * exit and signal hooks, and, for a slot whose owning process died, before the slot is reused.
 *
 * Multinode test files take a session lock for their whole run, so they run one at a time even
 * when vitest runs files in parallel (they share two CPUs, and timing assertions need them).
 */

export const MULTINODE_ROOT = '/tmp/skp-multinode';
const DOWN_SCRIPT = fileURLToPath(new URL('./multinode-down.sh', import.meta.url));
const REAP_SCRIPT = fileURLToPath(new URL('./multinode-reap.sh', import.meta.url));
/**
 * Every organization a multinode test deploys for starts with this: the harness removes what
 * carries it (services, networks, secrets) at session start (left by a killed run) and teardown.
 */
export const MULTINODE_ORG_PREFIX = 'org-mn-';
const MANAGER_SOCKET = '/var/run/docker.sock';
const MAX_SLOTS = 8;
/** Bound on the whole bring-up (namespaces, dockerds, joins, image imports, certificates, TLS endpoint). */
export const BRING_UP_BOUND_MS = 60_000;
/** How long a test file waits for another multinode file to finish. */
export const SESSION_WAIT_MS = 8 * 60_000;

export type MultinodeReady = { ok: true } | { ok: false; reason: string };

function inCi(): boolean {
  const v = process.env.CI;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

function sh(cmd: string, args: string[], timeoutMs = 10_000, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 8 * 1024 * 1024, env: toolEnv() },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as Error & { killed?: boolean };
          const why = e.killed ? `timed out after ${timeoutMs} ms` : e.message.split('\n')[0];
          reject(new Error(`\`${cmd} ${args.join(' ')}\` failed: ${why}${stderr.trim() ? `\n${stderr.trim().slice(-2000)}` : ''}`));
          return;
        }
        resolve(stdout);
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

function toolEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${process.env.PATH ?? ''}:/usr/local/sbin:/usr/sbin:/sbin`,
    DOCKER_HOST: `unix://${MANAGER_SOCKET}`,
  };
  delete env.DOCKER_CONTEXT;
  delete env.DOCKER_TLS_VERIFY;
  delete env.DOCKER_CERT_PATH;
  return env;
}

const MEMO = Symbol.for('skypanel-agent.test.multinodeReady');

/** The local dockerd answers, is an active swarm manager, and holds TEST_IMAGE. */
async function managerInPlace(): Promise<boolean> {
  try {
    const docker = dockerode({ socketPath: MANAGER_SOCKET, timeoutMs: 30_000 });
    const info = (await docker.info()) as { Swarm?: { LocalNodeState?: string; ControlAvailable?: boolean } };
    if (info.Swarm?.LocalNodeState !== 'active' || info.Swarm.ControlAvailable !== true) return false;
    await docker.getImage(TEST_IMAGE).inspect();
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether multinode tests can run here: root, `ip netns`, and the Docker the other e2e tests use.
 * Without root or `ip netns` they are skipped with the reason printed; under CI=true that fails
 * the run instead (mirrors helpers/docker.ts). Anything else missing makes the bring-up fail loudly.
 */
export function multinodeReady(): Promise<MultinodeReady> {
  const g = globalThis as { [MEMO]?: Promise<MultinodeReady> };
  g[MEMO] ??= (async (): Promise<MultinodeReady> => {
    let r: MultinodeReady;
    if (process.getuid?.() !== 0)
      r = { ok: false, reason: 'multinode tests need root (network namespaces, veth links, a dockerd per worker)' };
    else {
      r = await sh('ip', ['netns', 'list'], 15_000).then(
        (): MultinodeReady => ({ ok: true }),
        (err: Error): MultinodeReady => ({ ok: false, reason: `\`ip netns\` is not usable here: ${err.message}` }),
      );
    }
    if (!r.ok) {
      if (inCi()) throw new Error(`multinode tests cannot run and CI is set, refusing to skip them: ${r.reason}`);
      process.stderr.write(`\n[skypanel-agent tests] skipping multinode tests: ${r.reason}\n\n`);
      return r;
    }
    // Usually all is in place already: check that directly, with a generous bound (a busy shared
    // manager can take several seconds to answer /info, longer than ensure-docker.sh's CLI probes
    // wait). Otherwise let ensureDocker set things up; it prints its own reason (throws under CI).
    if (await managerInPlace()) return { ok: true };
    const d = await ensureDocker();
    return d.ok ? { ok: true } : { ok: false, reason: d.reason };
  })();
  return g[MEMO];
}

// ---------------------------------------------------------------------------------------------
// Cleanup registry: afterAll tears down normally; these hooks cover a test process that exits or
// is signalled first. They must be synchronous (an 'exit' listener cannot await).

const liveSlots = new Set<string>();
let sessionLockHeld: string | undefined;
let hooksInstalled = false;

function teardownSlotSync(dir: string): void {
  spawnSync('bash', [DOWN_SCRIPT, dir], { timeout: 60_000, killSignal: 'SIGKILL', stdio: 'ignore', env: toolEnv() });
}

function cleanupSync(): void {
  if (sessionLockHeld)
    spawnSync('bash', [REAP_SCRIPT, MULTINODE_ORG_PREFIX], { timeout: 60_000, killSignal: 'SIGKILL', stdio: 'ignore', env: toolEnv() });
  for (const dir of [...liveSlots].reverse()) {
    teardownSlotSync(dir);
    liveSlots.delete(dir);
  }
  releaseSessionLock();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      cleanupSync();
      // Then die of the same signal, as if we had never listened.
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** pid recorded in DIR/owner, or undefined when unreadable (being written, or never written). */
function ownerOf(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, 'owner'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function acquireSessionLock(waitMs: number): Promise<void> {
  mkdirSync(MULTINODE_ROOT, { recursive: true });
  const lock = join(MULTINODE_ROOT, 'session.lock');
  const deadline = Date.now() + waitMs;
  let firstMissingOwnerAt: number | undefined;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'owner'), String(process.pid));
      sessionLockHeld = lock;
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = ownerOf(lock);
    if (owner === undefined) firstMissingOwnerAt ??= Date.now();
    // A dead owner (or an owner file never written within 10 s) leaves a stale lock: take it over.
    if ((owner !== undefined && !pidAlive(owner)) || (owner === undefined && Date.now() - firstMissingOwnerAt! > 10_000)) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline)
      throw new Error(`multinode: another test process (pid ${owner ?? '?'}) held ${lock} for more than ${waitMs / 1000} s`);
    await sleep(250);
  }
}

function releaseSessionLock(): void {
  if (!sessionLockHeld) return;
  if (ownerOf(sessionLockHeld) === process.pid) rmSync(sessionLockHeld, { recursive: true, force: true });
  sessionLockHeld = undefined;
}

/** Takes a free slot number, first tearing down slots whose owning process is gone. */
function claimSlot(): number {
  for (let k = 1; k <= MAX_SLOTS; k++) {
    const dir = slotDir(k);
    if (existsSync(dir)) {
      const owner = ownerOf(dir);
      if (owner !== undefined && pidAlive(owner)) continue;
      // Its process is gone (or died before recording itself): tear down what it left.
      teardownSlotSync(dir);
      if (existsSync(dir)) continue;
    }
    try {
      mkdirSync(dir, { recursive: false });
    } catch {
      continue;
    }
    writeFileSync(join(dir, 'owner'), String(process.pid));
    liveSlots.add(dir);
    return k;
  }
  throw new Error(`multinode: all ${MAX_SLOTS} worker slots under ${MULTINODE_ROOT} are in use`);
}

function slotDir(k: number): string {
  return join(MULTINODE_ROOT, `s${k}`);
}

// ---------------------------------------------------------------------------------------------
// Bring-up

export interface StepTiming {
  step: string;
  ms: number;
}

/** One bring-up step, bounded; refused once the bring-up was abandoned, so nothing is built after teardown. */
async function timed<T>(timings: StepTiming[], name: string, boundMs: number, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted) throw new Error(`multinode: bring-up abandoned before step "${name}"`);
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`multinode: step "${name}" did not finish within ${boundMs} ms`)), boundMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    timings.push({ step: name, ms: Math.round(performance.now() - started) });
  }
}

async function poll<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false>, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`multinode: ${what} not reached within ${timeoutMs} ms${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await sleep(everyMs);
  }
}

export interface WorkerNode {
  /** Slot number: names and addresses derive from it. */
  readonly slot: number;
  /** Network namespace (also the node's hostname and cgroup parent). */
  readonly netns: string;
  /** Host side of the veth link; the TLS endpoint of the manager listens on the first worker's. */
  readonly hostIp: string;
  /** The worker's address: its swarm advertise address, and where host-mode published ports answer. */
  readonly ip: string;
  /** The worker dockerd's Engine API socket (in the host's filesystem). */
  readonly socketPath: string;
  readonly dir: string;
  readonly nodeId: string;
  /** A client for the worker's own dockerd. */
  readonly docker: Docker;
  /**
   * Node loss: SIGKILL the worker's dockerd and everything else of the node (containerd, shims,
   * task containers), as a power cut would. The namespace, links and data stay.
   */
  kill(): Promise<void>;
  /** Start the worker's dockerd again on the same data; resolves when the manager sees the node ready. */
  restart(): Promise<void>;
  dockerdLog(): string;
}

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface TlsRequest {
  /** Subject CN of the verified client certificate. */
  client: string;
  /** `METHOD /path` (query cut). */
  line: string;
}

/** The manager's Engine API on `host` (hostIp:port), mutual TLS only, proxied to the manager's socket. */
export interface ManagerTlsEndpoint {
  /** host:port, the value of swarmManagerHost. */
  readonly host: string;
  /** CA that signed the server certificate and every accepted client certificate. */
  readonly caFile: string;
  /** Client certificates signed by that CA, one per worker (index = worker index). */
  readonly clients: TlsFiles[];
  /** A client certificate from a different CA (with the right server CA): must be refused. */
  readonly rogue: TlsFiles;
  /** That other CA: an agent trusting it instead of caFile must refuse the manager's certificate. */
  readonly otherCaFile: string;
  /** Engine API requests that passed client verification, in order. */
  readonly requests: TlsRequest[];
  /** Connections refused during the TLS handshake (wrong or missing client certificate), with the reason. */
  readonly refused: string[];
  writes(client?: string): string[];
}

export interface Multinode {
  readonly workers: WorkerNode[];
  readonly manager: Docker;
  readonly managerNodeId: string;
  readonly tls: ManagerTlsEndpoint;
  readonly timings: StepTiming[];
  readonly bringUpMs: number;
  /** Reverse order of bring-up; idempotent; safe after a failure half-way. */
  teardown(): Promise<void>;
}

interface SlotNames {
  slot: number;
  dir: string;
  ns: string;
  hif: string;
  wif: string;
  hostIp: string;
  ip: string;
  bip: string;
  socketPath: string;
  pidFile: string;
}

function namesFor(slot: number): SlotNames {
  const dir = slotDir(slot);
  return {
    slot,
    dir,
    ns: `skpmn${slot}`,
    hif: `skpmn${slot}h`,
    wif: `skpmn${slot}w`,
    hostIp: `10.252.${slot}.1`,
    ip: `10.252.${slot}.2`,
    bip: `10.253.${slot}.1/24`,
    socketPath: join(dir, 'docker.sock'),
    pidFile: join(dir, 'docker.pid'),
  };
}

function launchDockerd(n: SlotNames): void {
  const out = openSync(join(n.dir, 'dockerd.log'), 'a');
  try {
    // `ip netns exec` would remount /sys and hide the cgroup v1 mounts dockerd needs: nsenter the
    // network namespace only, and give dockerd its own UTS (hostname) and mount namespaces.
    const child = spawn(
      'nsenter',
      [
        `--net=/run/netns/${n.ns}`,
        '--',
        'unshare',
        '--uts',
        '--mount',
        '--propagation',
        'slave',
        '--',
        'sh',
        join(n.dir, 'run-dockerd.sh'),
      ],
      {
        detached: true,
        stdio: ['ignore', out, out],
        env: { PATH: toolEnv().PATH },
      },
    );
    child.unref();
  } finally {
    closeSync(out);
  }
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitDockerd(n: SlotNames, docker: Docker, timeoutMs: number): Promise<void> {
  await poll(`worker dockerd on ${n.socketPath} answering`, timeoutMs, async () => {
    await docker.ping();
    return true;
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n--- ${n.dir}/dockerd.log ---\n${tail(join(n.dir, 'dockerd.log'))}`);
  });
}

async function bringUpWorker(
  n: SlotNames,
  manager: Docker,
  joinToken: string,
  managerAddr: string,
  timings: StepTiming[],
  signal: AbortSignal,
): Promise<WorkerNode> {
  const t = (name: string, ms: number, fn: () => Promise<unknown>) => timed(timings, `w${n.slot}:${name}`, ms, fn, signal);
  // Names first: teardown reads them, whatever happens next.
  writeFileSync(join(n.dir, 'slot.env'), `NS=${n.ns}\nHIF=${n.hif}\nSOCK=${n.socketPath}\nPIDFILE=${n.pidFile}\nCGROUP=${n.ns}\n`);
  for (const d of ['data', 'exec']) mkdirSync(join(n.dir, d), { recursive: true });

  await t('netns+veth', 10_000, async () => {
    await sh('ip', ['netns', 'add', n.ns]);
    await sh('ip', ['link', 'add', n.hif, 'type', 'veth', 'peer', 'name', n.wif]);
    await sh('ip', ['link', 'set', n.wif, 'netns', n.ns]);
    await sh('ip', ['addr', 'add', `${n.hostIp}/30`, 'dev', n.hif]);
    await sh('ip', ['link', 'set', n.hif, 'up']);
    await sh('ip', ['-n', n.ns, 'link', 'set', 'lo', 'up']);
    await sh('ip', ['-n', n.ns, 'addr', 'add', `${n.ip}/30`, 'dev', n.wif]);
    await sh('ip', ['-n', n.ns, 'link', 'set', n.wif, 'up']);
  });

  await t('manager-address', 10_000, async () => {
    const madv = managerAddr.slice(0, managerAddr.lastIndexOf(':'));
    if (madv.startsWith('127.')) {
      // The manager advertises its loopback address, so the worker later dials 127.0.0.1:2377 (its
      // own loopback). Send the manager ports to the host side of the link, and make the source
      // address routable (SNAT) so the answers come back.
      const nsx = (args: string[]) => sh('ip', ['netns', 'exec', n.ns, ...args]);
      await nsx(['sysctl', '-q', '-w', 'net.ipv4.conf.all.route_localnet=1']);
      for (const [proto, port] of [
        ['tcp', '2377'],
        ['tcp', '7946'],
        ['udp', '7946'],
      ] as const) {
        await nsx([
          'iptables',
          '-t',
          'nat',
          '-A',
          'OUTPUT',
          '-d',
          `${madv}/32`,
          '-p',
          proto,
          '--dport',
          port,
          '-j',
          'DNAT',
          '--to-destination',
          `${n.hostIp}:${port}`,
        ]);
      }
      await nsx([
        'iptables',
        '-t',
        'nat',
        '-A',
        'POSTROUTING',
        '-s',
        '127.0.0.0/8',
        '-d',
        `${n.hostIp}/32`,
        '-j',
        'SNAT',
        '--to-source',
        n.ip,
      ]);
    } else {
      await sh('ip', ['-n', n.ns, 'route', 'add', `${madv}/32`, 'via', n.hostIp]);
    }
  });

  const docker = dockerode({ socketPath: n.socketPath, timeoutMs: 30_000 });
  const pinger = dockerode({ socketPath: n.socketPath, timeoutMs: 1_000 });
  await t('dockerd', 30_000, async () => {
    // Its own key file gives it its own engine ID; its own bridge range keeps its containers apart.
    await writeFile(join(n.dir, 'daemon.json'), JSON.stringify({ 'deprecated-key-path': join(n.dir, 'key.json') }));
    await writeFile(
      join(n.dir, 'run-dockerd.sh'),
      [
        '#!/bin/sh',
        `hostname ${n.ns}`,
        // Inside this mount namespace only: a system containerd socket would be shared with the
        // host's dockerd; hide it so this dockerd runs a containerd of its own.
        '[ -S /run/containerd/containerd.sock ] && mount -t tmpfs -o mode=0700 skpmn /run/containerd',
        // No registry here: run tasks from the imported image instead of trying to pull first.
        'export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1',
        `exec dockerd --data-root ${n.dir}/data --exec-root ${n.dir}/exec --pidfile ${n.pidFile} -H unix://${n.socketPath} --config-file ${n.dir}/daemon.json --cgroup-parent /${n.ns} --bip ${n.bip}`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    launchDockerd(n);
    await waitDockerd(n, pinger, 28_000);
  });

  let nodeId = '';
  await t('swarm-join', 20_000, async () => {
    await docker.swarmJoin({
      ListenAddr: `${n.ip}:2377`,
      AdvertiseAddr: n.ip,
      RemoteAddrs: [`${n.hostIp}:${managerAddr.slice(managerAddr.lastIndexOf(':') + 1)}`],
      JoinToken: joinToken,
    });
    const info = (await docker.info()) as { Swarm?: { NodeID?: string; ControlAvailable?: boolean } };
    nodeId = info.Swarm?.NodeID ?? '';
    if (!nodeId || info.Swarm?.ControlAvailable)
      throw new Error(`multinode: worker ${n.ns} did not join as a worker: ${JSON.stringify(info.Swarm)}`);
    writeFileSync(join(n.dir, 'node.id'), nodeId);
    await poll(
      `node ${nodeId} ready on the manager`,
      15_000,
      async () => ((await manager.getNode(nodeId).inspect()) as { Status?: { State?: string } }).Status?.State === 'ready',
    );
  });

  await t('image-import', 20_000, async () => {
    const tar = (await manager.getImage(TEST_IMAGE).get()) as NodeJS.ReadableStream;
    const res = (await docker.loadImage(tar as never)) as unknown as NodeJS.ReadableStream;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      res.on('data', (d: Buffer) => (out += d.toString()));
      res.on('end', resolve);
      res.on('error', reject);
    });
    if (/"error"/.test(out)) throw new Error(`multinode: loading ${TEST_IMAGE} into ${n.ns}: ${out.slice(0, 500)}`);
    await docker.getImage(TEST_IMAGE).inspect();
  });

  return {
    slot: n.slot,
    netns: n.ns,
    hostIp: n.hostIp,
    ip: n.ip,
    socketPath: n.socketPath,
    dir: n.dir,
    nodeId,
    docker,
    dockerdLog: () => tail(join(n.dir, 'dockerd.log'), 200),
    async kill() {
      const pid = Number(readFileSync(n.pidFile, 'utf8').trim());
      // Everything in the node's network namespace (dockerd, containerd, shims) and cgroup parent (tasks).
      const cgroupProcs = readdirSync('/sys/fs/cgroup')
        .map((c) => join('/sys/fs/cgroup', c, n.ns))
        .filter((d) => existsSync(d));
      const pids = new Set<number>([pid]);
      for (const p of (await sh('ip', ['netns', 'pids', n.ns])).split(/\s+/)) if (p) pids.add(Number(p));
      for (const d of cgroupProcs) {
        const out = await sh('find', [d, '-name', 'cgroup.procs', '-exec', 'cat', '{}', '+']).catch(() => '');
        for (const p of out.split(/\s+/)) if (p) pids.add(Number(p));
      }
      for (const p of pids) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await poll(`dockerd ${pid} of ${n.ns} gone`, 10_000, async () => !pidAlive(pid));
    },
    async restart() {
      launchDockerd(n);
      await waitDockerd(n, pinger, 30_000);
      await poll(
        `node ${nodeId} ready again on the manager`,
        30_000,
        async () => ((await manager.getNode(nodeId).inspect()) as { Status?: { State?: string } }).Status?.State === 'ready',
        200,
      );
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Certificates and the mutual-TLS endpoint

async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  await sh('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
  ]);
  await chmod(key, 0o600);
  return { cert, key };
}

async function makeLeaf(dir: string, ca: { cert: string; key: string }, name: string, ext: string[]): Promise<TlsFiles> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(extFile, ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', ...ext, ''].join('\n'));
  await sh('openssl', [
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    `/CN=${name}`,
  ]);
  await sh('openssl', [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-set_serial',
    `0x${Date.now().toString(16)}${Math.floor(Math.random() * 1e6).toString(16)}`,
    '-days',
    '2',
    '-out',
    cert,
    '-extfile',
    extFile,
  ]);
  await chmod(key, 0o600);
  return { ca: ca.cert, cert, key };
}

const REQUEST_LINE = /(?:^|\r\n)(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP\/1\.[01]/g;

async function startTlsEndpoint(
  listenIp: string,
  workers: number,
  timings: StepTiming[],
  signal: AbortSignal,
): Promise<{ endpoint: ManagerTlsEndpoint; close(): Promise<void> }> {
  if (signal.aborted) throw new Error('multinode: bring-up abandoned before the TLS endpoint');
  const dir = await mkdtemp(join(tmpdir(), 'skp-mn-tls-'));
  const files = await timed(timings, 'tls:certificates', 15_000, async () => {
    const ca = await makeCa(dir, 'skp-multinode-ca');
    const other = await makeCa(dir, 'skp-other-ca');
    const server = await makeLeaf(dir, ca, 'skp-manager', [`subjectAltName=IP:${listenIp}`, 'extendedKeyUsage=serverAuth']);
    const clients: TlsFiles[] = [];
    for (let i = 0; i < workers; i++) clients.push(await makeLeaf(dir, ca, `skp-worker-${i}`, ['extendedKeyUsage=clientAuth']));
    // Trusts the right server CA, but presents a client certificate the endpoint's CA never signed.
    const rogue = { ...(await makeLeaf(dir, other, 'skp-rogue', ['extendedKeyUsage=clientAuth'])), ca: ca.cert };
    return { ca, other, server, clients, rogue };
  });

  const requests: TlsRequest[] = [];
  const refused: string[] = [];
  const sockets = new Set<Socket>();
  const server: TlsServer = createTlsServer({
    key: await readFile(files.server.key),
    cert: await readFile(files.server.cert),
    ca: await readFile(files.ca.cert),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
  });
  server.on('tlsClientError', (err) => refused.push(err.message));
  server.on('secureConnection', (client: TLSSocket) => {
    const cn = String((client.getPeerCertificate() as { subject?: { CN?: string } }).subject?.CN ?? '?');
    const upstream = createConnection(MANAGER_SOCKET);
    sockets.add(client).add(upstream);
    client.on('data', (chunk: Buffer) => {
      for (const m of chunk.toString('latin1').matchAll(REQUEST_LINE))
        requests.push({ client: cn, line: `${m[1]} ${decodeURIComponent(m[2]!).split('?')[0]}` });
    });
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await timed(
    timings,
    'tls:listen',
    5_000,
    () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, listenIp, () => resolve());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: {
      host: `${listenIp}:${port}`,
      caFile: files.ca.cert,
      clients: files.clients,
      rogue: files.rogue,
      otherCaFile: files.other.cert,
      requests,
      refused,
      writes: (client?: string) =>
        requests.filter((r) => (client === undefined || r.client === client) && !/^(GET|HEAD) /.test(r.line)).map((r) => r.line),
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------

async function reapOrgs(): Promise<void> {
  await sh('bash', [REAP_SCRIPT, MULTINODE_ORG_PREFIX], 60_000).catch((err: Error) =>
    process.stderr.write(`multinode: removing ${MULTINODE_ORG_PREFIX}* objects: ${err.message}\n`),
  );
}

export interface StartMultinodeOptions {
  workers: 1 | 2;
}

/**
 * Brings up the workers and the TLS endpoint (≤ BRING_UP_BOUND_MS after the session lock is held).
 * Call from beforeAll with a timeout of SESSION_WAIT_MS + BRING_UP_BOUND_MS; on failure everything
 * built so far is torn down before the error is thrown.
 */
export async function startMultinode(opts: StartMultinodeOptions): Promise<Multinode> {
  installHooks();
  await acquireSessionLock(SESSION_WAIT_MS);
  // Left by a run that was killed before its teardown (services, overlay networks, secrets).
  await reapOrgs();
  const timings: StepTiming[] = [];
  const started = performance.now();
  const manager = dockerode({ socketPath: MANAGER_SOCKET, timeoutMs: 30_000 });
  const slots: SlotNames[] = [];
  let tlsClose: (() => Promise<void>) | undefined;
  const abandon = new AbortController();
  let up: Promise<Multinode> | undefined;
  const teardown = async () => {
    await tlsClose?.().catch(() => {});
    tlsClose = undefined;
    // What the tests deployed (their afterAll usually did this already), then the nodes.
    if (sessionLockHeld) await reapOrgs();
    // Each worker's own steps run in reverse order (multinode-down.sh); workers are independent of
    // each other, so they go down side by side (a dockerd takes a few seconds to stop).
    await Promise.all(
      [...slots].reverse().map(async (n) => {
        await sh('bash', [DOWN_SCRIPT, n.dir], 60_000).catch((err: Error) =>
          process.stderr.write(`multinode teardown of ${n.ns}: ${err.message}\n`),
        );
        liveSlots.delete(n.dir);
      }),
    );
    slots.length = 0;
    releaseSessionLock();
  };
  try {
    const bringUp = async (): Promise<Multinode> => {
      // A busy shared manager can take seconds to answer /info: its own step, so the timings show it.
      const [swarm, info] = await timed(
        timings,
        'manager:info',
        30_000,
        async () =>
          [
            (await manager.swarmInspect()) as { JoinTokens?: { Worker?: string } },
            (await manager.info()) as {
              Swarm?: { NodeID?: string; NodeAddr?: string; ControlAvailable?: boolean; RemoteManagers?: { Addr?: string }[] };
            },
          ] as const,
        abandon.signal,
      );
      if (!info.Swarm?.ControlAvailable) throw new Error('multinode: the local dockerd is not a swarm manager');
      const joinToken = swarm.JoinTokens?.Worker;
      if (!joinToken) throw new Error('multinode: no worker join token on the manager');
      const managerAddr =
        info.Swarm.RemoteManagers?.find((m) => m.Addr?.startsWith(`${info.Swarm!.NodeAddr}:`))?.Addr ?? `${info.Swarm.NodeAddr}:2377`;
      for (let i = 0; i < opts.workers; i++) slots.push(namesFor(claimSlot()));
      const workers = await Promise.all(slots.map((n) => bringUpWorker(n, manager, joinToken, managerAddr, timings, abandon.signal)));
      const tls = await startTlsEndpoint(workers[0]!.hostIp, opts.workers, timings, abandon.signal);
      tlsClose = tls.close;
      if (abandon.signal.aborted) throw new Error('multinode: bring-up abandoned');
      return { workers, manager, managerNodeId: info.Swarm.NodeID!, tls: tls.endpoint, timings, bringUpMs: 0, teardown };
    };
    let timer: NodeJS.Timeout | undefined;
    up = bringUp();
    const mn = await Promise.race([
      up,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`multinode: bring-up did not finish within ${BRING_UP_BOUND_MS} ms`)), BRING_UP_BOUND_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    const bringUpMs = Math.round(performance.now() - started);
    process.stderr.write(
      `[multinode] ${opts.workers} worker(s) up in ${bringUpMs} ms: ${timings.map((t) => `${t.step}=${t.ms}`).join(' ')}\n`,
    );
    return { ...mn, bringUpMs };
  } catch (err) {
    // Stop the bring-up at its next step and let the current one end (each is bounded), so that
    // nothing is created after the teardown below.
    abandon.abort();
    await up?.catch(() => {});
    await teardown();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Agents on worker nodes

export interface WorkerAgent {
  workerId: string;
  token: string;
  config: string;
  agent: AgentProcess;
}

export interface WorkerAgentOptions {
  cp: { url: string; mintToken(workerId: string): string };
  worker: WorkerNode;
  /** Write through this manager endpoint (remote-manager mode); omitted: observe mode. */
  manager?: { host: string; files: TlsFiles };
  /** Engine API socket the agent uses instead of the worker's own (a DockerProxy in front of it). */
  dockerSocket?: string;
  workerId: string;
  env?: NodeJS.ProcessEnv;
}

/** Registers a worker with the control plane and starts `skypanel-agent run` for it in the host namespace. */
export async function startWorkerAgent(o: WorkerAgentOptions): Promise<WorkerAgent> {
  const dir = await mkdtemp(join(tmpdir(), 'skp-mn-agent-'));
  const config = join(dir, 'config.json');
  const token = o.cp.mintToken(o.workerId);
  const socket = o.dockerSocket ?? o.worker.socketPath;
  const reg = await runCli([
    'register',
    '--control-plane',
    o.cp.url,
    '--token',
    token,
    '--config',
    config,
    '--docker-socket',
    socket,
    '--ip-address',
    o.worker.ip,
    '--heartbeat-interval',
    '1',
    '--name',
    o.worker.netns,
  ]);
  if (reg.code !== 0) throw new Error(`register failed (${reg.code}): ${reg.stderr}`);
  const agent = new AgentProcess(['run', '--config', config], {
    SKYPANEL_AGENT_DOCKER_SOCKET: socket,
    SKYPANEL_AGENT_IP_ADDRESS: o.worker.ip,
    SKYPANEL_AGENT_POLL_INTERVAL: '1',
    SKYPANEL_AGENT_RESYNC_INTERVAL: '5',
    ...(o.manager
      ? {
          SKYPANEL_AGENT_SWARM_MANAGER_HOST: o.manager.host,
          SKYPANEL_AGENT_SWARM_MANAGER_CA: o.manager.files.ca,
          SKYPANEL_AGENT_SWARM_MANAGER_CERT: o.manager.files.cert,
          SKYPANEL_AGENT_SWARM_MANAGER_KEY: o.manager.files.key,
        }
      : {}),
    ...o.env,
  });
  return { workerId: o.workerId, token, config, agent };
}

// ---------------------------------------------------------------------------------------------
// Observing the swarm from the manager

export interface ServiceRow {
  ID: string;
  Spec: { Name: string; Labels: Record<string, string>; TaskTemplate: { Placement?: { Constraints?: string[] } } };
}

export interface TaskRow {
  ID: string;
  ServiceID: string;
  NodeID?: string;
  DesiredState?: string;
  Status?: { State?: string; Err?: string };
}

export async function servicesByLabel(manager: Docker, label: string): Promise<ServiceRow[]> {
  return (await manager.listServices({ filters: JSON.stringify({ label: [label] }) })) as unknown as ServiceRow[];
}

/** Removes the services, then the networks, labelled with one organization id; never throws. */
export async function removeOrganization(manager: Docker, organizationId: string): Promise<void> {
  const label = `skypanel.organization.id=${organizationId}`;
  for (const s of await servicesByLabel(manager, label).catch(() => []))
    await manager
      .getService(s.ID)
      .remove()
      .catch(() => {});
  const nets = (await manager.listNetworks({ filters: JSON.stringify({ label: [label] }) }).catch(() => [])) as { Id: string }[];
  for (const n of nets)
    await manager
      .getNetwork(n.Id)
      .remove()
      .catch(() => {});
}

export async function tasksOfService(manager: Docker, serviceId: string): Promise<TaskRow[]> {
  return (await manager.listTasks({ filters: JSON.stringify({ service: [serviceId] }) })) as unknown as TaskRow[];
}

/** Running task containers of a skypanel serviceId on one worker, as that worker's own dockerd sees them. */
export async function runningContainersOn(worker: WorkerNode, skypanelServiceId: string): Promise<number> {
  const list = (await worker.docker.listContainers({
    filters: JSON.stringify({ label: [`skypanel.service.id=${skypanelServiceId}`], status: ['running'] }),
  })) as unknown[];
  return list.length;
}
