import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests spawn the built CLI and real servers; keep them from starving each other on 2 cores.
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
