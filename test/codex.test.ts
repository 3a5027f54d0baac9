import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAgentNamespace, netnsUnavailable, type Namespace } from '../testkit/netns.js';
import { agentMessage, CODEX_JS, codexHome } from '../testkit/codex.js';
import { FAKE_TEXT, type FakeUpstream } from '../testkit/fake-upstream.js';
import type { Squid } from '../testkit/squid.js';
import { FAKE_HOST } from '../testkit/test-ca.js';
import { shippedEgressUnavailable, startShippedEgress, type ShippedEgress } from './support/egress.js';
import { startSidecar, TEST_KEY, type Sidecar } from './support/sidecar.js';

/**
 * The real Codex CLI in a network namespace whose only peer is the sidecar:
 * Codex → sidecar → the product's Squid (squid/, in its own namespace) → TLS
 * fake upstream on 443. Needs root for the namespaces and port 443;
 * CI runs as root and sets API_PROXY_REQUIRE_ALL=1 so this can never be skipped there.
 */
const why = netnsUnavailable() ?? shippedEgressUnavailable();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`Codex end-to-end test cannot run: ${why}`);

describe.skipIf(why !== null)(`Codex CLI end to end${why ? ` (skipped: ${why})` : ''}`, () => {
  let ns: Namespace;
  let egress: ShippedEgress;
  let fake: FakeUpstream;
  let squid: Squid;
  let sidecar: Sidecar;

  beforeAll(async () => {
    ns = createAgentNamespace();
    egress = await startShippedEgress({ names: ['denied.test'], env: { SQUID_ALLOWED_DOMAINS: FAKE_HOST } });
    ({ fake, squid } = egress);
    sidecar = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' }, ns.hostAddress);
  });
  afterAll(async () => {
    await sidecar?.close();
    await egress?.close();
    ns?.close();
  });

  const probe = (host: string, port: number) =>
    ns.run(process.execPath, [
      '-e',
      `require('net').connect(${port}, '${host}').on('connect', () => { console.log('open'); process.exit(0) }).on('error', (e) => { console.log(e.code); process.exit(0) })`,
    ]);

  it('the agent namespace reaches the sidecar and nothing else', async () => {
    expect((await probe(ns.hostAddress, sidecar.port)).stdout.trim()).toBe('open');
    // Squid's host and the upstream are on no route from here.
    expect((await probe(egress.upstreamAddress, 443)).stdout.trim()).toBe('ENETUNREACH');
    expect((await probe(squid.host, squid.port)).stdout.trim()).toBe('ENETUNREACH');
    // The namespace's own loopback holds neither; through the veth, only the sidecar's port answers.
    expect((await probe('127.0.0.1', squid.port)).stdout.trim()).toBe('ECONNREFUSED');
    expect((await probe(ns.hostAddress, squid.port)).stdout.trim()).toBe('ECONNREFUSED');
    expect((await probe(ns.hostAddress, 443)).stdout.trim()).toBe('ECONNREFUSED');
    expect((await probe('1.1.1.1', 443)).stdout.trim()).toBe('ENETUNREACH');
  });

  const runCodex = async (websockets: boolean, via: Sidecar = sidecar) => {
    const home = codexHome(`http://${ns.hostAddress}:${via.port}/v1`, websockets);
    return ns.run(process.execPath, [CODEX_JS, 'exec', '--strict-config', '--skip-git-repo-check', '--ephemeral', '--json', 'say hi'], {
      env: { PATH: process.env.PATH ?? '', HOME: home, CODEX_HOME: home },
      timeoutMs: 60_000,
    });
  };

  it('completes a turn over HTTP SSE', async () => {
    fake.received.length = 0;
    const { code, stdout, stderr } = await runCodex(false);
    expect(code, stderr).toBe(0);
    expect(agentMessage(stdout)).toBe(FAKE_TEXT);
    const turns = fake.received.filter((r) => r.method === 'POST' && r.path === '/v1/responses');
    expect(turns.length).toBeGreaterThanOrEqual(1);
    for (const r of turns) {
      expect(r.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
      expect(r.headers.originator).toBe('codex_exec');
      expect(r.headers.accept).toBe('text/event-stream');
    }
  });

  it('completes a turn over the Responses WebSocket, without falling back to HTTP', async () => {
    fake.received.length = 0;
    const { code, stdout, stderr } = await runCodex(true);
    expect(code, stderr).toBe(0);
    expect(agentMessage(stdout)).toBe(FAKE_TEXT);
    const sockets = fake.received.filter((r) => r.websocket);
    expect(sockets.length).toBeGreaterThanOrEqual(1);
    expect(sockets[0]!.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
    expect(String(sockets[0]!.headers['openai-beta'])).toContain('responses_websockets=');
    expect(sockets.flatMap((s) => s.messages).some((m) => m.includes('"response.create"'))).toBe(true);
    expect(fake.received.filter((r) => r.method === 'POST' && r.path === '/v1/responses')).toHaveLength(0);
  });

  it.each([
    ['WebSocket', true],
    ['HTTP', false],
  ])('over %s, stops at once with "Quota exceeded" once the budget is spent, and the upstream sees nothing more', async (_, websockets) => {
    const budget = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: squid.url, MAX_REQUESTS: '1' }, ns.hostAddress);
    try {
      const first = await runCodex(websockets, budget);
      expect(first.code, first.stderr).toBe(0);
      expect(budget.app.ledger.snapshot().budget).toMatchObject({ usedRequests: 1, exhausted: true });
      const seen = fake.received.length;
      const second = await runCodex(websockets, budget);
      expect(second.code).toBe(1);
      expect(`${second.stdout}\n${second.stderr}`).toContain('Quota exceeded');
      expect(fake.received.length).toBe(seen);
      // No retry loop: over HTTP one refused turn; over WebSocket a second upgrade at most, and no fallback to HTTP.
      const refused = budget.logs.filter((l) => l.includes('"status":429'));
      const turns = refused.filter((l) => l.includes('"path":"/v1/responses"'));
      expect(turns.length).toBeGreaterThanOrEqual(1);
      expect(turns.length).toBeLessThanOrEqual(websockets ? 2 : 1);
      if (websockets) expect(turns.every((l) => l.includes('"kind":"websocket"'))).toBe(true);
    } finally {
      await budget.close();
    }
  });

  it.each([
    ['HTTP', false],
    ['a compressed WebSocket', true],
  ])('over %s under MAX_TOKENS and ALLOWED_MODELS (reservations, one call at a time): completes turns, then stops at once with "Quota exceeded" once spent', async (_, websockets) => {
    const budget = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: squid.url, MAX_TOKENS: '20', ALLOWED_MODELS: 'gpt-5.*' }, ns.hostAddress);
    fake.received.length = 0;
    try {
      const codes: (number | null)[] = [];
      let last = { code: null as number | null, stdout: '', stderr: '' };
      let seen = 0;
      while (codes.length < 8 && !codes.includes(1)) {
        seen = fake.received.length;
        last = await runCodex(websockets, budget);
        codes.push(last.code);
      }
      // Each turn is admitted while the budget has room, its reservation (far over 20 tokens) notwithstanding.
      // Over WebSocket a run is a prewarm and a turn, and the prewarm's tokens count: one run spends 20.
      expect(codes.slice(0, -1).length, JSON.stringify(codes)).toBeGreaterThanOrEqual(websockets ? 1 : 2);
      expect(codes.slice(0, -1).every((c) => c === 0), last.stderr).toBe(true);
      expect(codes.at(-1)).toBe(1);
      expect(`${last.stdout}\n${last.stderr}`).toContain('Quota exceeded');
      expect(fake.received.length).toBe(seen);
      const spent = budget.app.ledger.snapshot().budget;
      expect(spent.exhausted).toBe(true);
      // Every turn (and prewarm) reported its usage: nothing charged beyond it, nothing unknown.
      expect(spent.usedTokens).toBe(budget.app.ledger.snapshot().tokens.total);
      expect(budget.app.ledger.snapshot().unknown).toBe(0);
      if (websockets) {
        const sockets = fake.received.filter((r) => r.websocket);
        expect(sockets.length).toBeGreaterThanOrEqual(1);
        expect(String(sockets.at(-1)!.headers['sec-websocket-extensions'])).toContain('permessage-deflate');
        expect(fake.received.filter((r) => r.method === 'POST' && r.path === '/v1/responses')).toHaveLength(0);
      }
    } finally {
      await budget.close();
    }
  });

  it('a sidecar pointed at a domain off the allowlist answers the agent with egress_denied', async () => {
    const denied = await startSidecar({ UPSTREAM_URL: 'https://denied.test', HTTPS_PROXY: squid.url }, ns.hostAddress);
    try {
      const { stdout } = await ns.run(process.execPath, [
        '-e',
        `fetch('http://${ns.hostAddress}:${denied.port}/v1/models').then(async (r) => console.log(r.status, (await r.json()).error.code))`,
      ]);
      expect(stdout.trim()).toBe('502 egress_denied');
    } finally {
      await denied.close();
    }
  });
});
