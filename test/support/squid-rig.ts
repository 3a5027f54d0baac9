import { afterAll, beforeAll } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { SQUID_BIN, startSquid, type Squid } from '../../testkit/squid.js';
import { FAKE_ANTHROPIC_HOST, FAKE_GEMINI_HOST } from '../../testkit/test-ca.js';
import { startSidecar, TEST_ANTHROPIC_KEY, testPki, type Sidecar } from './sidecar.js';

export interface SquidRig {
  /** Set once the file's beforeAll has run. */
  fake: FakeUpstream;
  squid: Squid;
  /** A sidecar through Squid to the fake, serving OpenAI and Anthropic, with `env` on top; closed after the file. */
  sidecarWith(env?: Record<string, string>): Promise<Sidecar>;
}

/**
 * The path spend is tested on: sidecar → Squid → the TLS fake upstream at
 * api.openai.test and api.anthropic.test (one server answering both APIs),
 * which reports the usage each request asks for (x-fake).
 * Registers the file's hooks: Squid and the fake start before its tests and
 * stop after them, with every sidecar made here.
 */
export function squidRig(): SquidRig {
  if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');
  const sidecars: Sidecar[] = [];
  const rig = {
    sidecarWith: async (env: Record<string, string> = {}): Promise<Sidecar> => {
      const s = await startSidecar({
        UPSTREAM_URL: rig.fake.url,
        ANTHROPIC_API_KEY: TEST_ANTHROPIC_KEY,
        ANTHROPIC_UPSTREAM_URL: `https://${FAKE_ANTHROPIC_HOST}:${rig.fake.port}`,
        HTTPS_PROXY: rig.squid.url,
        ...env,
      });
      sidecars.push(s);
      return s;
    },
  } as SquidRig;
  beforeAll(async () => {
    rig.fake = await startFakeUpstream({ pki: testPki() });
    rig.squid = await startSquid({
      allow: ['.openai.test', '.anthropic.test', FAKE_GEMINI_HOST],
      hosts: { 'api.openai.test': '127.0.0.1', 'azure.openai.test': '127.0.0.1', [FAKE_ANTHROPIC_HOST]: '127.0.0.1', [FAKE_GEMINI_HOST]: '127.0.0.1' },
    });
  });
  afterAll(async () => {
    await Promise.all(sidecars.map((s) => s.close()));
    await rig.squid?.stop();
    await rig.fake?.close();
  });
  return rig;
}
