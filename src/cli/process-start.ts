import { readFileSync } from 'node:fs';
import { ownCpuUs, parseProcStat, type CpuSnapshot } from '../collectors/cpu.js';
import { PROC_ROOT } from '../collectors/proc.js';

/**
 * A CPU sample taken before any other module of the CLI runs (main.ts imports this first). The
 * first heartbeat's CPU figure needs a window of at least a second; starting it here rather than
 * when the agent is built lets that second overlap start-up, so the first beat is not held back a
 * whole second more (the agent's own CPU over the window is taken out of the figure). A read-only
 * fact about this process, like its start time; undefined where /proc cannot be read.
 */
export const PROCESS_START_CPU: CpuSnapshot | undefined = (() => {
  try {
    return { times: parseProcStat(readFileSync(`${PROC_ROOT}/stat`, 'utf8')), ownUs: ownCpuUs(), at: performance.now() };
  } catch {
    return undefined;
  }
})();
