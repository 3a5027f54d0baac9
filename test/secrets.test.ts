import { once } from 'node:events';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../testkit/fake-upstream.js';
import { SQUID_BIN, startSquid, type Squid } from '../testkit/squid.js';
import { rawExchange } from './support/net.js';
import { startSidecar, TEST_KEY, testPki, type Sidecar } from './support/sidecar.js';
import { openWebSocket } from './support/ws.js';

if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');

/**
 * Everything a caller, an operator or a scraper can see, captured at LOG_LEVEL=trace
 * across the exchanges that touch the key: searched for the key and every
 * 6-character fragment of its secret part.
 */
let fake: FakeUpstream;
let squid: Squid;
let sidecar: Sidecar;
const seen: string[] = [];

beforeAll(async () => {
  fake = await startFakeUpstream({ pki: testPki() });
  squid = await startSquid({ allow: ['.openai.test'], hosts: { 'api.openai.test': '127.0.0.1', 'denied.test': '127.0.0.1' } });
  sidecar = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url, LOG_LEVEL: 'trace' });
});
afterAll(async () => {
  await sidecar.close();
  await squid.stop();
  await fake.close();
});

const capture = (res: request.Response): void => {
  seen.push(JSON.stringify(res.headers), res.text ?? '', JSON.stringify(res.body ?? ''));
};

describe('the key never leaves the sidecar except upstream', () => {
  it('is absent from responses, errors, health, metrics and trace logs', async () => {
    const agent = request(sidecar.url);
    const calls = [
      agent.post('/v1/responses').set('authorization', 'Bearer agent').send({ input: 'x' }),
      agent.post('/v1/responses').send({ stream: true }),
      agent.post('/v1/responses').set('x-fake', 'status=401').send({}),
      agent.post('/v1/responses').set('x-fake', 'status=401,gzip').set('accept-encoding', 'gzip').send({}),
      agent.post('/v1/chat/completions').set('x-fake', 'status=403').send({}),
      agent.post('/v1/chat/completions').set('x-fake', 'status=500').send({}),
      agent.get('/v1/models').set('x-request-id', TEST_KEY),
      agent.get('/healthz'),
      agent.get('/readyz'),
      agent.get('/health'),
    ];
    for (const res of await Promise.all(calls)) capture(res);
    seen.push(await rawExchange(sidecar.port, 'GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n'));
    seen.push(await rawExchange(sidecar.port, 'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test\r\n\r\n'));

    const { refused } = await openWebSocket(`${sidecar.url.replace('http', 'ws')}/v1/responses`, { 'x-fake': 'status=401' });
    seen.push(JSON.stringify(refused));
    const { ws } = await openWebSocket(`${sidecar.url.replace('http', 'ws')}/v1/responses`, {});
    ws!.send(JSON.stringify({ type: 'response.create', generate: false }));
    const [first] = await once(ws!, 'message');
    seen.push(String(first));
    ws!.close();
    await once(ws!, 'close');

    const denied = await startSidecar({ UPSTREAM_URL: `https://denied.test:${fake.port}`, HTTPS_PROXY: squid.url, LOG_LEVEL: 'trace' });
    capture(await request(denied.url).get('/v1/models'));
    await denied.close();
    seen.push(...denied.logs);

    capture(await agent.get('/metrics'));
    seen.push(...sidecar.logs);

    // The exchanges did reach the upstream with the key: the search below is not vacuous.
    expect(fake.received.some((r) => r.headers.authorization === `Bearer ${TEST_KEY}`)).toBe(true);
    expect(sidecar.logs.length).toBeGreaterThan(10);

    const haystack = seen.join('\n');
    expect(haystack).not.toContain(TEST_KEY);
    const secret = TEST_KEY.slice('sk-proj-'.length);
    const leaks = [];
    for (let i = 0; i + 6 <= secret.length; i++) {
      const fragment = secret.slice(i, i + 6);
      if (haystack.includes(fragment)) leaks.push(fragment);
    }
    expect(leaks).toEqual([]);
  });
});
