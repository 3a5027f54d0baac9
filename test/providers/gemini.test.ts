import { GoogleGenAI } from '@google/genai';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream, Received } from '../../testkit/fake-upstream.js';
import { FAKE_GEMINI_HOST } from '../../testkit/test-ca.js';
import { until } from '../../testkit/wait.js';
import { TEST_ANTHROPIC_KEY, TEST_GEMINI_KEY, TEST_KEY, type Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';

/**
 * Gemini through the same core: sidecar → Squid → the TLS fake at
 * generativelanguage.googleapis.test, with Google's @google/genai SDK.
 */
const rig = squidRig();
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
const withGemini = (env: Record<string, string> = {}) =>
  rig.sidecarWith({ GEMINI_API_KEY: TEST_GEMINI_KEY, GEMINI_UPSTREAM_URL: `https://${FAKE_GEMINI_HOST}:${fake.port}`, ...env });
const at = (s: Sidecar): string => s.urls.gemini!;
const usageOf = async (s: Sidecar) => (await request(s.url).get('/usage')).body;
const googleCalls = (from: number): Received[] => fake.received.slice(from).filter((r) => r.path.includes('/models/'));
const sdk = (s: Sidecar, headers: Record<string, string> = {}) =>
  new GoogleGenAI({ apiKey: 'agent-placeholder-key', httpOptions: { baseUrl: at(s), headers, retryOptions: { attempts: 3 } } });
const refusal = (res: request.Response, status: number, name: string, reason: string): void => {
  expect(res.status).toBe(status);
  expect(res.body).toEqual({
    error: { code: status, message: expect.any(String), status: name, details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason, domain: 'api-proxy' }] },
  });
};

describe('the Gemini port', () => {
  it('the SDK gets its answer, whole and streamed; the key goes as x-goog-api-key, the path as sent, no caller credential passes', async () => {
    const s = await withGemini();
    const before = fake.received.length;
    const ai = sdk(s, { 'x-fake': 'input=10,output=4,cached=3,reasoning=2', authorization: 'Bearer agent', 'x-api-key': 'agent' });
    const whole = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi' });
    expect(whole.text).toBe('Hello from the fake upstream.');
    let streamed = '';
    for await (const chunk of await ai.models.generateContentStream({ model: 'gemini-2.5-flash', contents: 'hi' })) streamed += chunk.text ?? '';
    expect(streamed).toBe('Hello from the fake upstream.');

    const sent = googleCalls(before);
    expect(sent.map((r) => r.path)).toEqual(['/v1beta/models/gemini-2.5-flash:generateContent', '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse']);
    for (const r of sent) {
      expect(r.headers['x-goog-api-key']).toBe(TEST_GEMINI_KEY);
      for (const h of ['authorization', 'x-api-key', 'api-key']) expect(r.headers[h]).toBeUndefined();
      for (const k of [TEST_KEY, TEST_ANTHROPIC_KEY, 'agent-placeholder-key']) expect(JSON.stringify(r.rawHeaders)).not.toContain(k);
    }
    // Per answer: input = prompt (+ tool prompts) 10, output = candidates + thoughts 4 + 2, reasoning = thoughts.
    const u = await until(() => usageOf(s), (b) => b.providers.gemini?.responses === 2);
    expect(u.providers.gemini).toEqual({ responses: 2, tokens: { input: 20, cached_input: 6, cache_write: 0, output: 12, reasoning: 4, total: 32 } });
    expect(u.models['gemini-2.5-flash']).toEqual({ provider: 'gemini', responses: 2, tokens: { input: 20, cached_input: 6, cache_write: 0, output: 12, reasoning: 4, total: 32 } });
    expect(u.unknown).toBe(0);
  });

  it('a stream without alt=sse (one JSON array) is counted by its last element; countTokens is free', async () => {
    const s = await withGemini({ MAX_TOKENS: '1000000' });
    await request(at(s)).post('/v1beta/models/gemini-2.5-pro:streamGenerateContent').set('x-fake', 'input=7,output=3').send({ contents: [] }).expect(200);
    await request(at(s)).post('/v1beta/models/gemini-2.5-pro:countTokens').send({ contents: [] }).expect(200, { totalTokens: 5 });
    const u = await until(() => usageOf(s), (b) => b.providers.gemini?.responses === 1);
    expect(u.providers.gemini.tokens).toMatchObject({ input: 7, output: 3, total: 10 });
    expect(u.budget.usedTokens).toBe(10);
  });

  it('a stream cut before its finishing chunk is unknown and charged its reservation (maxOutputTokens)', async () => {
    const s = await withGemini({ MAX_TOKENS: '1000000' });
    const body = { contents: [{ parts: [{ text: 'hi' }] }], generationConfig: { maxOutputTokens: 50 } };
    await request(at(s)).post('/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse').set('x-fake', 'reset=2').send(body).catch(() => undefined);
    const u = await until(() => usageOf(s), (b) => b.unknown === 1);
    expect(u.budget.usedTokens).toBe(Math.ceil(JSON.stringify(body).length / 4) + 50);
  });
});

describe('refusals on the Gemini port, in Google\'s shape', () => {
  it('a spent budget is 400 FAILED_PRECONDITION; the SDK does not retry it, and nothing more goes upstream', async () => {
    const s = await withGemini({ MAX_TOKENS: '10' });
    const ai = sdk(s, { 'x-fake': 'input=20,output=5' });
    await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi' });
    await until(() => usageOf(s), (b) => b.budget.exhausted === true);
    const before = fake.received.length;
    const err = await ai.models.generateContent({ model: 'gemini-2.5-flash', contents: 'hi' }).catch((e: unknown) => e as Error);
    expect(String(err)).toContain('budget');
    expect(fake.received.length).toBe(before);
    refusal(await request(at(s)).post('/v1beta/models/gemini-2.5-flash:generateContent').send({}), 400, 'FAILED_PRECONDITION', 'budget_exceeded');
    expect(s.logs.filter((l) => l.includes('"status":400') && l.includes('budget_exceeded'))).toHaveLength(2);
  });

  it('ALLOWED_MODELS reads the model in the path: another is 403 PERMISSION_DENIED, however the method is cased, and nothing goes upstream', async () => {
    const s = await withGemini({ ALLOWED_MODELS: 'gemini-2.5-flash*' });
    const before = fake.received.length;
    refusal(await request(at(s)).post('/v1beta/models/gemini-2.5-pro:generateContent').send({ contents: [] }), 403, 'PERMISSION_DENIED', 'model_not_allowed');
    refusal(await request(at(s)).post('/v1/models/gemini-2.5-pro:streamGenerateContent?alt=sse').send({ contents: [] }), 403, 'PERMISSION_DENIED', 'model_not_allowed');
    refusal(await request(at(s)).post('/v1beta/models/gemini-2.5-pro:GenerateContent').send({ contents: [] }), 400, 'INVALID_ARGUMENT', 'bad_request_target');
    refusal(await request(at(s)).post('/v1beta/models/gemini-2.5-flash:GENERATECONTENT').send({ contents: [] }), 400, 'INVALID_ARGUMENT', 'bad_request_target');
    refusal(await request(at(s)).post('/v1beta/models/gemini%2D2.5-pro:generateContent').send({ contents: [] }), 403, 'PERMISSION_DENIED', 'model_not_allowed');
    // An escaped colon or a second method would let the upstream read a model or method the sidecar did not.
    for (const path of ['/v1beta/models/gemini-2.5-pro%3Aflash:generateContent', '/v1beta/models/gemini-2.5-flash:x:generateContent', '/v1beta/models/gemini-2.5-flash%20:generateContent']) {
      refusal(await request(at(s)).post(path).send({ contents: [] }), 400, 'INVALID_ARGUMENT', 'bad_request_target');
    }
    expect(fake.received.length).toBe(before);
    await request(at(s)).post('/v1beta/models/gemini-2.5-flash:generateContent').send({ contents: [] }).expect(200);
  });

  it('guarded, only generate, embed, countTokens and model reads pass; batches, cached contents, files and the Live WebSocket route are refused', async () => {
    const s = await withGemini({ MAX_TOKENS: '1000000' });
    const before = fake.received.length;
    for (const [method, path] of [
      ['post', '/v1beta/models/gemini-2.5-flash:batchGenerateContent'],
      ['post', '/v1beta/batches'],
      ['post', '/v1beta/cachedContents'],
      ['post', '/upload/v1beta/files'],
      ['get', '/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent'],
      ['post', '/v1beta/tunedModels/mine:generateContent'],
    ] as const) {
      refusal(await request(at(s))[method](path).send({}), 403, 'PERMISSION_DENIED', 'route_not_allowed');
    }
    expect(fake.received.length).toBe(before);
    await request(at(s)).get('/v1beta/models').expect(200);
    await request(at(s)).post('/v1beta/models/text-embedding-004:embedContent').send({ content: { parts: [{ text: 'x' }] } }).expect(200);
  });
});
