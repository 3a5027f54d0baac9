import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/core/metrics.js';
import { anthropic } from '../../src/providers/anthropic.js';
import { gemini } from '../../src/providers/gemini.js';
import { Ledger } from '../../src/usage/ledger.js';
import { responseUsage } from '../../src/usage/response-usage.js';

const ledger = (): Ledger =>
  new Ledger({ providers: ['anthropic', 'gemini'], maxTokens: null, maxRequests: null, usageLogFile: undefined, metrics: createMetrics(() => 0), logger: pino({ level: 'silent' }) });

/** What one answer, fed as these chunks, is counted as. */
function counted(provider: typeof gemini, contentType: string, chunks: string[], asked?: string) {
  const l = ledger();
  const usage = responseUsage(provider.usage, l.reserve('r', 100, true, provider.name), { 'content-type': contentType }, 1 << 20, asked);
  for (const c of chunks) usage.data(Buffer.from(c));
  usage.finish(true);
  const { models, unknown } = l.snapshot();
  return { models, unknown };
}

describe("the providers' usage readers", () => {
  it('Gemini: an answer that reports no modelVersion is counted under the model the path asked for', () => {
    const body = JSON.stringify({ candidates: [{ finishReason: 'STOP' }], usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 2 } });
    expect(counted(gemini, 'application/json', [body], 'gemini-2.5-flash').models).toEqual({
      'gemini-2.5-flash': { provider: 'gemini', responses: 1, tokens: { input: 3, cached_input: 0, cache_write: 0, output: 2, reasoning: 0, total: 5 } },
    });
  });

  it('Gemini: CRLF events, usage in every chunk, the last one finished: the last counts; without a finishing chunk, unknown', () => {
    const chunk = (n: number, finish: boolean) =>
      `data: ${JSON.stringify({ candidates: [{ content: { role: 'model', parts: [{ text: 'x' }] }, ...(finish ? { finishReason: 'STOP' } : {}) }], usageMetadata: { promptTokenCount: 4, candidatesTokenCount: n, thoughtsTokenCount: 1 }, modelVersion: 'gemini-2.5-pro' })}\r\n\r\n`;
    expect(counted(gemini, 'text/event-stream', [chunk(1, false), chunk(2, false), chunk(3, true)]).models['gemini-2.5-pro']!.tokens).toMatchObject({ input: 4, output: 4, reasoning: 1 });
    expect(counted(gemini, 'text/event-stream', [chunk(1, false), chunk(2, false)])).toMatchObject({ unknown: 1 });
  });

  it('Anthropic: a count that does not parse, or a stream without message_delta, is unknown; absent cache fields are none', () => {
    const start = (usage: object) => `event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { model: 'claude-x', usage } })}\n\n`;
    const delta = (out: unknown) => `event: message_delta\ndata: ${JSON.stringify({ type: 'message_delta', delta: {}, usage: { output_tokens: out } })}\n\n`;
    expect(counted(anthropic, 'text/event-stream', [start({ input_tokens: 7 }), delta(1), delta(9)]).models['claude-x']!.tokens).toEqual({ input: 7, cached_input: 0, cache_write: 0, output: 9, reasoning: 0, total: 16 });
    expect(counted(anthropic, 'text/event-stream', [start({ input_tokens: 7 })])).toMatchObject({ unknown: 1 });
    expect(counted(anthropic, 'text/event-stream', [start({ input_tokens: 7 }), delta('9')])).toMatchObject({ unknown: 1 });
    expect(counted(anthropic, 'text/event-stream', [start({ input_tokens: 7, cache_read_input_tokens: -1 }), delta(1)])).toMatchObject({ unknown: 1 });
    // A text delta that spells the event names is no event: only the events themselves are read.
    const text = `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', delta: { type: 'text_delta', text: '"message_delta" "usage":{"output_tokens":0}' } })}\n\n`;
    expect(counted(anthropic, 'text/event-stream', [start({ input_tokens: 2 }), delta(5), text]).models['claude-x']!.tokens.output).toBe(5);
  });
});
