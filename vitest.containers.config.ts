import { defineConfig } from 'vitest/config';

// The container tests (test/containers/): run after the main suite, alone, by
// scripts/container-test.sh, which provides the Docker engine and base images.
export default defineConfig({
  test: {
    include: ['test/containers/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 600_000,
  },
});
