import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { startSidecar, TEST_KEY, type Sidecar } from '../support/sidecar.js';
import { rawExchange, sseData, timedRequest } from '../support/net.js';

let fake: FakeUpstream;
let sidecar: Sidecar;

beforeAll(async () => {
  fake = await startFakeUpstream();
  sidecar = await startSidecar({ UPSTREAM_URL: fake.url, MAX_BODY_BYTES: String(4 * 1024 * 1024) });
});
afterAll(async () => {
  await sidecar.close();
  await fake.close();
});
afterEach(() => {
  fake.received.length = 0;
});

const CALLER_CREDENTIALS = {
  authorization: 'Bearer sk-agent-should-not-pass',
  'api-key': 'agent-azure-key',
  'x-api-key': 'agent-x-key',
  'x-goog-api-key': 'AIzaAgentKey',
  'proxy-authorization': 'Basic YWdlbnQ6cGFzcw==',
  cookie: 'session=agent',
  forwarded: 'for=10.0.0.9',
  'x-forwarded-for': '10.0.0.9',
  'x-forwarded-host': 'evil.test',
  via: '1.1 agent',
};
const CODEX_HEADERS = {
  'openai-beta': 'responses=experimental',
  originator: 'codex_exec',
  session_id: 'sess-1',
  'session-id': 'sess-2',
  'x-client-request-id': 'client-req-1',
  'x-codex-turn-metadata': '{"turn":1}',
};

describe('every path family is forwarded with the real key and only the real key', () => {
  it.each([
    ['POST', '/v1/responses', '/v1/responses'],
    ['POST', '/responses', '/v1/responses'],
    ['POST', '/v1/chat/completions', '/v1/chat/completions'],
    ['POST', '/chat/completions', '/v1/chat/completions'],
    ['GET', '/v1/models?client_version=0.169.0', '/v1/models?client_version=0.169.0'],
    ['GET', '/models', '/v1/models'],
    ['POST', '/v1/embeddings', '/v1/embeddings'],
    ['DELETE', '/v1/files/file-123', '/v1/files/file-123'],
    ['POST', '/v1/some/new/endpoint?x=1&y=%2F', '/v1/some/new/endpoint?x=1&y=%2F'],
    ['POST', '/healthz', '/v1/healthz'],
    ['GET', '/HEALTHZ', '/v1/HEALTHZ'],
    ['GET', '/v1/models?key=AIzaAgentKey&limit=2&%6Bey=again', '/v1/models?limit=2'],
  ])('%s %s → %s', async (method, path, upstream) => {
    const call = request(sidecar.url)[method.toLowerCase() as 'get'];
    const res = await call(path)
      .set({ ...CALLER_CREDENTIALS, ...CODEX_HEADERS, 'content-type': 'application/json' })
      .send(method === 'GET' || method === 'DELETE' ? undefined : { model: 'gpt-5.5', input: 'hi' });
    expect(res.status).toBe(200);
    expect(fake.received).toHaveLength(1);
    const got = fake.received[0]!;
    expect(got.method).toBe(method);
    expect(got.path).toBe(upstream);
    expect(got.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
    expect(got.rawHeaders.filter((h) => h.toLowerCase() === 'authorization')).toHaveLength(1);
    for (const h of ['api-key', 'x-api-key', 'x-goog-api-key', 'proxy-authorization', 'cookie', 'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'via']) {
      expect(got.headers[h], h).toBeUndefined();
    }
    for (const [h, v] of Object.entries(CODEX_HEADERS)) expect(got.headers[h], h).toBe(v);
    expect(got.headers.host).toBe(new URL(fake.url).host);
    expect(got.headers['x-request-id']).toBe(res.headers['x-request-id']);
    expect(res.headers['x-upstream-request-id']).toBe('req_upstream');
  });

  it('keeps a sane caller request id and replaces an unsafe one', async () => {
    const kept = await request(sidecar.url).get('/v1/models').set('x-request-id', 'agent-run-42');
    expect(kept.headers['x-request-id']).toBe('agent-run-42');
    expect(fake.received[0]!.headers['x-request-id']).toBe('agent-run-42');
    const replaced = await request(sidecar.url).get('/v1/models').set('x-request-id', 'has spaces;and=more');
    expect(replaced.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(fake.received[1]!.headers['x-request-id']).toBe(replaced.headers['x-request-id']);
  });

  it('passes a multipart upload byte for byte', async () => {
    const file = randomBytes(300_000);
    const res = await request(sidecar.url).post('/v1/files').field('purpose', 'batch').attach('file', file, 'data.jsonl');
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ object: 'file', filename: 'data.jsonl', purpose: 'batch' });
    const got = fake.received[0]!;
    expect(got.headers['content-type']).toMatch(/^multipart\/form-data; boundary=/);
    expect(got.body.includes(file)).toBe(true);
  });

  it('passes binary audio unchanged', async () => {
    const audio = randomBytes(1_000_000);
    const res = await request(sidecar.url).post('/v1/audio/transcriptions').set('content-type', 'audio/wav').send(audio);
    expect(res.status).toBe(200);
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    expect(digest(fake.received[0]!.body)).toBe(digest(audio));
  });
});

describe('streaming', () => {
  it('delivers SSE events as the upstream writes them, not at the end', async () => {
    const res = await timedRequest(`${sidecar.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', 'x-fake': 'events=5,interval=150' },
      body: JSON.stringify({ model: 'm', stream: true, input: 'hi' }),
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/event-stream');
    expect(res.headers['content-encoding']).toBeUndefined();
    const deltas = res.chunks.filter((c) => c.text.includes('response.output_text.delta'));
    expect(deltas.length).toBeGreaterThanOrEqual(4);
    // Sent 150 ms apart: buffering would land them together.
    const spread = deltas.at(-1)!.at - deltas[0]!.at;
    expect(spread).toBeGreaterThan(400);
    expect(sseData(res.body).at(-1)).toMatchObject({ type: 'response.completed' });
  });

  it('streams the request body upstream before it has all been sent', async () => {
    // An upstream that answers on the first body chunk: a proxy that buffers the body never gets an answer.
    const early: Server = createServer((req, res) => req.once('data', () => res.end('got the first chunk')));
    early.listen(0, '127.0.0.1');
    await once(early, 'listening');
    const side = await startSidecar({ UPSTREAM_URL: `http://127.0.0.1:${(early.address() as AddressInfo).port}` });
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const req = httpRequest(`${side.url}/v1/files`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
          let body = '';
          res.on('data', (d) => (body += d));
          res.on('end', () => resolve(body));
        });
        req.on('error', reject);
        req.write('first chunk');
        // The rest of the body is only sent after the answer: the request stays open until then.
        req.on('response', () => req.end('last chunk'));
      });
      expect(answer).toBe('got the first chunk');
    } finally {
      await side.close();
      early.closeAllConnections();
      early.close();
    }
  });

  it('aborts the upstream stream when the caller goes away', async () => {
    const cancelled = once(fake, 'stream-cancelled');
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(
        `${sidecar.url}/v1/responses`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'x-fake': 'events=200,interval=50' } },
        (res) => res.once('data', () => {
          req.destroy();
          resolve();
        }),
      );
      req.on('error', () => undefined);
      req.on('close', () => resolve());
      req.end(JSON.stringify({ stream: true }));
      setTimeout(() => reject(new Error('no first event')), 5000).unref();
    });
    await cancelled;
    const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
    expect(metrics).toMatch(/api_proxy_requests_total\{method="POST",route="\/v1\/responses",status="499"\} 1/);
  });
});

describe('local errors', () => {
  it.each([
    ['absolute-form', 'GET http://evil.test/v1/models HTTP/1.1\r\nHost: evil.test\r\n\r\n'],
    ['authority-form CONNECT', 'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n'],
    ['scheme-relative', 'GET //evil.test/v1/models HTTP/1.1\r\nHost: sidecar\r\n\r\n'],
    ['encoded traversal', 'GET /v1/..%2f..%2fadmin HTTP/1.1\r\nHost: sidecar\r\n\r\n'],
  ])('%s gets 400 bad_request_target and nothing goes upstream', async (_name, text) => {
    const answer = await rawExchange(sidecar.port, text);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toContain('"code":"bad_request_target"');
    expect(answer).toContain('"type":"proxy_error"');
    expect(answer).toMatch(/x-request-id: \S+/i);
    expect(fake.received).toHaveLength(0);
  });

  it('413 body_too_large for a declared size over the limit, before anything goes upstream', async () => {
    const res = await request(sidecar.url).post('/v1/files').set('content-type', 'application/octet-stream').send(Buffer.alloc(5 * 1024 * 1024));
    expect(res.status).toBe(413);
    expect(res.body).toEqual({ error: { message: expect.any(String), type: 'proxy_error', code: 'body_too_large' } });
    expect(fake.received).toHaveLength(0);
  });

  it('413 body_too_large for a chunked body, counted while streaming', async () => {
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${sidecar.url}/v1/files`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      const block = Buffer.alloc(256 * 1024);
      let sent = 0;
      const pump = (): void => {
        while (sent < 6 * 1024 * 1024) {
          sent += block.length;
          if (!req.write(block)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.body).error.code).toBe('body_too_large');
    // The upstream never saw a complete request.
    expect(fake.received).toHaveLength(0);
  });

  it('502 upstream_unreachable when nothing listens upstream', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.close();
    const side = await startSidecar({ UPSTREAM_URL: `http://127.0.0.1:${port}` });
    try {
      const res = await request(side.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error).toMatchObject({ type: 'proxy_error', code: 'upstream_unreachable' });
    } finally {
      await side.close();
    }
  });

  it('504 upstream_timeout when the upstream stays silent past the idle timeout', async () => {
    const side = await startSidecar({ UPSTREAM_URL: fake.url, UPSTREAM_IDLE_TIMEOUT_MS: '300' });
    try {
      const res = await request(side.url).get('/v1/models').set('x-fake', 'delay=3000');
      expect(res.status).toBe(504);
      expect(res.body.error.code).toBe('upstream_timeout');
    } finally {
      await side.close();
    }
  });

  it('503 draining once shutdown has begun, and readiness says so', async () => {
    const side = await startSidecar({ UPSTREAM_URL: fake.url });
    try {
      await side.app.drain();
      const res = await request(side.url).post('/v1/responses').send({});
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('draining');
      const ready = await request(side.url).get('/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body).toEqual({ status: 'not_ready', reasons: ['draining'] });
      expect((await request(side.url).get('/healthz')).status).toBe(200);
      expect(fake.received).toHaveLength(0);
    } finally {
      await side.close();
    }
  });
});

describe('PROXY_AUTH_TOKEN', () => {
  const TOKEN = 'sidecar-token-123';
  let side: Sidecar;
  beforeAll(async () => {
    side = await startSidecar({ UPSTREAM_URL: fake.url, PROXY_AUTH_TOKEN: TOKEN });
  });
  afterAll(() => side.close());

  it.each([
    [{}],
    [{ authorization: 'Bearer wrong-token-1234' }],
    [{ authorization: `Basic ${TOKEN}` }],
    [{ 'x-api-key': 'nope' }],
    [{ 'x-goog-api-key': 'nope' }],
    [{ cookie: `other=1; ${TOKEN}` }],
    [{ 'proxy-authorization': `Basic ${TOKEN}` }],
    [{ 'x-api-key': `${TOKEN}x` }],
  ])('401 proxy_auth_required for %j, nothing upstream', async (headers) => {
    const res = await request(side.url).post('/v1/responses').set(headers).send({});
    expect(res.status).toBe(401);
    expect(res.body.error).toMatchObject({ type: 'proxy_error', code: 'proxy_auth_required' });
    expect(fake.received).toHaveLength(0);
  });

  it.each([
    [{ authorization: `Bearer ${TOKEN}` }],
    [{ 'api-key': TOKEN }],
    [{ 'x-api-key': TOKEN }],
    [{ 'x-goog-api-key': TOKEN }],
    [{ 'proxy-authorization': `Bearer ${TOKEN}` }],
    [{ cookie: `session=abc; token=${TOKEN}` }],
    // Presented in any of the credential headers: another header's wrong value does not hide it.
    [{ authorization: 'Bearer placeholder-of-the-agent', 'x-api-key': TOKEN }],
  ])(
    'forwards with %j, sending the real key instead of the token',
    async (headers) => {
      const res = await request(side.url).post('/v1/responses').set(headers).send({});
      expect(res.status).toBe(200);
      const got = fake.received[0]!;
      expect(got.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
      expect(JSON.stringify(got.headers)).not.toContain(TOKEN);
    },
  );
});

describe('upstream errors', () => {
  it.each([['plain', 'status=401'], ['gzip', 'status=401,gzip']])(
    'a %s 401 keeps status and shape, with the echoed key redacted, and is counted and logged',
    async (_kind, behaviour) => {
      const res = await request(sidecar.url).post('/v1/responses').set('x-fake', behaviour).set('accept-encoding', 'gzip').send({});
      expect(res.status).toBe(401);
      expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_api_key' });
      expect(res.body.error.message).toContain('Incorrect API key provided: [redacted].');
      expect(res.text).not.toContain(TEST_KEY.slice(-4));
      expect(res.text).not.toContain(TEST_KEY.slice(0, 12));
      expect(sidecar.logs.some((l) => l.includes('"level":40') && l.includes('rejected the configured key'))).toBe(true);
      const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
      expect(metrics).toMatch(/api_proxy_upstream_auth_failures_total\{status="401"\} [1-9]/);
    },
  );

  it('a 500 passes through as the upstream sent it', async () => {
    const res = await request(sidecar.url).post('/v1/chat/completions').set('x-fake', 'status=500').send({});
    expect(res.status).toBe(500);
    expect(res.body.error.type).toBe('server_error');
  });
});

describe('reserved paths', () => {
  it('healthz, readyz and health answer without going upstream', async () => {
    const healthz = await request(sidecar.url).get('/healthz').set('x-request-id', 'probe-1');
    expect(healthz.body).toEqual({ status: 'ok' });
    expect(healthz.headers['x-request-id']).toBe('probe-1');
    expect((await request(sidecar.url).get('/metrics')).headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect((await request(sidecar.url).get('/readyz')).body).toEqual({ status: 'ready' });
    const health = (await request(sidecar.url).get('/health')).body;
    expect(health).toMatchObject({
      status: 'ok',
      version: expect.any(String),
      key: { source: 'env', fingerprint: createHash('sha256').update(TEST_KEY).digest('hex').slice(0, 8) },
      upstream: { url: fake.url, basePath: '/v1' },
      egressProxy: { configured: false },
    });
    expect(fake.received).toHaveLength(0);
  });

  it('metrics use one prefix, base units and _total on counters', async () => {
    await request(sidecar.url).get('/v1/models');
    const text = (await request(sidecar.url).get('/metrics')).text;
    for (const name of [
      'api_proxy_requests_total',
      'api_proxy_request_duration_seconds_bucket',
      'api_proxy_upstream_first_byte_seconds_bucket',
      'api_proxy_requests_in_flight',
      'api_proxy_upstream_errors_total',
      'api_proxy_websocket_connections_active',
      'api_proxy_request_body_bytes_total',
      'api_proxy_response_body_bytes_total',
      'api_proxy_process_resident_memory_bytes',
    ]) {
      expect(text, name).toContain(name);
    }
    const names = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' '));
    for (const [, , name, type] of names) {
      expect(name!.startsWith('api_proxy_'), name).toBe(true);
      if (type === 'counter') expect(name!.endsWith('_total'), name).toBe(true);
    }
    expect(text).toMatch(/le="600"/);
  });
});
