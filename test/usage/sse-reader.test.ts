import { describe, expect, it } from 'vitest';
import { SseReader } from '../../src/usage/sse-reader.js';
import { readEvent } from '../../src/usage/usage.js';
import { responseEvents } from '../../testkit/fake-upstream.js';

/** A real Responses event stream, as the fake upstream (and OpenAI) writes it, with a multi-byte character in a delta. */
const events = responseEvents('gpt-5.5', ['Hé', 'llo ', 'wörld 🌍']);
const stream = (eol: string): Buffer =>
  Buffer.from(events.map((e) => `event: ${(e as { type: string }).type}${eol}data: ${JSON.stringify(e)}${eol}${eol}`).join('') + `: keep-alive${eol}${eol}`);
const expected = events.map((e) => JSON.stringify(e));

function read(chunks: Buffer[]): string[] {
  const out: string[] = [];
  const reader = new SseReader((d) => out.push(d), 1 << 20);
  for (const c of chunks) reader.write(c);
  return out;
}

describe('SseReader', () => {
  it.each([
    ['\\n', '\n'],
    ['\\r\\n', '\r\n'],
    ['\\r', '\r'],
  ])('reads each event once, with %s line ends, whole, cut at every byte offset, and a byte at a time', (_, eol) => {
    const bytes = stream(eol);
    expect(read([bytes])).toEqual(expected);
    for (let i = 1; i < bytes.length; i++) expect(read([bytes.subarray(0, i), bytes.subarray(i)]), `cut at ${i}`).toEqual(expected);
    expect(read([...bytes].map((b) => Buffer.from([b])))).toEqual(expected);
  });

  it('joins multi-line data with \\n, ignores comments and other fields, and drops an event the stream never ended', () => {
    const out = read([Buffer.from('id: 1\ndata: {"a":\ndata:1}\nretry: 5\n\n: c\ndata-x: no\n\ndata: [DONE]\n\ndata: {"cut":')]);
    expect(out).toEqual(['{"a":\n1}', '[DONE]']);
  });

  it('gives up past its bound rather than hold an endless event', () => {
    const out: string[] = [];
    const reader = new SseReader((d) => out.push(d), 100);
    reader.write(Buffer.from(`data: ${'x'.repeat(200)}`));
    reader.write(Buffer.from('\n\ndata: {}\n\n'));
    expect(reader.overflowed).toBe(true);
    expect(out).toEqual([]);
  });

  it('finds the usage in the terminal event', () => {
    const readings = read([stream('\n')]).map((d) => readEvent(JSON.parse(d))).filter(Boolean);
    expect(readings).toEqual([{ model: 'gpt-5.5', status: 'completed', tokens: { input: 5, cached_input: 0, cache_write: 0, output: 3, reasoning: 0, total: 8 } }]);
  });
});
