import { describe, expect, it } from 'vitest';
import { readBody, readEvent, tokensOf } from '../../src/usage/usage.js';

describe('tokensOf', () => {
  it('reads the Responses API usage, cached and reasoning included in input and output', () => {
    expect(tokensOf({ input_tokens: 100, input_tokens_details: { cached_tokens: 40 }, output_tokens: 30, output_tokens_details: { reasoning_tokens: 20 }, total_tokens: 130 })).toEqual({
      input: 100,
      cached_input: 40,
      cache_write: 0,
      output: 30,
      reasoning: 20,
      total: 130,
    });
  });

  it('reads Chat Completions and Completions usage, and Embeddings (no completion tokens)', () => {
    expect(tokensOf({ prompt_tokens: 12, completion_tokens: 7, total_tokens: 19, prompt_tokens_details: { cached_tokens: 2 }, completion_tokens_details: { reasoning_tokens: 3 } })).toEqual({
      input: 12,
      cached_input: 2,
      cache_write: 0,
      output: 7,
      reasoning: 3,
      total: 19,
    });
    expect(tokensOf({ prompt_tokens: 8, total_tokens: 8 })).toEqual({ input: 8, cached_input: 0, cache_write: 0, output: 0, reasoning: 0, total: 8 });
  });

  it('reads nothing from what is not a usage object, nor from counts that do not parse: unknown, never zero', () => {
    expect(tokensOf(null)).toBeNull();
    expect(tokensOf({ tokens: 5 })).toBeNull();
    expect(tokensOf({ input_tokens: -5, output_tokens: 2.5 })).toBeNull();
    expect(tokensOf({ input_tokens: null, output_tokens: 3 })).toBeNull();
    expect(tokensOf({ input_tokens: 3 })).toBeNull();
    expect(tokensOf({ prompt_tokens: '9', completion_tokens: 1 })).toBeNull();
    // Embeddings report no completion tokens at all: that is 0, not unknown.
    expect(tokensOf({ prompt_tokens: 9, total_tokens: 9 })).toEqual({ input: 9, cached_input: 0, cache_write: 0, output: 0, reasoning: 0, total: 9 });
  });
});

describe('readBody and readEvent', () => {
  const usage = { input_tokens: 3, output_tokens: 4 };
  it('takes model and status from a Response, and counts a response with no usage as unknown', () => {
    expect(readBody({ object: 'response', model: 'gpt-5.5', status: 'incomplete', usage })).toMatchObject({ model: 'gpt-5.5', status: 'incomplete', tokens: { total: 7 } });
    expect(readBody({ object: 'chat.completion', model: 'gpt-4o', usage: { prompt_tokens: 1, completion_tokens: 1 } })).toMatchObject({ model: 'gpt-4o', status: 'completed' });
    expect(readBody({ object: 'response', model: 'gpt-5.5', status: 'completed', usage: null })).toEqual({ model: 'gpt-5.5', status: 'unknown', tokens: null });
    expect(readBody({ object: 'list', data: [] })).toEqual({ model: 'unknown', status: 'unknown', tokens: null });
  });

  it('reads the three terminal Responses events and a chat chunk with usage; nothing else', () => {
    for (const [type, status] of [
      ['response.completed', 'completed'],
      ['response.incomplete', 'incomplete'],
      ['response.failed', 'failed'],
    ]) {
      expect(readEvent({ type, response: { model: 'm', usage } })).toMatchObject({ model: 'm', status });
    }
    expect(readEvent({ object: 'chat.completion.chunk', model: 'gpt-4o', choices: [], usage: { prompt_tokens: 2, completion_tokens: 3 } })).toMatchObject({ tokens: { total: 5 } });
    expect(readEvent({ type: 'response.output_text.delta', delta: 'usage' })).toBeNull();
    expect(readEvent({ object: 'chat.completion.chunk', usage: null })).toBeNull();
    expect(readEvent({ type: 'response.completed', response: {} })).toEqual({ model: 'unknown', status: 'unknown', tokens: null });
  });
});
