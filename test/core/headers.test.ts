import { describe, expect, it } from 'vitest';
import { downstreamResponseHeaders, isSaneRequestId, upstreamRequestHeaders } from '../../src/core/headers.js';

const KEY = 'sk-real';
const pairs = (flat: string[]): [string, string][] => {
  const out: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
};
const names = (flat: string[]): string[] => pairs(flat).map(([n]) => n.toLowerCase());

const BEARER = ['authorization', `Bearer ${KEY}`];

describe('upstreamRequestHeaders', () => {
  it('drops every caller credential, in any spelling, and sets only the real key', () => {
    const out = upstreamRequestHeaders(
      ['Authorization', 'Bearer agent', 'AUTHORIZATION', 'Basic x', 'Proxy-Authorization', 'Basic y', 'api-key', 'a', 'X-Api-Key', 'b', 'Cookie', 'c=1'],
      'id-1',
      BEARER,
    );
    expect(pairs(out)).toEqual([
      ['authorization', 'Bearer sk-real'],
      ['x-request-id', 'id-1'],
    ]);
  });

  it('drops forwarding hints, hop-by-hop headers and those named in Connection', () => {
    const out = upstreamRequestHeaders(
      [
        'Host', 'sidecar:10000', 'Forwarded', 'for=1.2.3.4', 'X-Forwarded-For', '1.2.3.4', 'X-Forwarded-Host', 'evil',
        'Via', '1.1 x', 'X-Real-IP', '1.2.3.4', 'Connection', 'keep-alive, X-Secret-Hop', 'Keep-Alive', 'timeout=5',
        'Transfer-Encoding', 'chunked', 'TE', 'trailers', 'Upgrade', 'websocket', 'Proxy-Connection', 'keep-alive',
        'Expect', '100-continue', 'X-Secret-Hop', '1', 'X-Request-Id', 'caller-id',
      ],
      'id-2',
      BEARER,
    );
    expect(names(out)).toEqual(['authorization', 'x-request-id']);
    expect(out.at(-1)).toBe('id-2');
  });

  it("passes every other header with the caller's spelling and duplicates", () => {
    const raw = [
      'OpenAI-Beta', 'responses_websockets=2026-02-06', 'originator', 'codex_exec', 'session_id', 's1', 'session-id', 's2',
      'x-client-request-id', 'c1', 'Content-Type', 'application/json', 'Content-Length', '12', 'x-codex-turn-metadata', '{"a":1}',
      'Sec-WebSocket-Key', 'k', 'Sec-WebSocket-Version', '13', 'Sec-WebSocket-Extensions', 'permessage-deflate',
      'Accept', 'text/event-stream', 'X-Dup', '1', 'X-Dup', '2',
    ];
    const out = upstreamRequestHeaders(raw, 'id', BEARER);
    expect(out.slice(0, raw.length)).toEqual(raw);
  });
});

describe('downstreamResponseHeaders', () => {
  it('keeps the upstream id apart, sets ours, and drops hop-by-hop', () => {
    const out = downstreamResponseHeaders(
      { 'content-type': 'text/event-stream', 'x-request-id': 'req_up', connection: 'keep-alive, x-hop', 'keep-alive': 'timeout=5', 'transfer-encoding': 'chunked', 'x-hop': '1', 'set-cookie': ['a=1', 'b=2'] },
      'mine',
    );
    expect(out).toEqual({ 'content-type': 'text/event-stream', 'x-upstream-request-id': 'req_up', 'set-cookie': ['a=1', 'b=2'], 'x-request-id': 'mine' });
  });
});

describe('isSaneRequestId', () => {
  it.each([
    ['abc-123', true],
    ['req_01J:9.x', true],
    ['', false],
    ['a b', false],
    ['x'.repeat(129), false],
    ['a\r\nX-Injected: 1', false],
    [undefined, false],
    ['run-sk-real-1', false],
  ])('%j → %s', (id, ok) => expect(isSaneRequestId(id, KEY)).toBe(ok));
});
