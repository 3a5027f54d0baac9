import fc from 'fast-check';
import { request as httpRequest } from 'node:http';
import { gzipSync } from 'node:zlib';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import { ScanError } from '../../src/policy/body-scan.js';
import { HeldBody, scanBody } from '../../src/policy/body.js';
import type { FakeUpstream } from '../../testkit/fake-upstream.js';
import type { Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';
import { exchangeEvents, openWebSocket } from '../support/ws.js';

/**
 * Bodies read strictly, and hosted tools: an off-list model or an mcp server
 * hidden in a body the sidecar would read one way and an upstream another,
 * through sidecar → Squid → the TLS fake upstream.
 */
const rig = squidRig();
const { sidecarWith } = rig;
let fake: FakeUpstream;
beforeAll(() => {
  fake = rig.fake;
});
/** A body sent as these bytes (supertest would serialise a Buffer sent as JSON): the status and the error code. */
const raw = (s: Sidecar, path: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; code?: string }> =>
  new Promise((resolve, reject) => {
    const req = httpRequest(`${s.url}${path}`, { method: 'POST', headers: { ...headers, 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, code: (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { error?: { code?: string } }).error?.code }));
    });
    req.on('error', reject);
    req.end(body);
  });
const mark = (): (() => number) => {
  const from = fake.received.length;
  return () => fake.received.length - from;
};

describe('under ALLOWED_MODELS, a model call is a JSON object in strict UTF-8, every model named checked', () => {
  let s: Sidecar;
  beforeAll(async () => {
    s = await sidecarWith({ ALLOWED_MODELS: 'gpt-5*' });
  });
  const utf16 = (text: string, bom: boolean): Buffer => Buffer.concat([bom ? Buffer.from([0xff, 0xfe]) : Buffer.alloc(0), Buffer.from(text, 'utf16le')]);
  const offList = JSON.stringify({ model: 'o3-pro', input: 'hi' });

  it.each([
    ['a byte-order mark', 'application/json', Buffer.from(`\ufeff${offList}`)],
    ['UTF-16 with a BOM', 'application/json', utf16(offList, true)],
    ['UTF-16 without a BOM', 'application/json', utf16(offList, false)],
    ['NaN', 'application/json', Buffer.from('{"model":"o3-pro","temperature":NaN}')],
    ['a duplicate model, the listed one first', 'application/json', Buffer.from('{"model":"gpt-5.5","model":"o3-pro","input":"hi"}')],
    ['a duplicate model, the listed one last', 'application/json', Buffer.from('{"model":"o3-pro","model":"gpt-5.5","input":"hi"}')],
    ['a form', 'application/x-www-form-urlencoded', Buffer.from('model=o3-pro&input=hi')],
    ['multipart', 'multipart/form-data; boundary=x', Buffer.from('--x\r\nContent-Disposition: form-data; name="model"\r\n\r\no3-pro\r\n--x--\r\n')],
    ['text/plain', 'text/plain', Buffer.from(offList)],
    ['a charset other than utf-8', 'application/json; charset=utf-16', Buffer.from(offList)],
    ['an array', 'application/json', Buffer.from(`[${offList}]`)],
    ['more after the object', 'application/json', Buffer.from(`${JSON.stringify({ model: 'gpt-5.5' })}{"model":"o3-pro"}`)],
    ['a model that is no string', 'application/json', Buffer.from('{"model":["o3-pro"]}')],
    ['a model under response', 'application/json', Buffer.from('{"model":"gpt-5.5","response":{"model":"o3-pro"}}')],
    ['gzip twice, declared as one', 'application/json', gzipSync(gzipSync(offList)), 'gzip'],
    ['two encodings in one header', 'application/json', gzipSync(gzipSync(offList)), 'gzip, gzip'],
  ])('%s: 403 model_not_allowed, nothing upstream', async (_, type, body, encoding?: string) => {
    const sent = mark();
    const headers: Record<string, string> = { 'content-type': type };
    if (encoding) headers['content-encoding'] = encoding;
    expect(await raw(s, '/v1/responses', headers, body)).toEqual({ status: 403, code: 'model_not_allowed' });
    expect(sent()).toBe(0);
  });

  it('a model in the query string is checked as well', async () => {
    const sent = mark();
    const res = await request(s.url).post('/v1/responses?model=o3-pro').send({ model: 'gpt-5.5', input: 'hi' });
    expect(res.body.error.code).toBe('model_not_allowed');
    for (const key of ['MODEL', 'mod%65l']) expect((await request(s.url).post(`/v1/responses?${key}=o3-pro`).send({ model: 'gpt-5.5' })).status).toBe(403);
    expect(sent()).toBe(0);
    await request(s.url).post('/v1/responses?model=gpt-5.5').send({ model: 'gpt-5.5', input: 'hi' }).expect(200);
  });

  it('passes strict JSON with listed models, gzip included, byte for byte', async () => {
    const body = JSON.stringify({ model: 'gpt-5.5', input: 'é', tools: [{ type: 'function', name: 'f' }] });
    await request(s.url).post('/v1/responses').set('content-type', 'application/json; charset=utf-8').send(body).expect(200);
    expect(fake.received.at(-1)!.body.toString()).toBe(body);
    const gz = gzipSync(body);
    // Checked decoded, sent as it came (the fake itself does not gunzip: it answers 400).
    expect((await raw(s, '/v1/responses', { 'content-type': 'application/json', 'content-encoding': 'gzip' }, gz)).code).not.toBe('model_not_allowed');
    expect(fake.received.at(-1)!.body.equals(gz)).toBe(true);
  });
});

describe('hosted mcp tools name only the servers ALLOWED_MCP_SERVERS lists, guarded or not', () => {
  const call = (s: Sidecar, tool: object) => request(s.url).post('/v1/responses').send({ model: 'gpt-5.5', input: 'hi', tools: [{ type: 'function', name: 'f' }, tool] });

  it('with no list, every mcp tool is refused with 403 tool_not_allowed, and nothing goes upstream', async () => {
    for (const env of [{}, { MAX_TOKENS: '1000000' }] as Record<string, string>[]) {
      const s = await sidecarWith(env);
      const sent = mark();
      for (const tool of [{ type: 'mcp', server_url: 'https://evil.test/mcp' }, { type: 'MCP', server_url: 'https://evil.test/mcp' }, { type: 'mcp', connector_id: 'connector_gmail' }, { type: 'mcp' }]) {
        const res = await call(s, tool);
        expect(res.status, JSON.stringify(tool)).toBe(403);
        expect(res.body.error).toMatchObject({ code: 'tool_not_allowed', type: 'invalid_request_error' });
      }
      expect(sent()).toBe(0);
    }
  });

  it('hosts compare case-insensitively and exactly, whatever the port; a .suffix admits subdomains; connectors by name', async () => {
    const s = await sidecarWith({ ALLOWED_MCP_SERVERS: 'mcp.example.com, .corp.test, connectors' });
    for (const url of ['https://mcp.example.com/sse', 'https://MCP.Example.COM:8443/x', 'https://a.corp.test/', 'https://b.a.corp.test:1/']) {
      expect((await call(s, { type: 'mcp', server_url: url })).status, url).toBe(200);
    }
    await call(s, { type: 'mcp', connector_id: 'connector_dropbox' }).expect(200);
    const sent = mark();
    for (const url of ['https://evil.test/', 'https://mcp.example.com.evil.test/', 'https://xmcp.example.com/', 'https://corp.test.evil/', 'https://user@evil.test/?h=mcp.example.com', 'not a url']) {
      expect((await call(s, { type: 'mcp', server_url: url })).status, url).toBe(403);
    }
    expect(sent()).toBe(0);
  });
});

describe("a body's keys find only the fields the reader looks for", () => {
  const PROTOTYPE_KEYS = '{"type":"response.create","model":"gpt-5.5","input":"hi","constructor":1,"toString":"x","__proto__":{"a":1},"hasOwnProperty":[],"tools":[{"constructor":1,"type":"function","name":"f"}]}';

  it('constructor, __proto__ and toString as keys are plain data: scanned, and the call forwarded (they once threw inside the reader and the caller never got an answer)', async () => {
    const scan = await scanBody(new HeldBody([Buffer.from(PROTOTYPE_KEYS)], PROTOTYPE_KEYS.length), undefined, 1 << 20);
    expect(scan).not.toBeInstanceOf(ScanError);
    expect(scan).toMatchObject({ models: ['gpt-5.5'], types: ['response.create'] });
    const s = await sidecarWith({});
    const res = await raw(s, '/v1/responses', { 'content-type': 'application/json' }, Buffer.from(PROTOTYPE_KEYS));
    expect(res.status).toBe(200);
  });

  it('over the Responses WebSocket: the same message is sent upstream, and the sidecar lives on (it once threw out of the socket handler)', async () => {
    const s = await sidecarWith({ MAX_TOKENS: '1000000' });
    const { ws } = await openWebSocket(`${s.url.replace('http', 'ws')}/v1/responses`, {});
    ws!.send(PROTOTYPE_KEYS);
    await exchangeEvents(ws!, { type: 'response.create', model: 'gpt-5.5', input: [] }, 'response.completed');
    ws!.terminate();
    expect(fake.received.at(-1)!.messages[0]).toBe(PROTOTYPE_KEYS);
    await request(s.url).get('/healthz').expect(200);
  });

  it('a tool naming its type, server_url or connector_id twice is refused with tool_not_allowed, whichever copy an upstream would read', async () => {
    const s = await sidecarWith({ ALLOWED_MCP_SERVERS: 'mcp.example.com' });
    const sent = mark();
    for (const tool of [
      '{"type":"mcp","server_url":"https://evil.test/","server_url":"https://mcp.example.com/"}',
      '{"type":"mcp","type":"function","server_url":"https://evil.test/"}',
      '{"type":"mcp","server_url":"https://mcp.example.com/","connector_id":"a","connector_id":"b"}',
    ]) {
      const body = Buffer.from(`{"model":"gpt-5.5","input":"hi","tools":[${tool}]}`);
      expect(await raw(s, '/v1/responses', { 'content-type': 'application/json' }, body), tool).toEqual({ status: 403, code: 'tool_not_allowed' });
    }
    expect(sent()).toBe(0);
  });
});

describe('over the Responses WebSocket, each message read as HTTP bodies are', () => {
  const refusalOf = async (s: Sidecar, send: (ws: import('ws').WebSocket) => void): Promise<{ reply: Record<string, unknown>; upstreamMessages: string[] }> => {
    const { ws } = await openWebSocket(`${s.url.replace('http', 'ws')}/v1/responses`, {});
    await exchangeEvents(ws!, { type: 'response.create', model: 'gpt-5.5', input: [] }, 'response.completed');
    const socket = fake.received.at(-1)!;
    const before = socket.messages.length;
    const reply = new Promise<Record<string, unknown>>((r) => ws!.once('message', (d: Buffer) => r(JSON.parse(d.toString()))));
    send(ws!);
    const answer = await reply;
    ws!.terminate();
    return { reply: answer, upstreamMessages: socket.messages.slice(before) };
  };

  it('a response.create naming an mcp server off the list is refused with tool_not_allowed, guarded or not, and not sent', async () => {
    for (const env of [{}, { MAX_TOKENS: '1000000' }] as Record<string, string>[]) {
      const s = await sidecarWith(env);
      const { reply, upstreamMessages } = await refusalOf(s, (ws) => ws.send(JSON.stringify({ type: 'response.create', model: 'gpt-5.5', tools: [{ type: 'mcp', server_url: 'https://evil.test/' }] })));
      expect(reply).toMatchObject({ type: 'error', status: 403, error: { code: 'tool_not_allowed' } });
      expect(upstreamMessages).toEqual([]);
    }
  });

  it('under ALLOWED_MODELS, a binary message, a duplicate model and a non-strict message are each refused', async () => {
    const s = await sidecarWith({ ALLOWED_MODELS: 'gpt-5*' });
    for (const send of [
      (ws: import('ws').WebSocket) => ws.send(Buffer.from(JSON.stringify({ type: 'response.create', model: 'o3-pro' })), { binary: true }),
      (ws: import('ws').WebSocket) => ws.send('{"type":"response.create","model":"o3-pro","model":"gpt-5.5"}'),
      (ws: import('ws').WebSocket) => ws.send('\ufeff{"type":"response.create","model":"o3-pro"}'),
      (ws: import('ws').WebSocket) => ws.send('{"type":"response.create","response":{"model":"o3-pro"}}'),
      // One binary message in three fragments, the model split across them.
      (ws: import('ws').WebSocket) => {
        const text = Buffer.from(JSON.stringify({ type: 'response.create', model: 'o3-pro' }));
        ws.send(text.subarray(0, 20), { binary: true, fin: false });
        ws.send(text.subarray(20, 33), { binary: true, fin: false });
        ws.send(text.subarray(33), { binary: true, fin: true });
      },
    ]) {
      const { reply, upstreamMessages } = await refusalOf(s, send);
      expect(reply).toMatchObject({ type: 'error', status: 403, error: { code: 'model_not_allowed' } });
      expect(upstreamMessages).toEqual([]);
    }
  });

  it('guarded, the Realtime WebSocket is refused unless ALLOWED_ROUTES names realtime', async () => {
    const guarded = await sidecarWith({ MAX_TOKENS: '1000000' });
    const { refused } = await openWebSocket(`${guarded.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime`, {});
    expect(refused?.status).toBe(403);
    expect(JSON.parse(refused!.body).error.code).toBe('route_not_allowed');
  });
});

describe('the body reader', () => {
  /** JSON-ish bytes from pieces that a lenient and a strict parser read differently. */
  const piece = fc.constantFrom('{', '}', '[', ']', ',', ':', '"model"', '"gpt-5.5"', '"o3-pro"', '"input"', '"x"', '1', 'NaN', 'null', 'true', ' ', '\ufeff', '"\\u006dodel"', '"mo', 'del"', '\\', '\u00e9');
  it('for any bytes: refused, or it saw every model JSON.parse (last wins) and a first-wins reading would see', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(piece, { maxLength: 14 }), async (pieces) => {
        const text = pieces.join('');
        const bytes = Buffer.from(text);
        const scan = await scanBody(new HeldBody([bytes], bytes.length), undefined, 1 << 20);
        if (scan instanceof ScanError) return;
        // Accepted: JSON.parse must read it too, as an object.
        const parsed = JSON.parse(text) as Record<string, unknown>;
        expect(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)).toBe(true);
        if ('model' in parsed) expect(scan.models).toContainEqual(parsed.model);
        // First wins: the first top-level "model" key's value.
        const first = /^\{\s*"(?:model|\\u006dodel)"\s*:\s*("[^"]*")/.exec(text);
        if (first) expect(scan.models).toContainEqual(JSON.parse(first[1]!));
      }),
      { numRuns: 3000 },
    );
  });
});
