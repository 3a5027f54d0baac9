import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Anthropic from '@anthropic-ai/sdk';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream, Received } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import { TEST_ANTHROPIC_KEY, TEST_KEY, type Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';

/**
 * Anthropic through the same core: sidecar (both providers) → Squid → the TLS
 * fake at api.anthropic.test, with the official SDK as the client.
 */
const rig = squidRig();
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
const anthropicUrl = (s: Sidecar): string => s.urls.anthropic!;
const usageOf = async (s: Sidecar) => (await request(s.url).get('/usage')).body;
const cacheUsage = 'input=10,output=4,cache_read=1000,cache_write=200';
const client = (s: Sidecar, headers: Record<string, string> = {}, maxRetries = 2): Anthropic =>
  new Anthropic({ apiKey: 'sk-ant-placeholder-of-the-agent', baseURL: anthropicUrl(s), maxRetries, defaultHeaders: headers });
const messagesTo = (): Received[] => fake.received.filter((r) => r.path.startsWith('/v1/messages'));

describe('the Anthropic port', () => {
  let s: Sidecar;
  let log: string;
  beforeAll(async () => {
    log = join(mkdtempSync(join(tmpdir(), 'api-proxy-anthropic-')), 'usage.jsonl');
    s = await sidecarWithLog(log);
  });
  const sidecarWithLog = (file: string) => rig.sidecarWith({ USAGE_LOG_FILE: file });

  it('the SDK gets its message, JSON and streamed; the key goes as x-api-key with a version, and no caller credential passes', async () => {
    const before = messagesTo().length;
    const sdk = client(s, { 'x-fake': cacheUsage, authorization: 'Bearer agent-token', 'x-goog-api-key': 'agent-goog', cookie: 'c=1' });
    const message = await sdk.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] });
    expect(message.content[0]).toMatchObject({ type: 'text', text: 'Hello from the fake upstream.' });
    const stream = sdk.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] });
    const final = await stream.finalMessage();
    expect(final.content[0]).toMatchObject({ type: 'text', text: 'Hello from the fake upstream.' });
    expect(final.usage.output_tokens).toBe(4);

    const sent = messagesTo().slice(before);
    expect(sent).toHaveLength(2);
    for (const r of sent) {
      expect(r.headers['x-api-key']).toBe(TEST_ANTHROPIC_KEY);
      // The SDK's own version (newer than the sidecar's default) is the one its client speaks: kept, not doubled.
      expect(r.headers['anthropic-version']).toMatch(/^20\d\d-\d\d-\d\d$/);
      expect(r.rawHeaders.filter((h) => h.toLowerCase() === 'anthropic-version')).toHaveLength(1);
      for (const h of ['authorization', 'x-goog-api-key', 'cookie', 'api-key']) expect(r.headers[h]).toBeUndefined();
      expect(JSON.stringify(r.rawHeaders)).not.toContain(TEST_KEY);
      expect(JSON.stringify(r.rawHeaders)).not.toContain('sk-ant-placeholder');
    }
  });

  it('adds anthropic-version when the caller sent none, and strips a key query parameter', async () => {
    const before = fake.received.length;
    await request(anthropicUrl(s)).get('/v1/models?key=agent-key&limit=5').set('x-api-key', 'agent').expect(200);
    const [r] = fake.received.slice(before);
    expect(r!.path).toBe('/v1/models?limit=5');
    expect(r!.headers['anthropic-version']).toBe('2023-06-01');
    expect(r!.headers['x-api-key']).toBe(TEST_ANTHROPIC_KEY);
  });

  it('counts the input with its cache reads and writes, per provider and model, in /usage, the metrics and the usage log', async () => {
    const t = await sidecarWithLog(join(mkdtempSync(join(tmpdir(), 'api-proxy-anthropic-')), 'usage.jsonl'));
    const sdk = client(t, { 'x-fake': cacheUsage });
    await sdk.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'secret prompt' }] });
    await sdk.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    // count_tokens is a read, not a model call.
    await sdk.messages.countTokens({ model: 'claude-sonnet-4-5', messages: [{ role: 'user', content: 'hi' }] });
    // The same model name from OpenAI's port: told apart by the provider.
    await request(t.url).post('/v1/chat/completions').set('x-fake', 'input=3,output=1').send({ model: 'claude-sonnet-4-5', messages: [] }).expect(200);

    const one = { input: 1210, cached_input: 1000, cache_write: 200, output: 4, reasoning: 0, total: 1214 };
    const two = { input: 2420, cached_input: 2000, cache_write: 400, output: 8, reasoning: 0, total: 2428 };
    const u = await until(() => usageOf(t), (b) => b.providers.anthropic?.responses === 2 && b.providers.openai?.responses === 1);
    expect(u.providers.anthropic).toEqual({ responses: 2, tokens: two });
    expect(u.models['anthropic:claude-sonnet-4-5']).toEqual({ provider: 'anthropic', responses: 2, tokens: two });
    expect(u.models['claude-sonnet-4-5']).toMatchObject({ provider: 'openai', responses: 1 });
    expect(u.tokens).toEqual({ input: 2423, cached_input: 2000, cache_write: 400, output: 9, reasoning: 0, total: 2432 });
    expect(u.unknown).toBe(0);
    // MAX_REQUESTS counts every POST, count_tokens too.
    expect(u.requests).toBe(4);

    const metrics = (await request(anthropicUrl(t)).get('/metrics')).text;
    expect(metrics).toContain('api_proxy_tokens_total{provider="anthropic",model="claude-sonnet-4-5",type="cache_write"} 400');
    expect(metrics).toContain('api_proxy_tokens_total{provider="anthropic",model="claude-sonnet-4-5",type="input"} 2420');

    await t.app.ledger.close();
    const lines = readFileSync(t.config.usageLogFile!, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.slice(0, 2)).toMatchObject([
      { provider: 'anthropic', transport: 'http', model: 'claude-sonnet-4-5', ...one, status: 'completed' },
      { provider: 'anthropic', transport: 'sse', model: 'claude-sonnet-4-5', ...one, status: 'completed' },
    ]);
    expect(readFileSync(t.config.usageLogFile!, 'utf8')).not.toContain('secret prompt');
  });

  it('a stream cut before its message_delta is unknown and charged its reservation', async () => {
    const t = await rig.sidecarWith({ MAX_TOKENS: '1000000' });
    const body = { model: 'claude-sonnet-4-5', max_tokens: 100, stream: true, messages: [] };
    // reset=3: message_start, content_block_start and ping arrive, then the socket dies.
    await request(anthropicUrl(t)).post('/v1/messages').set('x-fake', 'reset=3').send(body).catch(() => undefined);
    const u = await until(() => usageOf(t), (b) => b.unknown === 1);
    expect(u.providers.anthropic).toEqual({ responses: 1, tokens: { input: 0, cached_input: 0, cache_write: 0, output: 0, reasoning: 0, total: 0 } });
    expect(u.budget.usedTokens).toBe(Math.ceil(JSON.stringify(body).length / 4) + 100);
  });

  it('/health and /readyz answer on the Anthropic port, listing each provider with its own fingerprint and never a key', async () => {
    const health = (await request(anthropicUrl(s)).get('/health').expect(200)).body;
    expect(health.provider).toBe('anthropic');
    expect(health.upstream.url).toMatch(/^https:\/\/api\.anthropic\.test:\d+$/);
    expect(health.providers.map((p: { name: string }) => p.name)).toEqual(['openai', 'anthropic']);
    expect(health.providers[1].key.fingerprint).toMatch(/^[0-9a-f]{8}$/);
    expect(health.providers[0].key.fingerprint).not.toBe(health.providers[1].key.fingerprint);
    const text = JSON.stringify(health);
    expect(text).not.toContain(TEST_ANTHROPIC_KEY.slice(14, 24));
    expect(text).not.toContain(TEST_KEY.slice(8, 20));
    await request(anthropicUrl(s)).get('/readyz').expect(200, { status: 'ready' });
  });
});

describe('refusals on the Anthropic port, in its own shape', () => {
  const refusal = (res: request.Response, status: number, type: string, code: string): void => {
    expect(res.status).toBe(status);
    expect(res.headers['x-should-retry']).toBe('false');
    expect(res.body).toMatchObject({ type: 'error', error: { type, code } });
    expect(typeof res.body.error.message).toBe('string');
  };

  it('a spent budget is 402 billing_error; the SDK does not retry it, and nothing more goes upstream; the OpenAI port says 429', async () => {
    const s = await rig.sidecarWith({ MAX_TOKENS: '50' });
    const sdk = client(s, { 'x-fake': 'input=40,output=20' });
    await sdk.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    await until(() => usageOf(s), (b) => b.budget.exhausted === true);
    const before = messagesTo().length;
    const err = await sdk.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect((err as InstanceType<typeof Anthropic.APIError>).status).toBe(402);
    expect(String((err as Error).message)).toContain('budget');
    expect(messagesTo().length).toBe(before);
    refusal(await request(anthropicUrl(s)).post('/v1/messages').send({ model: 'claude-sonnet-4-5', max_tokens: 1, messages: [] }), 402, 'billing_error', 'budget_exceeded');
    const openai = await request(s.url).post('/v1/responses').send({ model: 'gpt-5.5', input: 'x' });
    expect(openai.status).toBe(429);
    expect(openai.body.error).toMatchObject({ type: 'insufficient_quota', code: 'budget_exceeded' });
  });

  it('guarded, only messages, count_tokens and model reads pass; batches and the OpenAI-compatible chat route are refused with 403 permission_error', async () => {
    const s = await rig.sidecarWith({ MAX_TOKENS: '1000000', ALLOWED_ROUTES: 'responses,chat,anthropic:messages,anthropic:models' });
    const before = fake.received.length;
    const url = anthropicUrl(s);
    refusal(await request(url).post('/v1/messages/batches').send({ requests: [] }), 403, 'permission_error', 'route_not_allowed');
    refusal(await request(url).post('/v1/chat/completions').send({ model: 'claude-sonnet-4-5', messages: [] }), 403, 'permission_error', 'route_not_allowed');
    refusal(await request(url).get('/v1/files'), 403, 'permission_error', 'route_not_allowed');
    refusal(await request(url).post('/v1/messages/%62atches').send({}), 403, 'permission_error', 'route_not_allowed');
    expect(fake.received.length).toBe(before);
    await request(url).post('/v1/messages/count_tokens').send({ model: 'claude-sonnet-4-5', messages: [] }).expect(200);
    await request(url).get('/v1/models').expect(200);
    await request(url).post('/v1/messages').send({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [] }).expect(200);
  });

  it('ALLOWED_MODELS: another model is 403 permission_error model_not_allowed, and nothing goes upstream', async () => {
    const s = await rig.sidecarWith({ ALLOWED_MODELS: 'claude-sonnet-*' });
    const before = messagesTo().length;
    refusal(await request(anthropicUrl(s)).post('/v1/messages').send({ model: 'claude-opus-4-1', max_tokens: 5, messages: [] }), 403, 'permission_error', 'model_not_allowed');
    refusal(
      await request(anthropicUrl(s)).post('/v1/messages').set('content-type', 'application/json').send('{"model":"claude-sonnet-4-5","model":"claude-opus-4-1","max_tokens":5,"messages":[]}'),
      403,
      'permission_error',
      'model_not_allowed',
    );
    expect(messagesTo().length).toBe(before);
    await request(anthropicUrl(s)).post('/v1/messages').send({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [] }).expect(200);
  });

  it("an MCP connector server (mcp_servers) off ALLOWED_MCP_SERVERS is 403 permission_error tool_not_allowed, guarded or not: the upstream would reach it around Squid", async () => {
    for (const env of [{ ALLOWED_MCP_SERVERS: 'mcp.example.com' }, { ALLOWED_MCP_SERVERS: 'mcp.example.com', MAX_TOKENS: '1000000' }] as Record<string, string>[]) {
      const s = await rig.sidecarWith(env);
      const before = messagesTo().length;
      const call = (servers: object[]) =>
        request(anthropicUrl(s)).post('/v1/messages').send({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [], mcp_servers: servers });
      refusal(await call([{ type: 'url', url: 'https://evil.test/mcp', name: 'e' }]), 403, 'permission_error', 'tool_not_allowed');
      refusal(await call([{ type: 'url', url: 'https://mcp.example.com/sse', name: 'ok' }, { type: 'url', name: 'no-url' }]), 403, 'permission_error', 'tool_not_allowed');
      refusal(await call([{ type: 'url', url: 'not a url', name: 'x' }]), 403, 'permission_error', 'tool_not_allowed');
      expect(messagesTo().length).toBe(before);
      await call([{ type: 'url', url: 'https://MCP.example.com:8443/sse', name: 'ok' }]).expect(200);
    }
  });

  it('PROXY_AUTH_TOKEN: the token as x-api-key passes; none is 401 invalid_request_error; a body too large is 413 request_too_large', async () => {
    const s = await rig.sidecarWith({ PROXY_AUTH_TOKEN: 'sandbox-token-123', MAX_BODY_BYTES: '1000' });
    refusal(await request(anthropicUrl(s)).post('/v1/messages').send({ model: 'm', messages: [] }), 401, 'invalid_request_error', 'proxy_auth_required');
    const big = await request(anthropicUrl(s)).post('/v1/messages').set('x-api-key', 'sandbox-token-123').send({ model: 'm', messages: ['x'.repeat(2000)] });
    refusal(big, 413, 'request_too_large', 'body_too_large');
    const ok = await request(anthropicUrl(s)).post('/v1/messages').set('x-api-key', 'sandbox-token-123').send({ model: 'm', max_tokens: 1, messages: [] });
    expect(ok.status).toBe(200);
  });
});
