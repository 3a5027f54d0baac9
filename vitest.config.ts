import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Images and a compose stack: vitest.containers.config.ts runs them after this suite, alone.
    exclude: ['test/containers/**', '**/node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    // Forks inherit NODE_EXTRA_CA_CERTS from the global setup, as a real process would.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
    coverage: { provider: 'v8', include: ['src/**'], reporter: ['text-summary', 'text'] },
  },
});
