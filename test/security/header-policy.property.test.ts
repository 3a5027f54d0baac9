import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CREDENTIAL_HEADERS, FORWARDING_HEADERS, HOP_BY_HOP_HEADERS, upstreamRequestHeaders } from '../../src/core/headers.js';
import { PROVIDERS } from '../../src/providers/index.js';
import { openai } from '../../src/providers/openai.js';

const KEY = 'sk-real-key';

/** A header name in random case: a dropped one, or any token. */
const dropped = [...CREDENTIAL_HEADERS, ...FORWARDING_HEADERS, ...HOP_BY_HOP_HEADERS, 'x-forwarded-for', 'x-forwarded-proto', 'x-request-id'];
const randomCase = (name: string) =>
  fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).map((up) => [...name].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(''));
const name = fc.oneof(fc.constantFrom(...dropped).chain(randomCase), fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,20}$/));
const value = fc.stringMatching(/^[\x21-\x7e][\x20-\x7e]{0,30}$/);

const isDropped = (n: string, listed: Set<string>): boolean => {
  const l = n.toLowerCase();
  return dropped.includes(l) || l.startsWith('x-forwarded-') || listed.has(l);
};

describe('header policy, property-based', () => {
  it('the upstream sees exactly the allowed caller headers, in order, plus the key and the id', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(name, value), { maxLength: 30 }), fc.stringMatching(/^[a-z0-9-]{1,36}$/), (pairs, id) => {
        const raw = pairs.flat();
        const listed = new Set<string>();
        for (const [n, v] of pairs) if (n.toLowerCase() === 'connection') for (const t of v.split(',')) listed.add(t.trim().toLowerCase());
        const expected = pairs.filter(([n]) => !isDropped(n, listed)).flat();
        const out = upstreamRequestHeaders(raw, id, openai.credential(KEY, raw));
        expect(out).toEqual([...expected, 'authorization', `Bearer ${KEY}`, 'x-request-id', id]);
      }),
      { numRuns: 500 },
    );
  });

  it.each(PROVIDERS.map((p) => [p.name, p] as const))(
    'on the %s port, whatever credentials the caller sends, the upstream gets exactly one: its own provider key',
    (_name, provider) => {
      // The first pair a provider adds carries its key: Authorization for OpenAI, x-api-key for Anthropic.
      const [header, keyValue] = provider.credential(KEY, []);
      fc.assert(
        fc.property(fc.array(fc.tuple(name, value), { maxLength: 30 }), (pairs) => {
          const raw = pairs.flat();
          const out = upstreamRequestHeaders(raw, 'id', provider.credential(KEY, raw));
          const sent = out.flatMap((n, i) => (i % 2 === 0 && CREDENTIAL_HEADERS.has(n.toLowerCase()) ? [[n.toLowerCase(), out[i + 1]]] : []));
          expect(sent).toEqual([[header, keyValue]]);
          expect(out.filter((v) => v.includes(KEY))).toHaveLength(1);
        }),
        { numRuns: 300 },
      );
    },
  );
});
