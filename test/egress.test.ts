import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../testkit/fake-upstream.js';
import { freePort, SQUID_BIN, startSquid, type Squid } from '../testkit/squid.js';
import { startSidecar, TEST_KEY, testPki, type Sidecar } from './support/sidecar.js';
import { sseData, timedRequest } from './support/net.js';
import { exchangeEvents, openWebSocket } from './support/ws.js';
import { until } from '../testkit/wait.js';

// Squid is part of the product's real path; scripts/test.sh installs it. Without it this file cannot say anything.
if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');

let fake: FakeUpstream;
let squid: Squid;
let sidecar: Sidecar;

beforeAll(async () => {
  // Long-lived idle connections, as OpenAI keeps them: pool reuse must not hinge on a 5 s timer under load.
  fake = await startFakeUpstream({ pki: testPki(), keepAliveTimeoutMs: 60_000 });
  squid = await startSquid({ allow: ['.openai.test'], hosts: { 'api.openai.test': '127.0.0.1', 'denied.test': '127.0.0.1' } });
  sidecar = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' });
});
afterAll(async () => {
  await sidecar?.close();
  await squid?.stop();
  await fake?.close();
});

describe('the kept-alive tunnel pool', () => {
  it('serves 50 sequential requests with one CONNECT and one TLS handshake', async () => {
    const side = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url });
    const before = { tls: fake.tlsHandshakes, tcp: fake.connections, connects: squid.connects().length };
    for (let i = 0; i < 50; i++) {
      const res = await request(side.url).post('/v1/responses').send({ input: i });
      expect(res.status).toBe(200);
    }
    expect(fake.tlsHandshakes - before.tls).toBe(1);
    expect(fake.connections - before.tcp).toBe(1);
    await side.close();
    const connects = await until(() => squid.connects().length - before.connects, (n) => n >= 1);
    expect(connects).toBe(1);
  });

  it('opens no more tunnels than concurrent requests, then reuses them', async () => {
    const side = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url });
    const before = fake.tlsHandshakes;
    const burst = async (): Promise<void> => {
      const answers = await Promise.all(Array.from({ length: 8 }, () => request(side.url).get('/v1/models')));
      for (const a of answers) expect(a.status).toBe(200);
    };
    // A burst may be served by fewer tunnels than callers (one finishes before another starts), and a later
    // burst may then open the rest; what must hold is that 24 requests never need more than 8 tunnels.
    for (let i = 0; i < 3; i++) await burst();
    const handshakes = fake.tlsHandshakes - before;
    expect(handshakes).toBeGreaterThanOrEqual(1);
    expect(handshakes).toBeLessThanOrEqual(8);
    await side.close();
  });

  it('drops tunnels that died with Squid and recovers without a restart', async () => {
    const side = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url });
    try {
      expect((await request(side.url).get('/v1/models')).status).toBe(200);
      await squid.restart();
      const before = fake.tlsHandshakes;
      for (let i = 0; i < 3; i++) expect((await request(side.url).get('/v1/models')).status).toBe(200);
      expect(fake.tlsHandshakes - before).toBe(1);
    } finally {
      await side.close();
    }
  });
});

describe('forwarding through Squid to a TLS upstream', () => {
  it('injects the key and streams SSE event by event', async () => {
    fake.received.length = 0;
    const res = await timedRequest(`${sidecar.url}/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer agent-key', 'x-fake': 'events=4,interval=150' },
      body: JSON.stringify({ stream: true }),
    });
    expect(res.status).toBe(200);
    const deltas = res.chunks.filter((c) => c.text.includes('output_text.delta'));
    expect(deltas.at(-1)!.at - deltas[0]!.at).toBeGreaterThan(300);
    expect(sseData(res.body).at(-1)).toMatchObject({ type: 'response.completed' });
    expect(fake.received[0]!.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
    expect(fake.received[0]!.path).toBe('/v1/responses');
  });

  it('tunnels a Codex-style WebSocket with the key injected on the upgrade', async () => {
    fake.received.length = 0;
    const { ws } = await openWebSocket(`${sidecar.url.replace('http', 'ws')}/v1/responses`, {
      authorization: 'Bearer agent-key',
      'openai-beta': 'responses_websockets=2026-02-06',
      originator: 'codex_exec',
      'session-id': 'sess-ws',
    });
    expect(ws).toBeDefined();
    expect(ws!.extensions).toContain('permessage-deflate');
    const upgrade = fake.received[0]!;
    expect(upgrade.websocket).toBe(true);
    expect(upgrade.path).toBe('/v1/responses');
    expect(upgrade.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
    expect(upgrade.headers['openai-beta']).toBe('responses_websockets=2026-02-06');
    expect(upgrade.headers['session-id']).toBe('sess-ws');

    const prewarm = await exchangeEvents(ws!, { type: 'response.create', generate: false, model: 'gpt-5.5' }, 'response.completed');
    expect(prewarm.map((e) => e.type)).toEqual(['response.created', 'response.completed']);
    const id = (prewarm[1]!.response as { id: string }).id;
    const turn = await exchangeEvents(ws!, { type: 'response.create', previous_response_id: id, model: 'gpt-5.5' }, 'response.completed');
    expect(turn.filter((e) => e.type === 'response.output_text.delta').length).toBeGreaterThan(0);
    expect(upgrade.messages).toHaveLength(2);

    const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
    expect(metrics).toContain('api_proxy_websocket_connections_active 1');
    ws!.close();
    await once(ws!, 'close');
  });

  it('passes no caller credential on the upgrade: no key header, no key query parameter however spelled', async () => {
    fake.received.length = 0;
    const { ws } = await openWebSocket(`${sidecar.url.replace('http', 'ws')}/v1/responses?key=AIzaAgentKey&v=1&%4BEY=again`, {
      'x-goog-api-key': 'AIzaAgentKey',
      'x-api-key': 'agent-x-key',
      'api-key': 'agent-azure-key',
    });
    expect(ws).toBeDefined();
    const upgrade = fake.received[0]!;
    expect(upgrade.websocket).toBe(true);
    expect(upgrade.path).toBe('/v1/responses?v=1');
    expect(upgrade.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
    for (const h of ['x-goog-api-key', 'x-api-key', 'api-key']) expect(upgrade.headers[h], h).toBeUndefined();
    expect(JSON.stringify(upgrade.rawHeaders)).not.toContain('AIzaAgentKey');
    ws!.close();
    await once(ws!, 'close');
  });

  it('closes the upstream side when the caller drops its socket without a close frame', async () => {
    const { ws } = await openWebSocket(`${sidecar.url.replace('http', 'ws')}/v1/responses`, {});
    await exchangeEvents(ws!, { type: 'response.create', generate: false }, 'response.completed');
    const upstreamClosed = once(fake, 'websocket-closed');
    ws!.terminate();
    await upstreamClosed;
    const active = async (): Promise<number> => (await sidecar.app.metrics.websocketsActive.get()).values[0]!.value;
    expect(await until(active, (n) => n === 0)).toBe(0);
  });

  it('relays a refused upgrade as it came, with the echoed key redacted', async () => {
    const { refused } = await openWebSocket(`${sidecar.url.replace('http', 'ws')}/v1/responses`, { 'x-fake': 'status=401' });
    expect(refused?.status).toBe(401);
    expect(JSON.parse(refused!.body).error.message).toContain('Incorrect API key provided: [redacted].');
    expect(refused!.body).not.toContain(TEST_KEY.slice(-4));
    expect(refused!.headers['x-request-id']).toBeTruthy();
  });

  it('reports the egress proxy in /health and readiness', async () => {
    expect((await request(sidecar.url).get('/readyz')).body).toEqual({ status: 'ready' });
    expect((await request(sidecar.url).get('/health')).body.egressProxy).toEqual({ configured: true, url: squid.url, reachable: true });
  });
});

describe('egress errors', () => {
  it('502 egress_denied when Squid refuses the destination', async () => {
    const side = await startSidecar({ UPSTREAM_URL: `https://denied.test:${fake.port}`, HTTPS_PROXY: squid.url });
    try {
      const res = await request(side.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error).toMatchObject({ type: 'proxy_error', code: 'egress_denied' });
      const denied = await until(() => squid.accessLog().filter((l) => l.includes('TCP_DENIED/403') && l.includes('denied.test')), (l) => l.length > 0);
      expect(denied.length).toBeGreaterThan(0);
    } finally {
      await side.close();
    }
  });

  it('502 upstream_unreachable when Squid cannot reach an allowed upstream', async () => {
    const side = await startSidecar({ UPSTREAM_URL: `https://api.openai.test:${await freePort()}`, HTTPS_PROXY: squid.url });
    try {
      const res = await request(side.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('upstream_unreachable');
    } finally {
      await side.close();
    }
  });

  it('502 upstream_unreachable and not ready when the egress proxy is down', async () => {
    const side = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: `http://127.0.0.1:${await freePort()}` });
    try {
      const res = await request(side.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('upstream_unreachable');
      const ready = await request(side.url).get('/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body).toEqual({ status: 'not_ready', reasons: ['egress proxy unreachable'] });
    } finally {
      await side.close();
    }
  });

  it('504 upstream_timeout when the egress proxy never answers CONNECT', async () => {
    const silent: Server = createServer(() => undefined);
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const side = await startSidecar({
      UPSTREAM_URL: fake.url,
      HTTPS_PROXY: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`,
      UPSTREAM_CONNECT_TIMEOUT_MS: '300',
    });
    try {
      const res = await request(side.url).get('/v1/models');
      expect(res.status).toBe(504);
      expect(res.body.error.code).toBe('upstream_timeout');
    } finally {
      await side.close();
      silent.close();
    }
  });
});
