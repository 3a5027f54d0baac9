import OpenAI, { AzureOpenAI } from 'openai';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import { TEST_AZURE_KEY, TEST_KEY, type Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';

/**
 * Azure OpenAI through the same core: OpenAI's API on the customer's endpoint,
 * the key as `api-key`, the openai SDK's AzureOpenAI client. The fake at
 * api.openai.test answers Azure's paths too.
 */
const rig = squidRig();
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
const withAzure = (env: Record<string, string> = {}) =>
  rig.sidecarWith({ AZURE_OPENAI_API_KEY: TEST_AZURE_KEY, AZURE_OPENAI_ENDPOINT: `https://azure.openai.test:${fake.port}`, ...env });
const at = (s: Sidecar): string => s.urls.azure!;
const usageOf = async (s: Sidecar) => (await request(s.url).get('/usage')).body;

describe('the Azure OpenAI port', () => {
  it('the AzureOpenAI client, on a deployment and on the v1 API: the key goes as api-key, paths and api-version as sent, no caller credential passes', async () => {
    const s = await withAzure();
    const before = fake.received.length;
    const deployment = new AzureOpenAI({ endpoint: at(s), apiKey: 'agent-placeholder', apiVersion: '2025-04-01-preview', deployment: 'gpt-4o-prod', defaultHeaders: { 'x-fake': 'input=9,output=3' } });
    const chat = await deployment.chat.completions.create({ model: 'ignored-by-azure', messages: [{ role: 'user', content: 'hi' }] });
    expect(chat.choices[0]!.message.content).toBe('Hello from the fake upstream.');
    const v1 = new OpenAI({ baseURL: `${at(s)}/openai/v1`, apiKey: 'agent-placeholder', defaultHeaders: { 'x-fake': 'input=4,output=2' } });
    const response = await v1.responses.create({ model: 'gpt-5.5', input: 'hi' });
    expect(response.output_text).toBe('Hello from the fake upstream.');

    const sent = fake.received.slice(before);
    expect(sent.map((r) => r.path)).toEqual(['/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-04-01-preview', '/openai/v1/responses']);
    for (const r of sent) {
      expect(r.headers['api-key']).toBe(TEST_AZURE_KEY);
      expect(r.headers.authorization).toBeUndefined();
      expect(JSON.stringify(r.rawHeaders)).not.toContain('agent-placeholder');
      expect(JSON.stringify(r.rawHeaders)).not.toContain(TEST_KEY);
    }
    const u = await until(() => usageOf(s), (b) => b.providers.azure?.responses === 2);
    expect(u.providers.azure.tokens).toMatchObject({ input: 13, output: 5, total: 18 });
    // The deployment's answer names the model it reports; Azure's models are keyed azure:… only when OpenAI reported the same name.
    expect(u.models['gpt-4o-prod']).toMatchObject({ provider: 'azure', responses: 1 });
  });

  it('guarded, ALLOWED_MODELS reads the deployment in the path and the body model on /openai/v1; refusals in OpenAI\'s shape; the budget is 429 insufficient_quota', async () => {
    const s = await withAzure({ ALLOWED_MODELS: 'gpt-5*', MAX_TOKENS: '20' });
    const before = fake.received.length;
    const refused = await request(at(s)).post('/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-04-01-preview').send({ messages: [] });
    expect(refused.status).toBe(403);
    expect(refused.body.error).toMatchObject({ type: 'invalid_request_error', code: 'model_not_allowed' });
    expect((await request(at(s)).post('/openai/v1/responses').send({ model: 'o3-pro', input: 'x' })).body.error.code).toBe('model_not_allowed');
    expect((await request(at(s)).post('/openai/v1/files').send({})).body.error.code).toBe('route_not_allowed');
    expect((await request(at(s)).post('/openai/v1/realtime/client_secrets').send({})).body.error.code).toBe('route_not_allowed');
    // A deployment spelled with an escape or a colon is no name an allowlist checked: refused, as for Gemini's models.
    for (const path of ['/openai/deployments/gpt-5.5%3Aprod/chat/completions', '/openai/deployments/gpt-5:x/chat/completions']) {
      expect((await request(at(s)).post(path).send({ messages: [] })).body.error.code, path).toBe('bad_request_target');
    }
    expect(fake.received.length).toBe(before);
    await request(at(s)).post('/openai/deployments/gpt-5.5-prod/chat/completions').set('x-fake', 'input=20,output=5').send({ messages: [] }).expect(200);
    await until(() => usageOf(s), (b) => b.budget.exhausted === true);
    const spent = await request(at(s)).post('/openai/v1/responses').send({ model: 'gpt-5.5', input: 'x' });
    expect(spent.status).toBe(429);
    expect(spent.headers['x-should-retry']).toBe('false');
    expect(spent.body.error).toMatchObject({ type: 'insufficient_quota', code: 'budget_exceeded' });
  });
});
