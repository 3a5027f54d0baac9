import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAKE_TEXT, startFakeUpstream, type FakeUpstream } from '../testkit/fake-upstream.js';
import { SQUID_BIN, startSquid, type Squid } from '../testkit/squid.js';
import { startSidecar, TEST_KEY, testPki, type Sidecar } from './support/sidecar.js';

if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');

/** The official openai SDK, pointed at the sidecar by baseURL, through Squid to the TLS fake. */
let fake: FakeUpstream;
let squid: Squid;
let sidecar: Sidecar;
let client: OpenAI;

beforeAll(async () => {
  fake = await startFakeUpstream({ pki: testPki() });
  squid = await startSquid({ allow: ['.openai.test'], hosts: { 'api.openai.test': '127.0.0.1' } });
  sidecar = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' });
  // The agent holds no real key; the SDK insists on some value.
  client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: 'sk-agent-has-no-key', maxRetries: 0 });
});
afterAll(async () => {
  await sidecar.close();
  await squid.stop();
  await fake.close();
});

describe('openai SDK through the sidecar', () => {
  it('responses.create without streaming', async () => {
    const res = await client.responses.create({ model: 'gpt-5.5', input: 'say hi' });
    expect(res.output_text).toBe(FAKE_TEXT);
  });

  it('responses.create with stream: true', async () => {
    const stream = await client.responses.create({ model: 'gpt-5.5', input: 'say hi', stream: true });
    let text = '';
    const types: string[] = [];
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'response.output_text.delta') text += event.delta;
    }
    expect(text).toBe(FAKE_TEXT);
    expect(types.at(-1)).toBe('response.completed');
  });

  it('the responses.stream() helper', async () => {
    const final = await client.responses.stream({ model: 'gpt-5.5', input: 'say hi' }).finalResponse();
    expect(final.output_text).toBe(FAKE_TEXT);
  });

  it('chat completions, streamed and through the .stream() helper', async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-5.5', messages: [{ role: 'user', content: 'hi' }], stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe(FAKE_TEXT);
    const final = await client.chat.completions.stream({ model: 'gpt-5.5', messages: [{ role: 'user', content: 'hi' }] }).finalChatCompletion();
    expect(final.choices[0]!.message.content).toBe(FAKE_TEXT);
  });

  it('models.list', async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toEqual(['gpt-5.5']);
  });

  it('files.create uploads multipart', async () => {
    const file = await client.files.create({ file: await toFile(Buffer.from('{"a":1}\n'.repeat(1000)), 'batch.jsonl'), purpose: 'batch' });
    expect(file).toMatchObject({ object: 'file', filename: 'batch.jsonl', purpose: 'batch' });
  });

  it('an upstream 401 reaches the SDK as AuthenticationError, key redacted', async () => {
    const failing = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: 'x', maxRetries: 0, defaultHeaders: { 'x-fake': 'status=401' } });
    const err = await failing.models.list().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((err as Error).message).toContain('Incorrect API key provided: [redacted].');
    expect((err as Error).message).not.toContain(TEST_KEY.slice(-4));
  });

  it('with PROXY_AUTH_TOKEN the SDK presents it as its apiKey, and a wrong one gets our error shape', async () => {
    const guarded = await startSidecar({ UPSTREAM_URL: fake.url, HTTPS_PROXY: squid.url, PROXY_AUTH_TOKEN: 'sidecar-token-42' });
    try {
      const wrong = new OpenAI({ baseURL: `${guarded.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
      const err = await wrong.models.list().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
      expect(err).toMatchObject({ status: 401, code: 'proxy_auth_required', type: 'proxy_error' });
      const right = new OpenAI({ baseURL: `${guarded.url}/v1`, apiKey: 'sidecar-token-42', maxRetries: 0 });
      expect((await right.responses.create({ model: 'gpt-5.5', input: 'hi' })).output_text).toBe(FAKE_TEXT);
    } finally {
      await guarded.close();
    }
  });

  it('every exchange reached the upstream with the real key and none with the agent’s', () => {
    expect(fake.received.length).toBeGreaterThan(6);
    for (const r of fake.received) expect(r.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
  });
});
