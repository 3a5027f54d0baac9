import fc from 'fast-check';
import { request } from 'undici';
import { beforeAll, describe, expect, it } from 'vitest';
import { CREDENTIAL_HEADERS } from '../../src/core/headers.js';
import type { FakeUpstream } from '../../testkit/fake-upstream.js';
import { FAKE_GEMINI_HOST } from '../../testkit/test-ca.js';
import { TEST_ANTHROPIC_KEY, TEST_AZURE_KEY, TEST_GEMINI_KEY, TEST_KEY, type Sidecar } from '../support/sidecar.js';
import { squidRig } from '../support/squid-rig.js';

/**
 * Credentials never cross, through real sockets: whatever credentials and
 * `key` parameters a caller sends to any provider's port (the other
 * providers' keys among them), the upstream receives exactly one credential,
 * its own provider's, and no `key` parameter.
 */
const rig = squidRig();
let fake: FakeUpstream;
let s: Sidecar;
beforeAll(async () => {
  fake = rig.fake;
  s = await rig.sidecarWith({
    GEMINI_API_KEY: TEST_GEMINI_KEY,
    GEMINI_UPSTREAM_URL: `https://${FAKE_GEMINI_HOST}:${fake.port}`,
    AZURE_OPENAI_API_KEY: TEST_AZURE_KEY,
    AZURE_OPENAI_ENDPOINT: `https://azure.openai.test:${fake.port}`,
  });
});

const OWN = {
  openai: { header: 'authorization', value: `Bearer ${TEST_KEY}`, path: '/v1/models' },
  anthropic: { header: 'x-api-key', value: TEST_ANTHROPIC_KEY, path: '/v1/models' },
  gemini: { header: 'x-goog-api-key', value: TEST_GEMINI_KEY, path: '/v1beta/models' },
  azure: { header: 'api-key', value: TEST_AZURE_KEY, path: '/openai/v1/models' },
} as const;

const randomCase = (name: string) =>
  fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).map((up) => [...name].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(''));
const credential = fc.tuple(
  fc.constantFrom(...CREDENTIAL_HEADERS).chain(randomCase),
  fc.constantFrom('agent-token', `Bearer ${TEST_KEY}`, TEST_ANTHROPIC_KEY, TEST_GEMINI_KEY, TEST_AZURE_KEY, 'Bearer x', 'c=1'),
);
// `key`, escaped or in another case, with a value or none; other parameters around it.
const keyParam = fc.constantFrom('key=agent', 'KEY=a', '%6Bey=b', 'k%65y', 'Key=', 'key=x&key=y');
const other = fc.constantFrom('limit=5', 'beta=true', 'x=%6B');

describe.each(['openai', 'anthropic', 'gemini', 'azure'] as const)('on the %s port', (provider) => {
  it('the upstream gets exactly its own provider key, once, and no key parameter', async () => {
    const url = s.urls[provider]!;
    await fc.assert(
      fc.asyncProperty(fc.array(credential, { maxLength: 8 }), fc.array(fc.oneof(keyParam, other), { maxLength: 4 }), async (headers, params) => {
        const before = fake.received.length;
        const query = params.length > 0 ? `?${params.join('&')}` : '';
        const res = await request(`${url}${OWN[provider].path}${query}`, { headers: headers.flat() });
        await res.body.text();
        expect(res.statusCode).toBe(200);
        const [received] = fake.received.slice(before);
        const sent = received!.rawHeaders.flatMap((n, i) => (i % 2 === 0 && CREDENTIAL_HEADERS.has(n.toLowerCase()) ? [[n.toLowerCase(), received!.rawHeaders[i + 1]]] : []));
        expect(sent).toEqual([[OWN[provider].header, OWN[provider].value]]);
        const upstreamQuery = new URLSearchParams(received!.path.split('?')[1] ?? '');
        expect([...upstreamQuery.keys()].map((k) => k.toLowerCase())).not.toContain('key');
        // Every other parameter goes as sent, in order (none of them starts as `key` does).
        const kept = params.filter((p) => !/^(k|%6b)/i.test(p));
        expect(received!.path).toBe(`${OWN[provider].path}${kept.length > 0 ? `?${kept.join('&')}` : ''}`);
      }),
      { numRuns: 60 },
    );
  });
});
