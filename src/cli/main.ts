// The CPU sample the first heartbeat's figure starts from; bin/skypanel-agent imports it before this module.
import { PROCESS_START_CPU } from './process-start.js';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { AGENT_VERSION } from '../version.js';
// Each command's module is imported when that command runs: `run` on a host should not carry the
// code of `dev` (a whole reference control plane), `install` or `doctor` in its memory.
import { AgentError, EXIT, exitCodeFor } from '../errors.js';
import { KnownSecrets, redact, Secret } from '../secret.js';
import { DEFAULT_CONFIG_PATH } from '../agent/config-schema.js';
import { loadConfig } from '../agent/config.js';
import { createLogger } from '../agent/logger.js';

function positiveInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
    return Number(v);
  };
}

function portNumber(name: string) {
  return (v: string): number => {
    if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new InvalidArgumentError(`${name} must be a port number from 0 to 65535`);
    return Number(v);
  };
}

const say = (line: string) => process.stderr.write(`${line}\n`);

/** `secrets`: what this process learns (tokens, deployment secrets), redacted from logs and the final error line. */
export function buildProgram(secrets = new KnownSecrets()): Command {
  const program = new Command('skypanel-agent')
    .description('Worker-node agent of the SkyPanelV2 Container Platform')
    .version(AGENT_VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    // Commander's own parse errors throw instead of exiting 1, so main() can exit 64 (EX_USAGE).
    // Set before any .command(): subcommands copy it when they are created.
    .exitOverride()
    .addHelpText(
      'after',
      `
Examples:
  $ skypanel-agent dev                                   # everything local, to see it work
  $ skypanel-agent register --control-plane https://panel.example.com --token-file /root/worker.token
  $ skypanel-agent run
  $ skypanel-agent install --control-plane https://panel.example.com --token-file /root/worker.token
  $ skypanel-agent doctor`,
    );

  program
    .command('register')
    .description('register this host with the control plane and write the config file (mode 0600)')
    .requiredOption('--control-plane <url>', 'panel origin, e.g. https://panel.example.com')
    .option('--token <token>', 'worker token (prefer --token-file or stdin: keeps it out of shell history)')
    .option('--token-file <path>', 'read the worker token from a file (mode 0600), or - for stdin')
    .option('--name <name>', 'human-readable worker name')
    .option('--ip-address <ip>', 'address to report (default: the local address used to reach the panel)')
    .option('--config <path>', 'config file to write', DEFAULT_CONFIG_PATH)
    .option('--heartbeat-interval <seconds>', 'seconds between heartbeats', positiveInt('--heartbeat-interval'))
    .option('--docker-socket <path>', 'Docker Engine API socket')
    .option('--state-dir <path>', 'durable state directory, written into the config')
    .option('--status-listen <host:port>', 'status API address, written into the config (default 0.0.0.0:9740)')
    .option('--swarm-join-token <token>', 'join the swarm first with this token (or --swarm-join-token-file)')
    .option('--swarm-join-token-file <path>', 'read the swarm join token from a file')
    .option('--swarm-manager <host:port>', 'manager address to join through')
    .addHelpText(
      'after',
      `
Examples:
  $ skypanel-agent register --control-plane https://panel.example.com --token-file /root/worker.token
  $ cat worker.token | skypanel-agent register --control-plane https://panel.example.com
  $ skypanel-agent register --control-plane https://panel.example.com --token-file t \\
      --swarm-join-token-file swarm.token --swarm-manager 10.0.0.2:2377`,
    )
    .action(async (o: Record<string, string | number | undefined>) => {
      const [{ readToken }, { runRegister }] = await Promise.all([import('./token-input.js'), import('./register.js')]);
      const logger = createLogger({ level: 'warn', destination: process.stderr, secrets });
      const token = await readToken({
        token: o.token as string | undefined,
        tokenFile: o.tokenFile as string | undefined,
        stdin: process.stdin,
      });
      secrets.add(token);
      let joinToken: Secret | undefined;
      if (o.swarmJoinToken !== undefined || o.swarmJoinTokenFile !== undefined) {
        joinToken = await readToken({
          token: o.swarmJoinToken as string | undefined,
          tokenFile: o.swarmJoinTokenFile as string | undefined,
        });
        secrets.add(joinToken);
      }
      await runRegister({
        controlPlaneUrl: String(o.controlPlane),
        token,
        configPath: o.config as string,
        name: o.name as string | undefined,
        ipAddress: o.ipAddress as string | undefined,
        heartbeatIntervalSec: o.heartbeatInterval as number | undefined,
        dockerSocket: o.dockerSocket as string | undefined,
        stateDir: o.stateDir as string | undefined,
        statusListen: o.statusListen as string | undefined,
        swarmJoinToken: joinToken,
        swarmManager: o.swarmManager as string | undefined,
        logger,
        say,
      });
      say('next: skypanel-agent run   (or install it as a service)');
    });

  program
    .command('run')
    .description(
      'run the agent daemon: heartbeats, desired-state polls, reconciliation, usage metering and the status API until SIGTERM; SIGHUP re-reads the config',
    )
    .option('--config <path>', 'config file', DEFAULT_CONFIG_PATH)
    .option('--heartbeat-interval <seconds>', 'seconds between heartbeats (default 30)', positiveInt('--heartbeat-interval'))
    .option('--poll-interval <seconds>', 'seconds between desired-state polls (default 30)', positiveInt('--poll-interval'))
    .option('--docker-socket <path>', 'Docker Engine API socket')
    .option('--state-dir <path>', 'durable state directory')
    .option('--status-listen <host:port>', 'status API address (default 0.0.0.0:9740)')
    .option('--usage-period <seconds>', 'usage period length (default 3600: hourly billing)', positiveInt('--usage-period'))
    .option('--metrics-listen <host:port>', 'Prometheus /metrics listener, no worker token (default 127.0.0.1:9741; off to disable)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .addHelpText(
      'after',
      `
Configuration precedence: flags > SKYPANEL_AGENT_* environment > config file > defaults.
SIGHUP (systemctl reload skypanel-agent) re-reads the config file and environment, keeps these flags,
and restarts the agent in-process; a config that does not load is logged and changes nothing.
Exit codes: 0 stopped by a signal, 1 failure, 64 usage error, 78 configuration error.
Examples:
  $ skypanel-agent run
  $ SKYPANEL_AGENT_LOG_LEVEL=debug skypanel-agent run --heartbeat-interval 10`,
    )
    .action(async (o: Record<string, string | number | undefined>) => {
      const { runDaemon } = await import('./run.js');
      await runDaemon({
        configPath: o.config as string,
        flags: {
          heartbeatIntervalSec: o.heartbeatInterval,
          pollIntervalSec: o.pollInterval,
          dockerSocket: o.dockerSocket,
          stateDir: o.stateDir,
          statusListen: o.statusListen,
          metricsListen: o.metricsListen,
          usagePeriodSec: o.usagePeriod,
          logLevel: o.logLevel,
        },
        secrets,
        cpuBaseline: PROCESS_START_CPU,
      });
    });

  program
    .command('status')
    .description(
      "ask the local agent's status API and print a summary; exit 0 healthy, 1 unhealthy, 2 unreachable, 3 answered but unreadable (token refused, not the agent)",
    )
    .option('--config <path>', 'config file (for the token and status address)', DEFAULT_CONFIG_PATH)
    .option('--url <url>', 'status API base URL (default: where the agent last listened, else statusListen; via loopback)')
    .option('--json', 'print the raw status and deployments as JSON')
    .addHelpText(
      'after',
      `
Examples:
  $ skypanel-agent status
  $ skypanel-agent status --json | jq .status.lastHeartbeat`,
    )
    .action(async (o: { config: string; url?: string; json?: boolean }) => {
      const { runStatus, localStatusUrl } = await import('./status.js');
      const { config } = await loadConfig({ path: o.config });
      process.exitCode = await runStatus({
        url: o.url ?? (await localStatusUrl(config)),
        token: new Secret(config.token),
        json: o.json === true,
        timeoutMs: 5_000,
        out: (s) => process.stdout.write(s.endsWith('\n') ? s : `${s}\n`),
        err: (s) => process.stderr.write(s.endsWith('\n') ? s : `${s}\n`),
      });
    });

  program
    .command('dev')
    .description(
      "run the panel half on an embedded PostgreSQL (SkyPanelV2's tables), register, seed one service, and run the agent, in one process",
    )
    .option('--port <port>', 'panel port (0 = any free port)', portNumber('--port'), 0)
    .option('--heartbeat-interval <seconds>', 'seconds between heartbeats', positiveInt('--heartbeat-interval'), 10)
    .option('--config <path>', 'config file to write (default: a new temporary directory)')
    .option('--docker-socket <path>', 'Docker Engine API socket')
    .option('--database-url <url>', "use this PostgreSQL (SkyPanelV2's database, or an empty one) instead of the embedded one")
    .option('--deployments <file>', 'write these deployments as rows assigned to the dev worker, instead of the hello-world seed')
    .option('--no-seed', 'write no service rows: the worker only registers and heartbeats')
    .option('--status-listen <host:port>', "the agent's status API address (default 0.0.0.0:9740)")
    .option(
      '--usage-period <seconds>',
      'usage period length (default 60 in dev, so records arrive quickly)',
      positiveInt('--usage-period'),
      60,
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info'),
    )
    .addHelpText(
      'after',
      `
Examples:
  $ skypanel-agent dev                                     # then: curl http://127.0.0.1:18080/
  $ skypanel-agent dev --deployments examples/hello.json
  $ skypanel-agent dev --database-url postgres://user@127.0.0.1/skypanel
  $ skypanel-agent dev --port 3001 --heartbeat-interval 5 --log-level debug`,
    )
    .action(async (o: Record<string, string | number | undefined>) => {
      const { runDev } = await import('./dev.js');
      const logger = createLogger({ level: o.logLevel as string, secrets });
      await runDev({
        secrets,
        port: o.port as number,
        heartbeatIntervalSec: o.heartbeatInterval as number,
        configPath: o.config as string | undefined,
        dockerSocket: o.dockerSocket as string | undefined,
        databaseUrl: o.databaseUrl as string | undefined,
        deploymentsFile: o.deployments as string | undefined,
        seed: (o.seed as unknown) !== false,
        statusListen: o.statusListen as string | undefined,
        usagePeriodSec: o.usagePeriod as number,
        logger,
        say,
      });
    });

  const number =
    (name: string) =>
    (v: string): number => {
      if (!/^\d+(\.\d+)?$/.test(v)) throw new InvalidArgumentError(`${name} must be a non-negative number`);
      return Number(v);
    };

  program
    .command('panel')
    .description(
      "serve the control-plane half of the protocol on SkyPanelV2's PostgreSQL database (secrets from JWT_SECRET and SSH_CRED_SECRET)",
    )
    .option('--database-url <url>', 'PostgreSQL URL of the SkyPanelV2 database (default: $DATABASE_URL)')
    .option('--listen <host:port>', 'address to serve on', '127.0.0.1:3002')
    .option('--heartbeat-interval <seconds>', "the agents' heartbeat interval", positiveInt('--heartbeat-interval'), 30)
    .option('--missed-intervals <n>', 'a worker silent for this many intervals is marked offline', positiveInt('--missed-intervals'), 4)
    .option('--price-cpu-hour <amount>', 'price of one CPU core-hour', number('--price-cpu-hour'))
    .option('--price-memory-gb-hour <amount>', 'price of one GiB-hour of memory', number('--price-memory-gb-hour'))
    .option('--price-storage-gb-hour <amount>', 'price of one GiB-hour of storage', number('--price-storage-gb-hour'))
    .option('--price-network-gb <amount>', 'price of one GiB of network traffic', number('--price-network-gb'))
    .option('--no-migrate', 'do not apply the additive migration at start')
    .option('--no-health-monitor', 'do not mark silent workers offline from this process')
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info'),
    )
    .addHelpText(
      'after',
      `
Examples:
  $ JWT_SECRET=... SSH_CRED_SECRET=... skypanel-agent panel --database-url postgres://skypanel@db/skypanel --listen 127.0.0.1:3002
  then route /api/workers/ of the panel's origin to 127.0.0.1:3002 (docs/PANEL.md)`,
    )
    .action(async (o: Record<string, string | number | boolean | undefined>) => {
      const { runPanel } = await import('./panel.js');
      const logger = createLogger({ level: o.logLevel as string, destination: process.stderr });
      const prices = Object.fromEntries(
        (
          [
            ['cpuCoreHour', o.priceCpuHour],
            ['memoryGbHour', o.priceMemoryGbHour],
            ['storageGbHour', o.priceStorageGbHour],
            ['networkGb', o.priceNetworkGb],
          ] as const
        ).filter(([, v]) => v !== undefined),
      );
      await runPanel({
        databaseUrl: o.databaseUrl as string | undefined,
        listen: o.listen as string,
        health: { heartbeatIntervalSec: o.heartbeatInterval as number, missedIntervals: o.missedIntervals as number },
        prices,
        migrate: o.migrate !== false,
        healthMonitor: o.healthMonitor !== false,
        env: process.env,
        logger,
        say,
      });
    });

  const out = (line: string) => process.stdout.write(`${line}\n`);

  program
    .command('install')
    .description(
      'install as a systemd service: system user, /etc/skypanel-agent and /var/lib/skypanel-agent (0700), the unit, optional registration, then enable --now',
    )
    .option('--control-plane <url>', 'register now with this panel (with --token-file)')
    .option('--token-file <path>', 'worker token file (mode 0600), or - for stdin')
    .option('--name <name>', 'worker name sent when registering')
    .option('--root <dir>', 'prefix every path with DIR and leave systemd and users alone (packaging, tests)')
    .option('--dry-run', 'print every action and change nothing')
    .option('--no-start', 'enable the service but do not start it now')
    .addHelpText(
      'after',
      `
The unit runs ExecStart=<node> <this bin> run as user skypanel-agent (docker group only while it runs).
Without a running systemd (no /run/systemd/system) the systemctl steps are skipped and printed.
Examples:
  $ skypanel-agent install --control-plane https://panel.example.com --token-file /root/worker.token
  $ skypanel-agent install --dry-run
  $ skypanel-agent install --no-start          # register later, then: systemctl start skypanel-agent
  $ skypanel-agent install --root /tmp/image   # write the files under /tmp/image only`,
    )
    .action(async (o: { controlPlane?: string; tokenFile?: string; name?: string; root?: string; dryRun?: boolean; start: boolean }) => {
      const { runInstall } = await import('./install.js');
      process.exitCode = await runInstall({
        controlPlaneUrl: o.controlPlane,
        tokenFile: o.tokenFile,
        name: o.name,
        root: o.root,
        dryRun: o.dryRun === true,
        start: o.start,
        stdin: process.stdin,
        logger: createLogger({ level: 'warn', destination: process.stderr }),
        say: out,
      });
    });

  program
    .command('uninstall')
    .description(
      'stop and disable the service, remove the unit and /etc/skypanel-agent (the token); keep /var/lib/skypanel-agent unless --purge',
    )
    .option('--purge', 'also remove /var/lib/skypanel-agent and the skypanel-agent system user')
    .option('--root <dir>', 'prefix every path with DIR and leave systemd and users alone')
    .option('--dry-run', 'print every action and change nothing')
    .addHelpText(
      'after',
      `
Deployments (Swarm services) keep running: they belong to dockerd, not to the agent.
Examples:
  $ skypanel-agent deregister && skypanel-agent uninstall
  $ skypanel-agent uninstall --purge
  $ skypanel-agent uninstall --dry-run`,
    )
    .action(async (o: { purge?: boolean; root?: string; dryRun?: boolean }) => {
      const { runUninstall } = await import('./install.js');
      process.exitCode = await runUninstall({ purge: o.purge === true, root: o.root, dryRun: o.dryRun === true, say: out });
    });

  program
    .command('doctor')
    .description('check this host: config, Docker, swarm, disk, control plane, token, clock, status port; exit 0 only when all pass')
    .option('--config <path>', 'config file', DEFAULT_CONFIG_PATH)
    .option('--json', 'print the checks as JSON')
    .addHelpText(
      'after',
      `
Each check takes at most 5 s. The token check sends one real heartbeat with this host's current metrics.
Examples:
  $ skypanel-agent doctor
  $ skypanel-agent doctor --json | jq '.checks[] | select(.status == "fail")'`,
    )
    .action(async (o: { config: string; json?: boolean }) => {
      const { renderReport, runDoctor } = await import('./doctor.js');
      const report = await runDoctor({ configPath: o.config });
      out(o.json ? JSON.stringify(report, null, 2) : renderReport(report));
      process.exitCode = report.ok ? 0 : 1;
    });

  program
    .command('drain')
    .description(
      'drain this host: the agent starts no new deployments (a marker in its state dir), and its swarm node goes to availability drain (Engine API, needs a manager); --undo lifts both',
    )
    .option('--config <path>', 'config file (for dockerSocket and stateDir; registration is not needed)', DEFAULT_CONFIG_PATH)
    .option('--docker-socket <path>', 'Docker Engine API socket')
    .option('--state-dir <path>', "the agent's state directory, where the drain marker goes")
    .option('--undo', 'lift the drain: remove the marker, set the node back to availability active')
    .option('--dry-run', 'print what would change, change nothing')
    .addHelpText(
      'after',
      `
The running agent sees the marker before its next heartbeat and reports draining=true.
Deployments are pinned to their worker's node: on a drained node their tasks stop and stay pending.
Examples:
  $ skypanel-agent drain --dry-run
  $ skypanel-agent drain
  $ skypanel-agent drain --undo`,
    )
    .action(async (o: { config: string; dockerSocket?: string; stateDir?: string; undo?: boolean; dryRun?: boolean }) => {
      const { drainTargetsFor, runDrain } = await import('./drain.js');
      const targets = await drainTargetsFor(o.config, { dockerSocket: o.dockerSocket, stateDir: o.stateDir });
      await runDrain({ ...targets, undo: o.undo === true, dryRun: o.dryRun === true, say: out });
    });

  program
    .command('deregister')
    .description('drain this host (see drain), then remove the local config file; the state directory stays')
    .option('--config <path>', 'config file to remove', DEFAULT_CONFIG_PATH)
    .option('--docker-socket <path>', 'Docker Engine API socket')
    .option('--force', 'remove the config even if the node could not be drained (e.g. on a swarm worker)')
    .option('--dry-run', 'print what would change, change nothing')
    .addHelpText(
      'after',
      `
The panel keeps the worker row: delete it there. Stop the service too (uninstall, or systemctl disable --now).
Examples:
  $ skypanel-agent deregister --dry-run
  $ skypanel-agent deregister && skypanel-agent uninstall --purge
  $ skypanel-agent deregister --force          # on a swarm worker: drain it from a manager instead`,
    )
    .action(async (o: { config: string; dockerSocket?: string; force?: boolean; dryRun?: boolean }) => {
      const { runDeregister } = await import('./drain.js');
      await runDeregister({
        configPath: o.config,
        dockerSocket: o.dockerSocket,
        force: o.force === true,
        dryRun: o.dryRun === true,
        say: out,
      });
    });

  // `skypanel-agent <command> --version` works too, not only at the top level.
  for (const cmd of program.commands) cmd.version(AGENT_VERSION, '-V, --version');

  return program;
}

export async function main(argv: string[] = process.argv): Promise<void> {
  const secrets = new KnownSecrets();
  try {
    await buildProgram(secrets).parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message (or the help or version asked for).
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    // One line, no stack: operators read this. AgentError messages are written without secrets;
    // anything else could quote one (a library's error echoing what it was given), so it is redacted too.
    const message = err instanceof AgentError ? err.message : `unexpected error: ${(err as Error)?.message ?? String(err)}`;
    process.stderr.write(`skypanel-agent: ${redact(message, secrets.values())}\n`);
    process.exitCode = exitCodeFor(err);
  }
}
