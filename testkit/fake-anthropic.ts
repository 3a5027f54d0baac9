/**
 * The Anthropic Messages API as the fake upstream answers it (fake-upstream.ts
 * serves it beside OpenAI's): the event stream Claude Code and the SDK accept,
 * and the JSON message. The usage is chosen per request with the fake's
 * `x-fake` header: input=N, output=N, cache_read=N, cache_write=N.
 */

export interface FakeAnthropicUsage {
  input: number;
  output: number;
  cacheRead: number;
  cacheWrite: number;
}

let ids = 0;

function message(model: string, text: string, u: FakeAnthropicUsage, output: number): Record<string, unknown> {
  return {
    id: `msg_fake${++ids}`,
    type: 'message',
    role: 'assistant',
    model,
    content: text === '' ? [] : [{ type: 'text', text }],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: u.input, cache_creation_input_tokens: u.cacheWrite, cache_read_input_tokens: u.cacheRead, output_tokens: output },
  };
}

/** The whole answer to a non-streaming `POST /v1/messages`. */
export function anthropicMessage(model: string, deltas: string[], u: FakeAnthropicUsage): object {
  return { ...message(model, deltas.join(''), u, u.output), stop_reason: 'end_turn' };
}

/**
 * A Messages stream as the API writes it: message_start (input usage, output
 * 1), a text block, message_delta with the cumulative output, message_stop.
 */
export function messageEvents(model: string, deltas: string[], u: FakeAnthropicUsage): { event: string; data: object }[] {
  return [
    { event: 'message_start', data: { type: 'message_start', message: message(model, '', u, 1) } },
    { event: 'content_block_start', data: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } } },
    { event: 'ping', data: { type: 'ping' } },
    ...deltas.map((text) => ({ event: 'content_block_delta', data: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } } })),
    { event: 'content_block_stop', data: { type: 'content_block_stop', index: 0 } },
    {
      event: 'message_delta',
      data: { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: u.output } },
    },
    { event: 'message_stop', data: { type: 'message_stop' } },
  ];
}

/** Anthropic's error body, as its 4xx and 5xx carry it. */
export function anthropicError(status: number): object {
  const type = status === 401 ? 'authentication_error' : status === 429 ? 'rate_limit_error' : status >= 500 ? 'api_error' : 'invalid_request_error';
  return { type: 'error', error: { type, message: status === 401 ? 'invalid x-api-key' : `Fake upstream error ${status}` } };
}
