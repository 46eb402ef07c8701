// Start-up: wall time from spawning `skypanel-agent run` to the control plane receiving its first
// heartbeat, next to the time a bare Node.js takes to start and exit.
import { spawn } from 'node:child_process';
import { rememberWorker } from './cleanup.mjs';
import { AgentProc, median, max, registerWorker, requestsOf, track, waitFor } from './lib.mjs';

function bareNodeMs() {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = track(spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' }));
    child.on('error', reject);
    child.on('close', () => resolve(performance.now() - t0));
  });
}

export async function measureStartup(cp, dir, { samples = 5, log }) {
  const { workerId, config } = await registerWorker(cp, dir, {});
  rememberWorker(workerId);
  const agentMs = [];
  for (let i = 0; i < samples; i++) {
    const before = requestsOf(cp, workerId, '/heartbeat', 'POST').length;
    const agent = new AgentProc(config, { SKYPANEL_AGENT_LOG_LEVEL: 'warn' });
    try {
      // `at` is stamped by the control plane on arrival, so the polling below adds nothing.
      const first = await waitFor(
        () => requestsOf(cp, workerId, '/heartbeat', 'POST')[before],
        15_000,
        () => `first heartbeat of run ${i + 1}\n${agent.tail()}`,
        10,
      );
      agentMs.push(first.at - agent.spawnedAt);
    } finally {
      await agent.stop();
    }
  }
  const bareMs = [];
  for (let i = 0; i < samples; i++) bareMs.push(Math.round(await bareNodeMs()));
  log?.(`start-up: agent ${agentMs.join(', ')} ms; bare node ${bareMs.join(', ')} ms`);
  return { agentMs, medianMs: median(agentMs), maxMs: max(agentMs), bareNodeMs: bareMs, bareNodeMedianMs: median(bareMs), workerId };
}
