import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import { rawExchange } from '../support/net.js';
import { startSidecar, TEST_KEY, type Sidecar } from '../support/sidecar.js';

/** The agent is untrusted code: it must not turn the sidecar into an open proxy or smuggle requests. */
let fake: FakeUpstream;
let sidecar: Sidecar;
beforeAll(async () => {
  fake = await startFakeUpstream();
  sidecar = await startSidecar({ UPSTREAM_URL: fake.url, UPSTREAM_IDLE_TIMEOUT_MS: '1000' });
});
afterAll(async () => {
  await sidecar.close();
  await fake.close();
});
afterEach(() => {
  fake.received.length = 0;
});

const status = (answer: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);
const req = (lines: string[], body = ''): string => `${lines.join('\r\n')}\r\n\r\n${body}`;

describe('never an open proxy', () => {
  it.each([
    ['absolute-form', 'GET http://evil.test/v1/models HTTP/1.1', 'Host: evil.test'],
    ['absolute-form to the upstream host', `GET http://127.0.0.1:1/v1/models HTTP/1.1`, 'Host: 127.0.0.1:1'],
    ['authority-form CONNECT', 'CONNECT evil.test:443 HTTP/1.1', 'Host: evil.test:443'],
    ['asterisk-form', 'OPTIONS * HTTP/1.1', 'Host: sidecar'],
    ['scheme-relative', 'GET //evil.test/v1/models HTTP/1.1', 'Host: sidecar'],
    ['raw traversal', 'GET /v1/../../admin HTTP/1.1', 'Host: sidecar'],
    ['encoded traversal', 'GET /..%2f..%2fadmin HTTP/1.1', 'Host: sidecar'],
    ['encoded dots', 'GET /v1/%2e%2e/%2E%2E/admin HTTP/1.1', 'Host: sidecar'],
    ['backslash', 'GET /v1\\..\\admin HTTP/1.1', 'Host: sidecar'],
  ])('%s: 400 and nothing upstream', async (_name, line, host) => {
    const answer = await rawExchange(sidecar.port, req([line, host]));
    expect(status(answer)).toBe(400);
    expect(fake.received).toHaveLength(0);
  });

  it.each([
    ['a spoofed Host', ['Host: evil.test']],
    ['X-Forwarded-Host', ['Host: sidecar', 'X-Forwarded-Host: evil.test', 'X-Forwarded-Proto: http']],
    ['Forwarded', ['Host: sidecar', 'Forwarded: host=evil.test;proto=http']],
  ])('%s does not move the destination', async (_name, headers) => {
    const answer = await rawExchange(sidecar.port, req(['GET /v1/models HTTP/1.1', ...headers, 'Connection: close']));
    expect(status(answer)).toBe(200);
    expect(fake.received).toHaveLength(1);
    const got = fake.received[0]!;
    expect(got.headers.host).toBe(new URL(fake.url).host);
    expect(got.headers['x-forwarded-host']).toBeUndefined();
    expect(got.headers.forwarded).toBeUndefined();
  });

  it('an @ in the path stays a path on the upstream', async () => {
    const answer = await rawExchange(sidecar.port, req(['GET /v1/user@evil.test/x HTTP/1.1', 'Host: sidecar', 'Connection: close']));
    expect(status(answer)).toBe(200);
    expect(fake.received.map((r) => r.path)).toEqual(['/v1/user@evil.test/x']);
  });
});

describe('request smuggling', () => {
  const smuggled = req(['GET /v1/smuggled HTTP/1.1', 'Host: sidecar']);

  it.each([
    ['Content-Length with Transfer-Encoding', ['POST /v1/responses HTTP/1.1', 'Host: a', `Content-Length: 5`, 'Transfer-Encoding: chunked'], `0\r\n\r\n${smuggled}`],
    ['two different Content-Lengths', ['POST /v1/responses HTTP/1.1', 'Host: a', 'Content-Length: 5', 'Content-Length: 40'], `hello${smuggled}`],
    ['a bad Content-Length', ['POST /v1/responses HTTP/1.1', 'Host: a', 'Content-Length: +5'], `hello${smuggled}`],
    ['obs-fold', ['POST /v1/responses HTTP/1.1', 'Host: a', 'X-Folded: one', ' two', 'Content-Length: 5'], `hello${smuggled}`],
    ['a bad chunked encoding', ['POST /v1/responses HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked, identity'], `5\r\nhello\r\n0\r\n\r\n${smuggled}`],
  ])('%s: 400, nothing reaches the upstream', async (_name, lines, body) => {
    const answer = await rawExchange(sidecar.port, req(lines, body));
    expect(status(answer)).toBe(400);
    expect(fake.received).toHaveLength(0);
  });

  it('a request inside a chunked body stays body', async () => {
    const inner = req(['GET /v1/smuggled HTTP/1.1', 'Host: a']);
    const chunk = `${Buffer.byteLength(inner).toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
    const answer = await rawExchange(sidecar.port, req(['POST /v1/files HTTP/1.1', 'Host: a', 'Transfer-Encoding: chunked', 'Connection: close'], chunk));
    expect(status(answer)).toBe(200);
    expect(fake.received).toHaveLength(1);
    expect(fake.received[0]!.body.toString()).toBe(inner);
  });

  it('pipelined requests arrive as the same requests, each with only the real key', async () => {
    const two =
      req(['POST /v1/responses HTTP/1.1', 'Host: a', 'Authorization: Bearer agent', 'Content-Length: 17'], '{"input":"hello"}') +
      req(['GET /models HTTP/1.1', 'Host: a', 'Connection: close']);
    const answer = await rawExchange(sidecar.port, two);
    expect(answer.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
    // The POST's body is read before it goes, so the GET may reach the upstream first.
    expect(fake.received.map((r) => [r.method, r.path, r.body.toString()]).sort((a, b) => b[0]!.localeCompare(a[0]!))).toEqual([
      ['POST', '/v1/responses', '{"input":"hello"}'],
      ['GET', '/v1/models', ''],
    ]);
    for (const r of fake.received) expect(r.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
  });
});

describe('oversized and slow callers', () => {
  it('431 for oversized headers, nothing upstream', async () => {
    const answer = await rawExchange(sidecar.port, req(['GET /v1/models HTTP/1.1', 'Host: a', `X-Big: ${'a'.repeat(20_000)}`]));
    expect(status(answer)).toBe(431);
    expect(fake.received).toHaveLength(0);
  });

  it('431 for too many headers, nothing upstream', async () => {
    const many = Array.from({ length: 3000 }, (_, i) => `X-H${i}: ${i}`);
    const answer = await rawExchange(sidecar.port, req(['GET /v1/models HTTP/1.1', 'Host: a', ...many]));
    expect(status(answer)).toBe(431);
    expect(fake.received).toHaveLength(0);
  });

  it('a body that stops arriving ends with upstream_timeout after the idle timeout', async () => {
    const answer = await rawExchange(sidecar.port, req(['POST /v1/files HTTP/1.1', 'Host: a', 'Content-Length: 100'], 'only ten b'));
    expect(status(answer)).toBe(504);
    expect(answer).toContain('"code":"upstream_timeout"');
    // The upstream never got a complete request.
    expect(fake.received).toHaveLength(0);
  });

  it('slowloris: connections trickling headers do not keep a well-behaved caller waiting', async () => {
    const trickles = Array.from({ length: 100 }, () => {
      const s = connect(sidecar.port, '127.0.0.1');
      s.on('error', () => undefined);
      let i = 0;
      const text = 'GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Slow: ';
      const timer = setInterval(() => s.write(text[i++ % text.length]!), 50);
      return () => {
        clearInterval(timer);
        s.destroy();
      };
    });
    try {
      for (let i = 0; i < 20; i++) {
        const t = performance.now();
        const res = await fetch(`${sidecar.url}/v1/models`);
        expect(res.status).toBe(200);
        await res.text();
        // A bound on being served, not a speed measure: a starved caller would wait seconds.
        expect(performance.now() - t).toBeLessThan(1000);
      }
    } finally {
      for (const stop of trickles) stop();
    }
  });
});

describe('a held body (a Responses call is read whole and checked before it goes)', () => {
  let held: Sidecar;
  beforeAll(async () => {
    held = await startSidecar({ UPSTREAM_URL: fake.url, UPSTREAM_IDLE_TIMEOUT_MS: '1000', MAX_BODY_BYTES: '4096' });
  });
  afterAll(() => held.close());
  const head = ['POST /v1/responses HTTP/1.1', 'Host: a', 'Content-Type: application/json'];
  const inFlight = async (): Promise<number> => (await held.app.metrics.inFlight.get()).values[0]?.value ?? -1;
  const spent = (): { usedRequests: number; usedTokens: number } => {
    const { usedRequests, usedTokens } = held.app.ledger.snapshot().budget;
    return { usedRequests, usedTokens };
  };
  const answers = async (status: number): Promise<number> => {
    const { values } = await held.app.metrics.requests.get();
    return values.find((v) => v.labels.route === '/v1/responses' && v.labels.status === status)?.value ?? 0;
  };

  it('that stops arriving: 504 upstream_timeout, nothing upstream, nothing counted or reserved', async () => {
    const before = spent();
    const answer = await rawExchange(held.port, req([...head, 'Content-Length: 100'], '{"model":"gp'));
    expect(status(answer)).toBe(504);
    expect(answer).toContain('"code":"upstream_timeout"');
    expect(fake.received).toHaveLength(0);
    expect(spent()).toEqual(before);
    expect(await inFlight()).toBe(0);
  });

  it('chunked past MAX_BODY_BYTES: 413 body_too_large, nothing upstream, nothing counted', async () => {
    const before = spent();
    const chunk = `{"model":"gpt-5.5","input":"${'x'.repeat(2000)}`;
    const body = Array.from({ length: 3 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('');
    const answer = await rawExchange(held.port, req([...head, 'Transfer-Encoding: chunked'], body));
    expect(status(answer)).toBe(413);
    expect(answer).toContain('"code":"body_too_large"');
    expect(answer.toLowerCase()).toContain('connection: close');
    expect(fake.received).toHaveLength(0);
    expect(spent()).toEqual(before);
    expect(await until(inFlight, (n) => n === 0)).toBe(0);
    expect(await answers(413)).toBe(1);
  });

  it('the caller closes mid-body: counted as 499, nothing upstream, nothing reserved, in flight back to 0', async () => {
    const before = spent();
    const closedBefore = await answers(499);
    const socket = connect(held.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write(req([...head, 'Content-Length: 1000'], '{"model":"gpt-5.5","input":"'));
    await until(inFlight, (n) => n === 1);
    socket.destroy();
    expect(await until(inFlight, (n) => n === 0)).toBe(0);
    expect(await until(() => answers(499), (n) => n === closedBefore + 1)).toBe(closedBefore + 1);
    expect(fake.received).toHaveLength(0);
    expect(spent()).toEqual(before);
  });
});

describe('credentials in every place a caller could put them', () => {
  it('none reaches the upstream; only the real key does', async () => {
    const answer = await rawExchange(
      sidecar.port,
      req([
        'GET /v1/models HTTP/1.1',
        'Host: a',
        'Authorization: Bearer agent-1',
        'authorization: Bearer agent-2',
        'AUTHORIZATION: Basic YWdlbnQ6Mw==',
        'Api-Key: agent-4',
        'api-key: agent-5',
        'X-API-KEY: agent-6',
        'Proxy-Authorization: Basic YWdlbnQ6Nw==',
        'Cookie: a=agent-8',
        'cookie: b=agent-9',
        'Connection: close',
      ]),
    );
    expect(status(answer)).toBe(200);
    const got = fake.received[0]!;
    expect(got.rawHeaders.join('\n')).not.toMatch(/agent|YWdlbnQ/);
    const auth = got.rawHeaders.filter((_, i) => i % 2 === 0 && got.rawHeaders[i]!.toLowerCase() === 'authorization');
    expect(auth).toHaveLength(1);
    expect(got.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
  });
});
