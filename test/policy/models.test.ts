import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/core/errors.js';
import { ModelPolicy } from '../../src/policy/models.js';

/** What a `*` glob means, as a regular expression: the reference the matcher is checked against. */
const reference = (glob: string, name: string): boolean =>
  new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\/-]/g, '\\$&')).join('.*')}$`, 's').test(name);

describe('ALLOWED_MODELS globs', () => {
  it('matches whole names, case-sensitively, with * for any run of characters', () => {
    const p = new ModelPolicy(['gpt-5*', 'o4-mini', '*-nano', 'a*b*c']);
    for (const name of ['gpt-5', 'gpt-5.5', 'gpt-5-mini', 'o4-mini', 'gpt-4.1-nano', 'abc', 'a-b-c', 'aXbYbZc']) expect(p.allows(name), name).toBe(true);
    for (const name of ['GPT-5', 'o4-mini-x', 'xo4-mini', 'gpt-4o', 'ab', 'acb', 'a-c-b', '']) expect(p.allows(name), name).toBe(false);
  });

  it('agrees with the regular expression a glob stands for, on any glob and name', () => {
    const chars = fc.constantFrom('a', 'b', '-', '.', '*');
    fc.assert(
      fc.property(fc.string({ unit: chars, maxLength: 8 }), fc.string({ unit: fc.constantFrom('a', 'b', '-', '.'), minLength: 1, maxLength: 12 }), (glob, name) => {
        expect(new ModelPolicy([glob]).allows(name)).toBe(reference(glob, name));
      }),
      { numRuns: 2000 },
    );
  });

  it('never matches a name over 256 characters or outside printable ASCII, even for *', () => {
    const p = new ModelPolicy(['*']);
    expect(p.allows('a'.repeat(256))).toBe(true);
    for (const name of ['a'.repeat(257), 'gpt-5\u00a0', 'gpt 5', 'gpt-5\n', 'gpt-\u0435', '']) expect(p.allows(name), JSON.stringify(name)).toBe(false);
  });

  it('refuses a 100 000-character name against globs that made a backtracking regex take seconds, at once', () => {
    const p = new ModelPolicy(['*a*a*a*a*a*a*a*a*b', 'gpt-*-*-*-*-*-x']);
    expect(() => p.check({ model: 'a'.repeat(100_000) })).toThrow(ProxyError);
    expect(() => p.check({ model: `gpt-${'-'.repeat(100_000)}` })).toThrow(ProxyError);
    // Linear in the name, at the longest a name may be: 256 characters of near-misses.
    expect(p.allows('a'.repeat(256))).toBe(false);
    expect(p.allows(`${'a'.repeat(255)}b`)).toBe(true);
  });
});
