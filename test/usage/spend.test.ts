import { mkdtempSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import OpenAI from 'openai';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { FakeUpstream } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import { TEST_KEY, type Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';
import { exchangeEvents, openWebSocket } from '../support/ws.js';

/**
 * What the agent spends, counted and bounded, end to end: sidecar → Squid → the
 * TLS fake upstream, which reports the usage each request asks for (x-fake).
 */
const rig = squidRig();
const { sidecarWith } = rig;
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
const usageOf = async (s: Sidecar) => (await request(s.url).get('/usage')).body;
const usage = (n: { input: number; output: number; cached?: number; reasoning?: number }): string =>
  `input=${n.input},output=${n.output},cached=${n.cached ?? 0},reasoning=${n.reasoning ?? 0}`;
const upstreamPosts = (): number => fake.received.filter((r) => r.method === 'POST' || r.websocket).length;

describe('counting, on every transport', () => {
  let s: Sidecar;
  let log: string;
  beforeAll(async () => {
    log = join(mkdtempSync(join(tmpdir(), 'api-proxy-usage-')), 'usage.jsonl');
    s = await sidecarWith({ USAGE_LOG_FILE: log });
  });

  it('counts JSON, SSE and WebSocket responses per model and type, exactly, and logs one line each without content', async () => {
    const post = (path: string, body: object, u: Parameters<typeof usage>[0]) =>
      request(s.url).post(path).set('x-fake', usage(u)).send(body).expect(200);
    await post('/v1/responses', { model: 'gpt-5.5', input: 'secret prompt' }, { input: 100, output: 20, cached: 40, reasoning: 5 });
    await post('/v1/responses', { model: 'gpt-5.5', input: 'hi', stream: true }, { input: 10, output: 3 });
    await post('/v1/chat/completions', { model: 'gpt-4o', messages: [] }, { input: 7, output: 2 });
    await post('/v1/chat/completions', { model: 'gpt-4o', messages: [], stream: true, stream_options: { include_usage: true } }, { input: 1, output: 1 });
    await post('/v1/embeddings', { model: 'text-embedding-3-small', input: 'x' }, { input: 9, output: 0 });
    // A chat stream without include_usage reports nothing: unknown, never guessed, and charged its reservation.
    const unreported = { model: 'gpt-4o', messages: [], stream: true };
    await post('/v1/chat/completions', unreported, { input: 1, output: 1 });
    const reservation = Math.ceil(JSON.stringify(unreported).length / 4) + 16_384;
    // Not model calls: not counted as responses.
    await request(s.url).get('/v1/models').expect(200);
    await request(s.url).post('/v1/files').send({}).expect(200);

    const { ws } = await openWebSocket(`${s.url.replace('http', 'ws')}/v1/responses`, { 'x-fake': usage({ input: 50, output: 5 }) });
    await exchangeEvents(ws!, { type: 'response.create', generate: false, model: 'gpt-5.5' }, 'response.completed'); // prewarm: its tokens count, its request does not
    await exchangeEvents(ws!, { type: 'response.create', model: 'gpt-5.5', input: [] }, 'response.completed');
    ws!.close();

    const u = await until(() => usageOf(s), (b) => b.models['gpt-5.5']?.responses === 4);
    expect(u.tokens).toEqual({ input: 227, cached_input: 40, cache_write: 0, output: 36, reasoning: 5, total: 263 });
    expect(u.models['gpt-5.5']).toEqual({ provider: 'openai', responses: 4, tokens: { input: 210, cached_input: 40, cache_write: 0, output: 33, reasoning: 5, total: 243 } });
    // The stream without usage still named its model: counted under it, as unknown.
    expect(u.models['gpt-4o']).toEqual({ provider: 'openai', responses: 3, tokens: { input: 8, cached_input: 0, cache_write: 0, output: 3, reasoning: 0, total: 11 } });
    expect(u.models['text-embedding-3-small'].tokens.input).toBe(9);
    expect(u.unknown).toBe(1);
    // MAX_REQUESTS counts: 7 POSTs, the prewarm not, the turn yes.
    expect(u.requests).toBe(8);
    // The budget's count holds the unreported stream's charge; tokens and models only what upstreams reported.
    expect(u.budget).toEqual({ maxTokens: null, maxRequests: null, usedTokens: 263 + reservation, usedRequests: 8, exhausted: false });
    expect(new Date(u.since).getTime()).toBeLessThanOrEqual(Date.now());

    const metrics = (await request(s.url).get('/metrics')).text;
    expect(metrics).toContain('api_proxy_tokens_total{provider="openai",model="gpt-5.5",type="input"} 210');
    expect(metrics).toContain('api_proxy_tokens_total{provider="openai",model="gpt-5.5",type="cached_input"} 40');
    expect(metrics).toContain('api_proxy_tokens_total{provider="openai",model="gpt-4o",type="output"} 3');
    expect(metrics).toMatch(/^api_proxy_usage_unknown_total 1$/m);

    await s.app.ledger.close();
    const lines = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(8);
    expect(lines[0]).toMatchObject({ provider: 'openai', transport: 'http', model: 'gpt-5.5', input: 100, cached_input: 40, output: 20, reasoning: 5, total: 120, status: 'completed' });
    expect(lines.map((l) => l.transport)).toEqual(['http', 'sse', 'http', 'sse', 'http', 'sse', 'websocket', 'websocket']);
    expect(lines[5]).toMatchObject({ model: 'gpt-4o', status: 'unknown', input: null, total: null });
    for (const l of lines) expect(Object.keys(l).sort()).toEqual(['cache_write', 'cached_input', 'input', 'model', 'output', 'provider', 'reasoning', 'reqId', 'status', 'time', 'total', 'transport']);
    expect(readFileSync(log, 'utf8')).not.toContain('secret prompt');
    expect(readFileSync(log, 'utf8')).not.toContain(TEST_KEY.slice(8, 20));
  });

  it('bounds the model label: 50 names, then other', async () => {
    const t = await sidecarWith();
    for (let i = 0; i < 53; i++) await request(t.url).post('/v1/embeddings').send({ model: `invented-${i}`, input: 'x' }).expect(200);
    const u = await until(() => usageOf(t), (b) => Object.values(b.models as Record<string, { responses: number }>).reduce((a, m) => a + m.responses, 0) === 53);
    expect(Object.keys(u.models)).toHaveLength(51);
    expect(u.models.other.responses).toBe(3);
    expect((await request(t.url).get('/metrics')).text.match(/api_proxy_tokens_total\{provider="openai",model="[^"]+",type="input"\}/g)).toHaveLength(51);
  });

  it('keeps what the agent names inert: a name with markup, or over 64 characters, is counted as other in /usage, the metrics and the usage log', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'api-proxy-names-'));
    const t = await sidecarWith({ USAGE_LOG_FILE: join(dir, 'usage.jsonl') });
    for (const model of ['[x](http://evil.test)', '<img src=x>', 'a|b', `gpt-${'5'.repeat(61)}`, 'gpt 5']) {
      await request(t.url).post('/v1/embeddings').send({ model, input: 'x' }).expect(200);
    }
    await request(t.url).post('/v1/embeddings').send({ model: `gpt-${'5'.repeat(60)}`, input: 'x' }).expect(200); // 64: kept
    const u = await until(() => usageOf(t), (b) => b.models.other?.responses === 5 && b.models[`gpt-${'5'.repeat(60)}`]?.responses === 1);
    expect(Object.keys(u.models).sort()).toEqual([`gpt-${'5'.repeat(60)}`, 'other']);
    expect((await request(t.url).get('/metrics')).text).not.toMatch(/evil|img|a\|b|gpt 5/);
    // The usage log is written as the responses are counted; wait for its six lines to reach the file.
    const logLines = (): string[] => readFileSync(join(dir, 'usage.jsonl'), 'utf8').split('\n').filter(Boolean);
    const logged = (await until(logLines, (lines) => lines.length === 6)).map((l) => JSON.parse(l).model);
    expect(logged).toEqual(['other', 'other', 'other', 'other', 'other', `gpt-${'5'.repeat(60)}`]);
  });

  it('a stream cut short is counted as unknown', async () => {
    const t = await sidecarWith();
    await request(t.url).post('/v1/responses').set('x-fake', 'reset=2').send({ model: 'gpt-5.5', stream: true }).catch(() => undefined);
    const u = await until(() => usageOf(t), (b) => b.unknown === 1);
    expect(u.tokens.total).toBe(0);
  });
});

describe('the budget, on every transport', () => {
  const budgetError = { message: expect.stringContaining('budget'), type: 'insufficient_quota', code: 'budget_exceeded' };

  it('MAX_REQUESTS: the next request gets 429 insufficient_quota with x-should-retry: false, and nothing goes upstream', async () => {
    const s = await sidecarWith({ MAX_REQUESTS: '2', ALLOWED_ROUTES: 'responses,models,files' });
    await request(s.url).post('/v1/responses').send({ model: 'gpt-5.5' }).expect(200);
    await request(s.url).get('/v1/models').expect(200); // GET is not counted
    await request(s.url).post('/v1/files').send({}).expect(200);
    const before = fake.received.length;
    const res = await request(s.url).post('/v1/responses').send({ model: 'gpt-5.5' });
    expect(res.status).toBe(429);
    expect(res.headers['x-should-retry']).toBe('false');
    expect(res.body.error).toEqual(budgetError);
    // Once spent, nothing more at all: a GET neither.
    expect((await request(s.url).get('/v1/models')).status).toBe(429);
    expect(fake.received.length).toBe(before);
    expect((await usageOf(s)).budget).toMatchObject({ maxRequests: 2, usedRequests: 2, exhausted: true });
    expect((await request(s.url).get('/health')).body.budget).toMatchObject({ exhausted: true });
  });

  it('MAX_TOKENS: the request that spends it finishes; the next is refused, and the openai SDK (maxRetries 2) sends it once', async () => {
    const s = await sidecarWith({ MAX_TOKENS: '100' });
    await request(s.url).post('/v1/responses').set('x-fake', usage({ input: 90, output: 30 })).send({ model: 'gpt-5.5' }).expect(200);
    await until(() => usageOf(s), (b) => b.budget.exhausted);
    const before = upstreamPosts();
    const sdk = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-agent-has-no-key', maxRetries: 2 });
    const err = await sdk.responses.create({ model: 'gpt-5.5', input: 'hi' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect((err as InstanceType<typeof OpenAI.RateLimitError>).code).toBe('budget_exceeded');
    expect((err as InstanceType<typeof OpenAI.RateLimitError>).type).toBe('insufficient_quota');
    expect(upstreamPosts()).toBe(before);
    const lines = s.logs.filter((l) => l.includes('"status":429'));
    expect(lines).toHaveLength(1); // one attempt reached the sidecar
  });

  it('a WebSocket upgrade once spent: 429, head and body in one write', async () => {
    const s = await sidecarWith({ MAX_REQUESTS: '1' });
    await request(s.url).post('/v1/responses').send({ model: 'gpt-5.5' }).expect(200);
    const raw = await new Promise<string>((resolve, reject) => {
      const sock = connect(s.port, '127.0.0.1', () =>
        sock.write('GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'),
      );
      // The first read: it must hold the whole refusal.
      sock.once('data', (d) => {
        resolve(d.toString());
        sock.destroy();
      });
      sock.on('error', reject);
    });
    expect(raw).toMatch(/^HTTP\/1\.1 429 /);
    expect(raw).toMatch(/x-should-retry: false/i);
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)).error).toEqual(budgetError);
  });

  const wsUrl = (s: Sidecar): string => `${s.url.replace('http', 'ws')}/v1/responses`;
  const nextMessage = (ws: WebSocket): Promise<Record<string, unknown>> => new Promise((r) => ws.once('message', (d: Buffer) => r(JSON.parse(d.toString()))));
  const closed = (ws: WebSocket): Promise<number> => new Promise((r) => ws.once('close', (code: number) => r(code)));

  it('on an open WebSocket: the refused response.create is not sent; the caller gets the error message; compressed with context takeover, then 1008', async () => {
    const s = await sidecarWith({ MAX_REQUESTS: '1' });
    const { ws } = await openWebSocket(wsUrl(s), {});
    await exchangeEvents(ws!, { type: 'response.create', generate: false, model: 'gpt-5.5' }, 'response.completed');
    await exchangeEvents(ws!, { type: 'response.create', model: 'gpt-5.5' }, 'response.completed');
    const sent = fake.received.at(-1)!.messages.length;
    const code = closed(ws!);
    const refusal = nextMessage(ws!);
    ws!.send(JSON.stringify({ type: 'response.create', model: 'gpt-5.5' })); // ws compresses with context takeover by default
    expect(await refusal).toEqual({ type: 'error', status: 429, error: budgetError });
    expect(await code).toBe(1008);
    expect(fake.received.at(-1)!.messages.length).toBe(sent);
  });

  it('a caller message too large to check is not sent, nor anything after it: 1009', async () => {
    const s = await sidecarWith({ MAX_REQUESTS: '5', MAX_BODY_BYTES: '2000' });
    const ws = new WebSocket(wsUrl(s), { perMessageDeflate: false });
    await new Promise((r) => ws.once('open', r));
    await exchangeEvents(ws, { type: 'response.create', model: 'gpt-5.5' }, 'response.completed');
    const sent = fake.received.at(-1)!.messages.length;
    const code = closed(ws);
    ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5.5', input: 'x'.repeat(3000) }));
    ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5.5' }));
    expect(await code).toBe(1009);
    expect(fake.received.at(-1)!.messages.length).toBe(sent);
  });

  it('uncompressed (or without context takeover), the socket stays open after a refusal', async () => {
    const s = await sidecarWith({ MAX_REQUESTS: '1' });
    const ws = new WebSocket(wsUrl(s), { perMessageDeflate: false });
    await new Promise((r) => ws.once('open', r));
    await exchangeEvents(ws, { type: 'response.create', model: 'gpt-5.5' }, 'response.completed');
    const refusal = nextMessage(ws);
    ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5.5' }));
    expect((await refusal).status).toBe(429);
    // Still open: a message that is not a response.create goes through and is answered.
    const echo = nextMessage(ws);
    ws.send(JSON.stringify({ type: 'ping-me' }));
    expect((await echo).type).toBe('echo');
    ws.close();
  });
});

describe('the model allowlist', () => {
  let s: Sidecar;
  beforeAll(async () => {
    s = await sidecarWith({ ALLOWED_MODELS: 'gpt-5*,o4-mini', ALLOWED_ROUTES: '*' });
  });

  it('passes listed models and globs, refuses others with 403 model_not_allowed, and sends nothing upstream', async () => {
    await request(s.url).post('/v1/responses').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
    await request(s.url).post('/v1/chat/completions').send({ model: 'o4-mini', messages: [] }).expect(200);
    const before = fake.received.length;
    for (const model of ['gpt-4o', 'GPT-5.5', 'o4-mini-high', 42]) {
      const res = await request(s.url).post('/v1/responses').send({ model, input: 'hi' });
      expect(res.status, String(model)).toBe(403);
      expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'model_not_allowed' });
    }
    // JSON under another declared type is read all the same.
    const plain = await request(s.url).post('/v1/responses').set('content-type', 'text/plain').send(JSON.stringify({ model: 'gpt-4o' }));
    expect(plain.status).toBe(403);
    expect(fake.received.length).toBe(before);
  });

  it('passes bodies without a model and non-JSON bodies unchanged; the held body reaches the upstream byte for byte', async () => {
    await request(s.url).post('/v1/files').set('content-type', 'multipart/form-data; boundary=x').send('--x--\r\n').expect(200);
    const body = JSON.stringify({ input: 'no model here', n: 'é' });
    await request(s.url).post('/v1/responses/resp_1/cancel').set('content-type', 'application/json').send(body).expect(200);
    expect(fake.received.at(-1)!.body.toString()).toBe(body);
  });

  it('decodes a compressed body to read its model, and refuses one it cannot decode', async () => {
    // fetch sends the bytes as they are (supertest would re-encode a Buffer as JSON).
    const post = (path: string, body: Buffer) =>
      fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: new Uint8Array(body) });
    const before = fake.received.length;
    const refused = await post('/v1/responses', gzipSync(JSON.stringify({ model: 'gpt-4o' })));
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toContain('"gpt-4o"');
    const bad = await post('/v1/responses', Buffer.from('not gzip'));
    expect(bad.status).toBe(403);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('model_not_allowed');
    expect(fake.received.length).toBe(before);
    const ok = gzipSync(JSON.stringify({ model: 'gpt-5.5' }));
    await post('/v1/embeddings', ok); // the fake itself reads no gzip: what matters is what it received
    expect(fake.received.length).toBe(before + 1);
    expect(fake.received.at(-1)!.body.equals(ok)).toBe(true); // sent on as it came, still compressed
  });

  it('checks each response.create on a WebSocket', async () => {
    const { ws } = await openWebSocket(`${s.url.replace('http', 'ws')}/v1/responses`, {});
    await exchangeEvents(ws!, { type: 'response.create', model: 'gpt-5.5' }, 'response.completed');
    const reply = new Promise<Record<string, unknown>>((r) => ws!.once('message', (d: Buffer) => r(JSON.parse(d.toString()))));
    ws!.send(JSON.stringify({ type: 'response.create', model: 'gpt-4o' }));
    expect(await reply).toMatchObject({ type: 'error', status: 403, error: { code: 'model_not_allowed', type: 'invalid_request_error' } });
    ws!.terminate();
  });
});
