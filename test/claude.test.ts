import { describe, expect, it } from 'vitest';
import { CLAUDE_BIN, claudeEnvForTest } from '../testkit/claude.js';
import { FAKE_TEXT, type Received } from '../testkit/fake-upstream.js';
import { netnsUnavailable } from '../testkit/netns.js';
import { FAKE_ANTHROPIC_HOST } from '../testkit/test-ca.js';
import { agentSandbox, shippedEgressUnavailable } from './support/egress.js';
import { TEST_ANTHROPIC_KEY, TEST_KEY, type Sidecar } from './support/sidecar.js';

/**
 * The real Claude Code CLI in a network namespace whose only peer is the
 * sidecar: Claude Code → sidecar's Anthropic port → the product's Squid →
 * TLS fake at api.anthropic.test:443. Needs root, as the Codex test does.
 */
const why = netnsUnavailable() ?? shippedEgressUnavailable();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`Claude Code end-to-end test cannot run: ${why}`);

// The usage every fake answer reports: the count below must be exactly this, per answer.
const USAGE = 'input=12,output=3,cache_read=100,cache_write=7';
const PER_ANSWER = { input: 119, cached_input: 100, cache_write: 7, output: 3, reasoning: 0, total: 122 };

describe.skipIf(why !== null)(`Claude Code end to end${why ? ` (skipped: ${why})` : ''}`, () => {
  const sandbox = agentSandbox(FAKE_ANTHROPIC_HOST, { ANTHROPIC_API_KEY: TEST_ANTHROPIC_KEY, ANTHROPIC_UPSTREAM_URL: `https://${FAKE_ANTHROPIC_HOST}` });

  const runClaude = (s: Sidecar) =>
    sandbox.ns.run(CLAUDE_BIN, ['-p', 'say hi', '--model', 'claude-sonnet-4-5'], {
      env: claudeEnvForTest(s.urls.anthropic!, { ANTHROPIC_CUSTOM_HEADERS: `x-fake: ${USAGE}` }),
      timeoutMs: 60_000,
    });
  const messages = (from: number): Received[] => sandbox.fake.received.slice(from).filter((r) => r.path.startsWith('/v1/messages'));

  it('completes a turn; its usage is counted exactly; the key arrives as x-api-key and nowhere else; no other host is tried', async () => {
    const s = await sandbox.sidecarWith();
    const before = sandbox.fake.received.length;
    const { code, stdout, stderr } = await runClaude(s);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain(FAKE_TEXT.trim());
    const sent = messages(before);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(sandbox.fake.received.slice(before).every((r) => r.path.startsWith('/v1/messages'))).toBe(true);
    for (const r of sent) {
      expect(r.headers['x-api-key']).toBe(TEST_ANTHROPIC_KEY);
      expect(r.headers.authorization).toBeUndefined();
      expect(JSON.stringify(r.rawHeaders)).not.toContain(TEST_KEY);
      expect(JSON.stringify(r.rawHeaders)).not.toContain('placeholder');
      expect(r.headers['user-agent']).toMatch(/^claude-cli\//);
    }
    const usage = s.app.ledger.snapshot();
    const n = sent.filter((r) => r.method === 'POST' && /^\/v1\/messages(\?|$)/.test(r.path)).length;
    const times = (k: number) => Object.fromEntries(Object.entries(PER_ANSWER).map(([t, v]) => [t, v * k]));
    expect(usage.providers.anthropic).toEqual({ responses: n, tokens: times(n) });
    expect(usage.unknown).toBe(0);
    expect(usage.providers.openai).toEqual({ responses: 0, tokens: times(0) });
  });

  it('on a spent budget it exits at once saying why, after one refused request, and nothing more goes upstream', async () => {
    const s = await sandbox.sidecarWith({ MAX_TOKENS: '100' });
    const first = await runClaude(s);
    expect(first.code, first.stderr).toBe(0);
    expect(s.app.ledger.snapshot().budget.exhausted).toBe(true);
    const seen = sandbox.fake.received.length;
    const started = Date.now();
    const second = await runClaude(s);
    expect(second.code).toBe(1);
    expect(second.stdout).toContain("API Error: 402 This sandbox's model budget is exhausted: its token budget (MAX_TOKENS=100) is spent");
    expect(sandbox.fake.received.length).toBe(seen);
    const refused = s.logs.filter((l) => l.includes('"status":402'));
    expect(refused).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(30_000);
  });
});
