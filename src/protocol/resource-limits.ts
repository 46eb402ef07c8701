/**
 * The smallest limits a Swarm task can start with; below them every task fails at start and is
 * retried for ever, or the service is refused at create, so the schema refuses them instead.
 * From moby/moby (master at b985e231, and Docker 20.10 as run by the e2e tests):
 * - CPU: dockerd turns NanoCPUs into a CFS quota over a 100 ms period (daemon/daemon_unix.go,
 *   `quota := config.NanoCPUs * int64(period) / 1e9`), and the kernel refuses a quota under 1 ms
 *   (runc: `failed to write "500": cpu.cfs_quota_us: invalid argument` for 0.005 cores). So
 *   0.01 cores; swarmkit's own floor (manager/controlapi/service.go validateResources: 1e6
 *   NanoCPUs) is lower, and a value rounding to 0 NanoCPUs would mean "no limit" to Swarm.
 * - Memory: dockerd refuses a container limit under 6 MiB (daemon/daemon_unix.go
 *   `linuxMinMemory = 6291456`, "Minimum memory limit allowed is 6MB"; 4 MiB before 20.10).
 *   swarmkit refuses a limit or a reservation under 4 MiB (validateResources): service-spec.ts
 *   keeps reservations at least SWARM_MIN_MEMORY_BYTES.
 */
export const MIN_CPU_CORES = 0.01;
export const MIN_MEMORY_MB = 6;
export const SWARM_MIN_MEMORY_BYTES = 4 * 1024 * 1024;
/** Upper bounds: SkyPanelV2's own bounds for a worker's capacity (no deployment needs more than a worker may have). */
export const MAX_CPU_CORES = 256;
export const MAX_MEMORY_MB = 1048576;
