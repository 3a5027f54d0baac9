import { request as httpRequest } from 'node:http';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import { requestTarget } from '../../src/policy/target.js';
import type { FakeUpstream } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import type { Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';

/**
 * The spend-control attacks of test/security/ (the path the upstream reads,
 * reservations, unknown is not free, bodies read strictly) on Anthropic's
 * port: one core, so they must hold the same, answered in Anthropic's shape.
 */
const rig = squidRig();
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
const at = (s: Sidecar): string => s.urls.anthropic!;
const budgetOf = async (s: Sidecar) => (await request(at(s)).get('/usage')).body.budget as { usedTokens: number; exhausted: boolean };
const reservation = (body: object, output: number): number => Math.ceil(JSON.stringify(body).length / 4) + output;
const mark = (): (() => string[]) => {
  const from = fake.received.length;
  return () => fake.received.slice(from).map((r) => r.path);
};
const message = { model: 'claude-sonnet-4-5', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] };

describe('the path the upstream reads, on the Anthropic port', () => {
  let s: Sidecar;
  beforeAll(async () => {
    s = await rig.sidecarWith({ MAX_TOKENS: '1000000' });
  });

  it.each(['/v1/%6dessages', '/v1//messages', '/v1/messages/', '/%76%31/messages', '/messages'])('%s is the counted route: forwarded as /v1/messages and charged', async (path) => {
    const before = (await budgetOf(s)).usedTokens;
    const sent = mark();
    await request(at(s)).post(path).set('x-fake', 'input=10,output=2').send(message).expect(200);
    expect(sent()).toEqual(['/v1/messages']);
    expect((await budgetOf(s)).usedTokens).toBe(before + 12);
  });

  it.each(['/v1/messages%2fbatches', '/v1/messages%5Cbatches', '/v1/%2e%2e/v1/messages', '/v1/./messages', '/v1/Messages', '//api.anthropic.test/v1/messages'])(
    '%s is refused with bad_request_target in Anthropic shape, and nothing goes upstream',
    async (path) => {
      const sent = mark();
      const res = await request(at(s)).post(path).send(message);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', code: 'bad_request_target' } });
      expect(sent()).toEqual([]);
    },
  );

  it('for any path built of segments, escapes, dots and slashes: refused, or what the upstream reads names the route the sidecar charged', async () => {
    const open = await rig.sidecarWith({});
    const segment = fc.constantFrom('v1', 'messages', 'batches', 'count_tokens', 'chat', 'completions', '%6dessages', '%2e', '.', '..', '%2F', '%5C', '', 'Messages', 'x%41');
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 5 }), async (segments) => {
        const path = `/${segments.join('/')}`;
        const before = (await budgetOf(open)).usedTokens;
        const sent = mark();
        const res = await request(at(open)).post(path).set('x-fake', 'input=3,output=1').send(message);
        const reached = sent();
        if (res.status === 400 || res.status === 403) {
          expect(reached).toEqual([]);
          return;
        }
        expect(reached).toHaveLength(1);
        const read = reached[0]!;
        expect(requestTarget(read, '/v1').path).toBe(read);
        const charged = (await budgetOf(open)).usedTokens > before;
        expect(charged, `${path} reached the upstream as ${read}`).toBe(read === '/v1/messages');
      }),
      { numRuns: 60 },
    );
  });
});

describe('reservations and unknown usage, on the Anthropic port', () => {
  it('with one token of budget left, 30 concurrent calls to a slow upstream: one is served, the rest get 402 at once', async () => {
    const s = await rig.sidecarWith({ MAX_TOKENS: '100' });
    await request(at(s)).post('/v1/messages').set('x-fake', 'input=90,output=9').send(message).expect(200);
    expect((await budgetOf(s)).usedTokens).toBe(99);
    const sent = mark();
    const answers = await Promise.all(
      Array.from({ length: 30 }, () => request(at(s)).post('/v1/messages').set('x-fake', 'delay=300,input=40,output=10').send(message)),
    );
    expect(answers.filter((r) => r.status === 200)).toHaveLength(1);
    const refused = answers.filter((r) => r.status === 402);
    expect(refused).toHaveLength(29);
    for (const r of refused) {
      expect(r.body.error).toMatchObject({ type: 'billing_error', code: 'budget_exceeded' });
      expect(r.headers['x-should-retry']).toBe('false');
    }
    expect(sent()).toHaveLength(1);
    expect(await budgetOf(s)).toMatchObject({ usedTokens: 149, exhausted: true });
  });

  it('a stream the caller cuts, one the upstream cuts, and a usage that does not parse are each charged their reservation (max_tokens); a 4xx is not charged', async () => {
    const s = await rig.sidecarWith({ MAX_TOKENS: '10000000' });
    const charged = async (f: () => Promise<unknown>): Promise<number> => {
      const before = (await budgetOf(s)).usedTokens;
      await f();
      return (await budgetOf(s)).usedTokens - before;
    };
    const streamed = { ...message, stream: true, max_tokens: 70 };
    const payload = JSON.stringify(streamed);
    const before = (await budgetOf(s)).usedTokens;
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${at(s)}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'x-fake': 'hold' } }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
      req.end(payload);
    });
    expect((await until(() => budgetOf(s), (b) => b.usedTokens > before)).usedTokens - before).toBe(reservation(streamed, 70));
    fake.release();

    // reset=6: the stream dies among its text deltas, before message_delta reports the output.
    const cut = { ...message, stream: true, max_tokens: 30 };
    expect(await charged(() => request(at(s)).post('/v1/messages').set('x-fake', 'reset=6').send(cut).catch(() => undefined))).toBe(reservation(cut, 30));
    const garbled = { ...message, max_tokens: 40 };
    expect(await charged(() => request(at(s)).post('/v1/messages').set('x-fake', 'input=many').send(garbled).expect(200))).toBe(reservation(garbled, 40));
    expect(await charged(() => request(at(s)).post('/v1/messages').set('x-fake', 'status=400').send(message).expect(400))).toBe(0);
  });
});

describe('bodies read strictly under ALLOWED_MODELS, on the Anthropic port', () => {
  let s: Sidecar;
  beforeAll(async () => {
    s = await rig.sidecarWith({ ALLOWED_MODELS: 'claude-sonnet-*' });
  });
  const raw = (path: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; type?: string; code?: string }> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(`${at(s)}${path}`, { method: 'POST', headers: { ...headers, 'content-length': body.length } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const { error } = JSON.parse(Buffer.concat(chunks).toString() || '{}') as { error?: { type?: string; code?: string } };
          resolve({ status: res.statusCode!, type: error?.type, code: error?.code });
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  const offList = JSON.stringify({ model: 'claude-opus-4-1', max_tokens: 5, messages: [] });

  it.each([
    ['a byte-order mark', 'application/json', Buffer.from(`\ufeff${offList}`)],
    ['NaN', 'application/json', Buffer.from('{"model":"claude-opus-4-1","temperature":NaN}')],
    ['a duplicate model, the listed one first', 'application/json', Buffer.from('{"model":"claude-sonnet-4-5","model":"claude-opus-4-1"}')],
    ['text/plain', 'text/plain', Buffer.from(offList)],
    ['a charset other than utf-8', 'application/json; charset=utf-16', Buffer.from(offList)],
    ['a model that is no string', 'application/json', Buffer.from('{"model":["claude-opus-4-1"]}')],
    ['gzip twice, declared as one', 'application/json', gzipSync(gzipSync(offList)), 'gzip'],
  ])('%s: 403 permission_error model_not_allowed, nothing upstream', async (_, type, body, encoding?: string) => {
    const sent = mark();
    const headers: Record<string, string> = { 'content-type': type };
    if (encoding) headers['content-encoding'] = encoding;
    expect(await raw('/v1/messages', headers, body)).toEqual({ status: 403, type: 'permission_error', code: 'model_not_allowed' });
    expect(sent()).toEqual([]);
  });

  it('a model in the query string is checked too; strict JSON with a listed model passes byte for byte', async () => {
    const sent = mark();
    expect(await raw('/v1/messages?beta=true&model=claude-opus-4-1', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(message)))).toMatchObject({ status: 403, code: 'model_not_allowed' });
    expect(sent()).toEqual([]);
    const body = Buffer.from(JSON.stringify({ ...message, system: 'é' }));
    expect((await raw('/v1/messages?beta=true', { 'content-type': 'application/json' }, body)).status).toBe(200);
    expect(fake.received.at(-1)!.body.equals(body)).toBe(true);
    expect(fake.received.at(-1)!.path).toBe('/v1/messages?beta=true');
  });
});
