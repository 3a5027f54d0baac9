import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { freePort } from '../testkit/squid.js';
import { run } from '../testkit/run.js';
import { startSidecar, TEST_ANTHROPIC_KEY, type Sidecar } from './support/sidecar.js';

/**
 * dist/src/healthcheck.js: the image's HEALTHCHECK and Kubernetes' exec probes,
 * which reach a sidecar listening on loopback only (the pod's address is closed).
 */
const HEALTHCHECK = fileURLToPath(new URL('../dist/src/healthcheck.js', import.meta.url));
const probe = async (env: Record<string, string>, ...args: string[]): Promise<number | null> =>
  (await run(process.execPath, [HEALTHCHECK, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeoutMs: 10_000 })).code;

describe('the exec probe', () => {
  let sidecar: Sidecar;
  let env: Record<string, string>;
  beforeAll(async () => {
    sidecar = await startSidecar({});
    env = { HOST: '127.0.0.1', PORT: String(sidecar.port) };
  });
  afterAll(() => sidecar?.close());

  it('passes readiness by default and liveness with /healthz; a wildcard HOST is reached through loopback', async () => {
    expect(await probe(env)).toBe(0);
    expect(await probe(env, '/healthz')).toBe(0);
    expect(await probe({ HOST: '0.0.0.0', PORT: env.PORT! }, '/readyz')).toBe(0);
  });

  it('fails where nothing listens, and refuses a path it does not know with 64', async () => {
    expect(await probe({ HOST: '127.0.0.1', PORT: String(await freePort()) })).toBe(1);
    expect(await probe(env, '/metrics')).toBe(64);
  });

  it("with only Anthropic's key set, probes its port (ANTHROPIC_PORT), not PORT where nothing listens", async () => {
    const only = await startSidecar({ OPENAI_API_KEY: '', ANTHROPIC_API_KEY: TEST_ANTHROPIC_KEY });
    try {
      const port = new URL(only.urls.anthropic!).port;
      const dead = String(await freePort());
      expect(await probe({ HOST: '127.0.0.1', PORT: dead, ANTHROPIC_PORT: port, ANTHROPIC_API_KEY_FILE: '/run/secrets/anthropic' })).toBe(0);
      expect(await probe({ HOST: '127.0.0.1', PORT: dead, ANTHROPIC_PORT: port })).toBe(1);
    } finally {
      await only.close();
    }
  });

  it('fails readiness while draining, and liveness still passes', async () => {
    void sidecar.app.drain();
    expect(await probe(env, '/readyz')).toBe(1);
    expect(await probe(env, '/healthz')).toBe(0);
  });
});
