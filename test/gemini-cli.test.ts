import { describe, expect, it } from 'vitest';
import { FAKE_TEXT, type Received } from '../testkit/fake-upstream.js';
import { GEMINI_CLI_JS, geminiEnvForTest } from '../testkit/gemini-cli.js';
import { netnsUnavailable } from '../testkit/netns.js';
import { FAKE_GEMINI_HOST } from '../testkit/test-ca.js';
import { agentSandbox, shippedEgressUnavailable } from './support/egress.js';
import { TEST_GEMINI_KEY, TEST_KEY, type Sidecar } from './support/sidecar.js';

/**
 * The real Gemini CLI in a network namespace whose only peer is the sidecar:
 * Gemini CLI → sidecar's Gemini port → the product's Squid → TLS fake at
 * generativelanguage.googleapis.test:443. Needs root, as the Codex test does.
 */
const why = netnsUnavailable() ?? shippedEgressUnavailable();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`Gemini CLI end-to-end test cannot run: ${why}`);

describe.skipIf(why !== null)(`Gemini CLI end to end${why ? ` (skipped: ${why})` : ''}`, () => {
  const sandbox = agentSandbox(FAKE_GEMINI_HOST, { GEMINI_API_KEY: TEST_GEMINI_KEY, GEMINI_UPSTREAM_URL: `https://${FAKE_GEMINI_HOST}` });

  const runGemini = (s: Sidecar) =>
    sandbox.ns.run(process.execPath, [GEMINI_CLI_JS, '-p', 'say hi', '-m', 'gemini-2.5-flash'], { env: geminiEnvForTest(s.urls.gemini!), timeoutMs: 90_000 });
  const calls = (from: number): Received[] => sandbox.fake.received.slice(from);

  it('completes a turn; its usage is counted exactly; the key arrives as x-goog-api-key and nowhere else', async () => {
    const s = await sandbox.sidecarWith();
    const before = sandbox.fake.received.length;
    const { code, stdout, stderr } = await runGemini(s);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain(FAKE_TEXT.trim());
    const sent = calls(before);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    for (const r of sent) {
      expect(r.path).toMatch(/^\/v1beta\/models\/[^/]+:(streamGenerateContent\?alt=sse|generateContent|countTokens)$/);
      expect(r.headers['x-goog-api-key']).toBe(TEST_GEMINI_KEY);
      expect(JSON.stringify(r.rawHeaders)).not.toContain('agent-placeholder-key');
      expect(JSON.stringify(r.rawHeaders)).not.toContain(TEST_KEY);
    }
    const answers = sent.filter((r) => /:(stream)?generateContent/i.test(r.path)).length;
    const usage = s.app.ledger.snapshot();
    // The fake reports 5 prompt tokens and one output token per delta (5) on each answer.
    expect(usage.providers.gemini).toEqual({ responses: answers, tokens: { input: 5 * answers, cached_input: 0, cache_write: 0, output: 5 * answers, reasoning: 0, total: 10 * answers } });
    expect(usage.unknown).toBe(0);
  });

  it('on a spent budget it stops after one refused request, saying why, and nothing more goes upstream', async () => {
    const s = await sandbox.sidecarWith({ MAX_TOKENS: '5' });
    const first = await runGemini(s);
    expect(first.code, first.stderr).toBe(0);
    expect(s.app.ledger.snapshot().budget.exhausted).toBe(true);
    const seen = sandbox.fake.received.length;
    const second = await runGemini(s);
    expect(second.code).not.toBe(0);
    expect(`${second.stdout}\n${second.stderr}`).toContain("This sandbox's model budget is exhausted");
    expect(sandbox.fake.received.length).toBe(seen);
    expect(s.logs.filter((l) => l.includes('budget_exceeded'))).toHaveLength(1);
  });
});
