// The panel module in its own process, as `skypanel-agent panel` runs it: a pg pool of 10, one
// LISTEN connection, the health monitor. Answers the orchestrator's probes over IPC.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import { pgPoolDatabase, startPanelServer } from '../../dist/panel/index.js';

const { DATABASE_URL, JWT_SECRET } = process.env;
// Idle connections are kept (idleTimeoutMillis 0): a backend that exits takes its CPU time out of the bench's sum.
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 0 });
pool.on('error', () => undefined);
const server = await startPanelServer({
  db: pgPoolDatabase(pool),
  jwtSecret: JWT_SECRET,
  sshCredSecret: JWT_SECRET,
  migrate: false,
  listen: () => new pg.Client({ connectionString: DATABASE_URL, keepAlive: true }),
});
// How late the panel's event loop runs: a beat waits that long on top of its own work.
const lag = monitorEventLoopDelay({ resolution: 10 });
lag.enable();
process.on('message', (m) => {
  if (m.cmd === 'lag-reset') lag.reset();
  else if (m.cmd === 'probe') {
    server.server.getConnections((_err, connections) => {
      process.send({
        kind: 'probe',
        id: m.id,
        held: server.feed?.held ?? 0,
        listening: server.feed?.listening ?? false,
        connections,
        poolWaiting: pool.waitingCount,
        lagP99Ms: lag.percentile(99) / 1e6,
        lagMaxMs: lag.max / 1e6,
      });
    });
  } else if (m.cmd === 'stop') {
    void server
      .close()
      .then(() => pool.end())
      .then(() => process.exit(0));
  }
});
process.send({ kind: 'ready', url: server.url });
