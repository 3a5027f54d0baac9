import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/core/errors.js';
import { routeLabel, routeOf } from '../../src/policy/routes.js';
import { openai } from '../../src/providers/openai.js';
import { requestTarget } from '../../src/policy/target.js';
import { redactKey, cleanErrorBody } from '../../src/core/redact.js';
import { gzipSync } from 'node:zlib';

const upstreamPath = (target: string, base: string): string => {
  const t = requestTarget(target, base);
  return t.path + t.query;
};

describe('the request target in normal form', () => {
  it.each([
    ['/v1/responses', '/v1/responses'],
    ['/responses', '/v1/responses'],
    ['/chat/completions?x=1', '/v1/chat/completions?x=1'],
    ['/v1/models?client_version=0.169.0', '/v1/models?client_version=0.169.0'],
    ['/v1', '/v1'],
    ['/v10/x', '/v1/v10/x'],
    ['/v1/files/file-abc/content', '/v1/files/file-abc/content'],
    ['/v1/x?next=/../y', '/v1/x?next=/../y'],
    ['/v1/me@evil.test', '/v1/me@evil.test'],
    // Spelled another way, the same route: what the upstream would read.
    ['/v1/%72esponses', '/v1/responses'],
    ['/v1//responses', '/v1/responses'],
    ['/v1/responses/', '/v1/responses'],
    ['/v1/chat%2Dcompletions', '/v1/chat-completions'],
    ['/%76%31/responses', '/v1/responses'],
    ['/v1/files/a%3ab', '/v1/files/a%3Ab'],
  ])('%s → %s', (target, path) => expect(upstreamPath(target, '/v1')).toBe(path));

  it.each([
    ['/v1/models?key=AIzaCallerKey', '/v1/models'],
    ['/v1/models?a=1&key=x&b=2', '/v1/models?a=1&b=2'],
    ['/v1/models?%6Bey=x&%6b%65%79=y&key&a=1', '/v1/models?a=1'],
    ['/v1/models?keys=1&KEY=4&akey=2&key+=3&Key', '/v1/models?keys=1&akey=2&key+=3'],
    ['/v1/models?k%ey=1', '/v1/models?k%ey=1'],
  ])('a key query parameter is a credential: %s → %s', (target, path) => expect(upstreamPath(target, '/v1')).toBe(path));

  it('leaves paths alone without a base path', () => expect(upstreamPath('/responses', '')).toBe('/responses'));

  it.each([
    'http://evil.test/v1/models',
    'evil.test:443',
    '*',
    '//evil.test/v1/models',
    '/v1/../admin',
    '/v1/..',
    '/..%2f..%2fadmin',
    '/v1/%2e%2e/admin',
    '/v1/%2E%2E%2Fadmin',
    '/v1/./models',
    '/v1\\..\\admin',
    '/v1/responses%2fcompact',
    '/v1/responses%5Ccompact',
    '/v1/%2e/responses',
    '',
  ])('refuses %j as bad_request_target', (target) => {
    expect(() => upstreamPath(target, '/v1')).toThrow(ProxyError);
    try {
      upstreamPath(target, '/v1');
    } catch (err) {
      expect((err as ProxyError).code).toBe('bad_request_target');
      expect((err as ProxyError).status).toBe(400);
    }
  });
});

describe('route labels', () => {
  it.each([
    ['/v1/responses', '/v1/responses'],
    ['/v1/responses/resp_1/cancel', '/v1/responses'],
    ['/v1/chat/completions?stream=true', '/v1/chat/completions'],
    ['/v1/audio/transcriptions', '/v1/audio'],
    ['/v1/realtime/client_secrets', '/v1/realtime/client_secrets'],
    ['/v1/responsesX', 'other'],
    ['/v1/whatever-new', 'other'],
    ['/v2/responses', 'other'],
  ])('%s → %s', (path, label) => expect(routeLabel(routeOf(openai.families, 'POST', requestTarget(path, '/v1').segments), '/v1')).toBe(label));
});

describe('redactKey', () => {
  const key = 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789WXYZ';
  it('replaces the whole key and the masks OpenAI writes', () => {
    const masked = `${key.slice(0, 8)}${'*'.repeat(30)}${key.slice(-4)}`;
    const text = `key ${key} and "Incorrect API key provided: ${masked}." and sk-proj-****WXYZ and ****WXYZ`;
    const out = redactKey(text, key);
    expect(out).toBe('key [redacted] and "Incorrect API key provided: [redacted]." and [redacted] and [redacted]');
    expect(out).not.toContain('WXYZ');
  });

  it('leaves stars that are no mask of the key alone', () => {
    expect(redactKey('**bold** and sk-other****1234 and ***', key)).toBe('**bold** and sk-other****1234 and ***');
  });

  it('decodes a gzip error body before redacting, and withholds what it cannot decode', () => {
    const clean = cleanErrorBody(gzipSync(`{"m":"${key}"}`), 'gzip', key, 401);
    expect(clean).toEqual({ body: Buffer.from('{"m":"[redacted]"}'), replaced: false });
    const withheld = cleanErrorBody(Buffer.from(key), 'zstd-unknown', key, 401);
    expect(withheld.replaced).toBe(true);
    expect(withheld.body.toString()).not.toContain(key.slice(-6));
  });
});
