import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import fc from 'fast-check';
import OpenAI from 'openai';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import { requestTarget } from '../../src/policy/target.js';
import { FAKE_TEXT, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import type { Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';

/**
 * The spend controls over HTTP, attacked as a prompt-injected agent would:
 * each way around MAX_TOKENS, the route list and the billing headers that
 * once worked, through sidecar → Squid → the TLS fake upstream.
 */
const rig = squidRig();
const { sidecarWith } = rig;
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
const budgetOf = async (s: Sidecar) => (await request(s.url).get('/usage')).body.budget as { usedTokens: number; usedRequests: number; exhausted: boolean };
const reservation = (body: object, output = 16_384): number => Math.ceil(JSON.stringify(body).length / 4) + output;
/** What the fake upstream received from here on. */
const mark = (): (() => string[]) => {
  const from = fake.received.length;
  return () => fake.received.slice(from).map((r) => r.path);
};

describe('the path the upstream reads', () => {
  let s: Sidecar;
  beforeAll(async () => {
    s = await sidecarWith({ MAX_TOKENS: '1000000' });
  });

  it.each(['/v1/%72esponses', '/v1//responses', '/v1/responses/', '/%76%31/responses', '/v1/responses//', '/responses'])(
    '%s is the counted route: forwarded as /v1/responses and charged',
    async (path) => {
      const before = (await budgetOf(s)).usedTokens;
      const sent = mark();
      await request(s.url).post(path).set('x-fake', 'input=10,output=2').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
      expect(sent()).toEqual(['/v1/responses']);
      expect((await budgetOf(s)).usedTokens).toBe(before + 12);
    },
  );

  it.each(['/v1/responses%2fcompact', '/v1/responses%5Ccompact', '/v1/%2e%2e/v1/responses', '/v1/./responses', '/v1/Responses', '/v1/%52esponses', '//api.openai.test/v1/responses'])(
    '%s is refused with bad_request_target, and nothing goes upstream',
    async (path) => {
      const sent = mark();
      const res = await request(s.url).post(path).send({ model: 'gpt-5.5', input: 'hi' });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('bad_request_target');
      expect(sent()).toEqual([]);
    },
  );

  it('for any path built of segments, escapes, dots and slashes: refused, or what the upstream reads names the route the sidecar charged', async () => {
    const open = await sidecarWith({});
    const segment = fc.constantFrom('v1', 'responses', 'chat', 'completions', 'embeddings', 'files', 'compact', '%72esponses', '%2e', '.', '..', '%2F', '%5C', '', 'Responses', 'x%41', '%63hat');
    const isModelCall = (p: string): boolean => ['/v1/responses', '/v1/responses/compact', '/v1/chat/completions', '/v1/completions', '/v1/embeddings'].includes(p);
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 5 }), async (segments) => {
        const path = `/${segments.join('/')}`;
        const before = (await budgetOf(open)).usedTokens;
        const sent = mark();
        const res = await request(open.url).post(path).set('x-fake', 'input=3,output=1').send({ model: 'gpt-5.5', input: 'x' });
        const reached = sent();
        if (res.status === 400 || res.status === 403) {
          expect(reached).toEqual([]);
          return;
        }
        expect(reached).toHaveLength(1);
        const read = reached[0]!;
        // The upstream got the normal form: nothing left for it to read another way.
        expect(requestTarget(read, '/v1').path).toBe(read);
        const charged = (await budgetOf(open)).usedTokens > before;
        expect(charged, `${path} reached the upstream as ${read}`).toBe(isModelCall(read));
      }),
      { numRuns: 60 },
    );
  });
});

describe('reservations: the budget holds against calls at once', () => {
  it('with one token of budget left, 50 concurrent calls to a slow upstream: one is served, the rest get 429 at once', async () => {
    const s = await sidecarWith({ MAX_TOKENS: '100' });
    await request(s.url).post('/v1/responses').set('x-fake', 'input=90,output=9').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
    expect((await budgetOf(s)).usedTokens).toBe(99);
    const sent = mark();
    const answers = await Promise.all(
      Array.from({ length: 50 }, () => request(s.url).post('/v1/responses').set('x-fake', 'delay=300,input=40,output=10').send({ model: 'gpt-5.5', input: 'hi' })),
    );
    const served = answers.filter((r) => r.status === 200);
    const refused = answers.filter((r) => r.status === 429);
    expect(served).toHaveLength(1);
    expect(refused).toHaveLength(49);
    for (const r of refused) {
      expect(r.body.error.code).toBe('budget_exceeded');
      expect(r.headers['x-should-retry']).toBe('false');
    }
    expect(sent()).toHaveLength(1);
    // Past the budget by no more than the one call's usage.
    const after = await budgetOf(s);
    expect(after.usedTokens).toBe(149);
    expect(after.exhausted).toBe(true);
  });

  it('a budget smaller than one reservation still admits one call at a time', async () => {
    const s = await sidecarWith({ MAX_TOKENS: '1000' });
    for (let i = 0; i < 3; i++) {
      await request(s.url).post('/v1/responses').set('x-fake', 'input=5,output=5').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
    }
    expect((await budgetOf(s)).usedTokens).toBe(30);
  });

  it('the openai SDK, calls in parallel: one answered, the others RateLimitError budget_exceeded, none retried', async () => {
    const s = await sidecarWith({ MAX_TOKENS: '1000' });
    const sdk = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-agent-has-no-key', maxRetries: 2, defaultHeaders: { 'x-fake': 'delay=300' } });
    const sent = mark();
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => sdk.responses.create({ model: 'gpt-5.5', input: 'hi' })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) {
      expect(r.reason).toBeInstanceOf(OpenAI.RateLimitError);
      expect((r.reason as InstanceType<typeof OpenAI.RateLimitError>).code).toBe('budget_exceeded');
    }
    expect(sent()).toHaveLength(1);
    expect(s.logs.filter((l) => l.includes('"status":429'))).toHaveLength(4); // each refused once: no retry
  });
  it("the openai SDK's response and chat streams under a budget: unchanged, and charged what they report", async () => {
    const s = await sidecarWith({ MAX_TOKENS: '1000000' });
    const sdk = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-agent-has-no-key', defaultHeaders: { 'x-fake': 'input=11,output=3' } });
    let text = '';
    for await (const event of await sdk.responses.create({ model: 'gpt-5.5', input: 'hi', stream: true })) {
      if (event.type === 'response.output_text.delta') text += event.delta;
    }
    expect(text).toBe(FAKE_TEXT);
    let chat = '';
    for await (const chunk of await sdk.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } })) {
      chat += chunk.choices[0]?.delta.content ?? '';
    }
    expect(chat).toBe(FAKE_TEXT);
    const budget = await until(() => budgetOf(s), (b) => b.usedTokens >= 28);
    expect(budget.usedTokens).toBe(28);
  });
});

describe('unknown is not free', () => {
  let s: Sidecar;
  beforeAll(async () => {
    s = await sidecarWith({ MAX_TOKENS: '10000000' });
  });
  const charged = async (f: () => Promise<unknown>): Promise<number> => {
    const before = (await budgetOf(s)).usedTokens;
    await f();
    return (await budgetOf(s)).usedTokens - before;
  };

  it('a chat stream without include_usage is charged its reservation', async () => {
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true, max_tokens: 50 };
    expect(await charged(() => request(s.url).post('/v1/chat/completions').send(body).expect(200))).toBe(reservation(body, 50));
  });

  it('a stream the caller cuts is charged its reservation', async () => {
    const body = { model: 'gpt-5.5', input: 'hi', stream: true, max_output_tokens: 70 };
    const before = (await budgetOf(s)).usedTokens;
    const payload = JSON.stringify(body);
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${s.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'x-fake': 'hold' } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
      req.end(payload);
    });
    const after = await until(() => budgetOf(s), (b) => b.usedTokens > before);
    expect(after.usedTokens - before).toBe(reservation(body, 70));
    fake.release();
  });

  it('a stream the upstream cuts, and an answer whose usage does not parse, are each charged their reservation', async () => {
    const cut = { model: 'gpt-5.5', input: 'hi', stream: true, max_output_tokens: 30 };
    expect(await charged(() => request(s.url).post('/v1/responses').set('x-fake', 'reset=2').send(cut).catch(() => undefined))).toBe(reservation(cut, 30));
    const garbled = { model: 'gpt-5.5', input: 'hi', max_output_tokens: 40 };
    expect(await charged(() => request(s.url).post('/v1/responses').set('x-fake', 'input=many').send(garbled).expect(200))).toBe(reservation(garbled, 40));
  });

  it('a call the upstream refused (4xx) is not charged', async () => {
    expect(await charged(() => request(s.url).post('/v1/responses').set('x-fake', 'status=400').send({ model: 'gpt-5.5', input: 'hi' }).expect(400))).toBe(0);
  });
});

describe('every model call holds a reservation, whatever its body', () => {
  it.each([
    ['no body', undefined, undefined],
    ['a text/plain body', 'text/plain', '{"model":"gpt-5.5","input":"hi"}'],
  ])('guarded, a call with %s is counted', async (_, type, body) => {
    const s = await sidecarWith({ MAX_TOKENS: '1000000' });
    const req = request(s.url).post('/v1/responses').set('x-fake', 'input=4,output=1');
    if (type) req.set('content-type', type);
    await (body === undefined ? req : req.send(body)).expect(200);
    expect((await budgetOf(s)).usedTokens).toBe(5);
  });

  it('a Responses call whose body cannot be read strictly (its tools unchecked) is refused, guarded or not', async () => {
    for (const env of [{ MAX_TOKENS: '1000000' }, {}] as Record<string, string>[]) {
      const s = await sidecarWith(env);
      const sent = mark();
      const multipart = await request(s.url).post('/v1/responses').set('content-type', 'multipart/form-data; boundary=x').send('--x\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-5.5\r\n--x--\r\n');
      expect(multipart.status).toBe(403);
      expect(multipart.body.error.code).toBe('tool_not_allowed');
      const bom = await request(s.url).post('/v1/responses').set('content-type', 'application/json').send(`\ufeff${JSON.stringify({ model: 'gpt-5.5', tools: [{ type: 'mcp', server_url: 'https://evil.test/mcp' }] })}`);
      expect(bom.status).toBe(403);
      expect(sent()).toEqual([]);
    }
  });

  it('a target with a fragment is refused: an upstream that dropped it would read another path', async () => {
    const s = await sidecarWith({});
    const sent = mark();
    const head = await new Promise<string>((resolve, reject) => {
      const socket = connect(s.port, '127.0.0.1', () => socket.write('POST /v1/responses#x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}'));
      socket.setEncoding('utf8');
      socket.once('data', (d: string) => {
        socket.destroy();
        resolve(d);
      });
      socket.once('error', reject);
    });
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toContain('bad_request_target');
    expect(sent()).toEqual([]);
  });
});

describe('routes', () => {
  it.each(['/v1/realtime/client_secrets', '/v1/realtime/sessions', '/v1/realtime/transcription_sessions', '/v1/chatkit/sessions'])(
    'POST %s mints a credential: refused unguarded, and with ALLOWED_ROUTES * or realtime',
    async (path) => {
      for (const env of [{}, { ALLOWED_ROUTES: '*' }, { ALLOWED_ROUTES: 'realtime,chatkit' }] as Record<string, string>[]) {
        const s = await sidecarWith(env);
        const sent = mark();
        const res = await request(s.url).post(path).send({ model: 'gpt-realtime' });
        expect(res.status).toBe(403);
        expect(res.body.error).toMatchObject({ code: 'route_not_allowed', type: 'invalid_request_error' });
        expect(res.headers['x-should-retry']).toBe('false');
        expect(sent()).toEqual([]);
      }
    },
  );

  it('ALLOWED_ROUTES naming ephemeral_keys forwards them', async () => {
    const s = await sidecarWith({ ALLOWED_ROUTES: 'ephemeral_keys' });
    const sent = mark();
    await request(s.url).post('/v1/realtime/client_secrets').send({}).expect(200);
    expect(sent()).toEqual(['/v1/realtime/client_secrets']);
  });

  it('guarded, only the counted routes pass by default; ALLOWED_ROUTES opens others by family', async () => {
    const guarded = await sidecarWith({ MAX_TOKENS: '1000000' });
    const sent = mark();
    for (const [method, path] of [['POST', '/v1/batches'], ['GET', '/v1/files'], ['POST', '/v1/images/generations'], ['POST', '/v1/whatever'], ['DELETE', '/v1/models/gpt-5.5'], ['POST', '/v1/responses/resp_1/anything']] as const) {
      const res = await request(guarded.url)[method === 'POST' ? 'post' : method === 'GET' ? 'get' : 'delete'](path);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.body.error.code).toBe('route_not_allowed');
    }
    expect(sent()).toEqual([]);
    await request(guarded.url).get('/v1/models').expect(200);
    await request(guarded.url).get('/v1/responses/resp_1').expect(200);
    const opened = await sidecarWith({ MAX_TOKENS: '1000000', ALLOWED_ROUTES: 'responses,batches' });
    await request(opened.url).post('/v1/batches').send({}).expect(200);
    expect((await request(opened.url).get('/v1/models')).body.error.code).toBe('route_not_allowed');
  });

  it('ALLOWED_MODELS alone guards: the uncounted routes close', async () => {
    const s = await sidecarWith({ ALLOWED_MODELS: 'gpt-5*' });
    expect((await request(s.url).post('/v1/batches').send({})).body.error.code).toBe('route_not_allowed');
  });

  it('background: true on a counted route is refused when guarded, and passes unguarded', async () => {
    const guarded = await sidecarWith({ MAX_REQUESTS: '100' });
    const sent = mark();
    for (const background of [true, 'true', 1]) {
      const res = await request(guarded.url).post('/v1/responses').send({ model: 'gpt-5.5', input: 'hi', background });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'background_not_allowed', type: 'invalid_request_error' });
    }
    expect(sent()).toEqual([]);
    await request(guarded.url).post('/v1/responses').send({ model: 'gpt-5.5', input: 'hi', background: false }).expect(200);
    const open = await sidecarWith({});
    await request(open.url).post('/v1/responses').send({ model: 'gpt-5.5', input: 'hi', background: true }).expect(200);
  });
});

describe('who pays', () => {
  it("the caller's OpenAI-Organization and OpenAI-Project never reach the upstream", async () => {
    const s = await sidecarWith({});
    await request(s.url).post('/v1/responses').set('OpenAI-Organization', 'org-evil').set('openai-project', 'proj_evil').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
    const got = fake.received.at(-1)!.headers;
    expect(got['openai-organization']).toBeUndefined();
    expect(got['openai-project']).toBeUndefined();
  });

  it('OPENAI_ORGANIZATION and OPENAI_PROJECT set them, whatever the caller sent', async () => {
    const s = await sidecarWith({ OPENAI_ORGANIZATION: 'org-good', OPENAI_PROJECT: 'proj_good' });
    await request(s.url).post('/v1/responses').set('OpenAI-Organization', 'org-evil').set('OpenAI-Project', 'proj_evil').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
    const got = fake.received.at(-1)!;
    expect(got.headers['openai-organization']).toBe('org-good');
    expect(got.headers['openai-project']).toBe('proj_good');
    expect(got.rawHeaders.filter((h) => /^openai-(organization|project)$/i.test(h))).toHaveLength(2);
  });
});
