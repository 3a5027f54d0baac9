/**
 * What the upstream says a response cost, read from its own objects: the
 * Responses API's `usage` (input_tokens, output_tokens and their details) and
 * Chat Completions', Completions' and Embeddings' (prompt_tokens,
 * completion_tokens). Nothing is estimated: no usage, no tokens.
 */

export interface Tokens {
  /** All input tokens, cached included. */
  input: number;
  cached_input: number;
  /** Input tokens written to a prompt cache (Anthropic's cache_creation_input_tokens; 0 elsewhere). */
  cache_write: number;
  /** All output tokens, reasoning included. */
  output: number;
  reasoning: number;
  /** input + output */
  total: number;
}

export type ResponseStatus = 'completed' | 'incomplete' | 'failed' | 'unknown';

/** One model response as counted: tokens null when its usage could not be read. */
export interface Reading {
  model: string;
  status: ResponseStatus;
  tokens: Tokens | null;
}

export const NO_TOKENS: Readonly<Tokens> = Object.freeze({ input: 0, cached_input: 0, cache_write: 0, output: 0, reasoning: 0, total: 0 });
export const UNKNOWN_MODEL = 'unknown';

/** A response whose usage could not be read, under the model it named, if any. */
export const unknownReading = (model = UNKNOWN_MODEL): Reading => ({ model, status: 'unknown', tokens: null });

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const count = (v: unknown): number => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : 0);
const modelOf = (o: Obj): string => (typeof o.model === 'string' && o.model !== '' ? o.model : UNKNOWN_MODEL);

// A token count as the APIs write it; anything else is a usage that does not parse.
export const exact = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);
/** A count an API leaves out when there is none (a cache unused, no thoughts): absent or null is 0, anything else must parse. */
export const optional = (v: unknown): number | null => (v === undefined || v === null ? 0 : exact(v));

/** One event's `data` as a JSON object, or undefined when it is none ([DONE], a broken event). */
export function eventObject(data: string): Obj | undefined {
  try {
    const value: unknown = JSON.parse(data);
    return isObj(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Tokens from a `usage` object of any of the APIs, or null when it is not one,
 * or its input or output count does not parse: unknown, never zero.
 */
export function tokensOf(usage: unknown): Tokens | null {
  if (!isObj(usage)) return null;
  const details = (key: string): Obj => (isObj(usage[key]) ? usage[key] : {});
  let input: number | null;
  let output: number | null;
  let cached: number;
  let reasoning: number;
  if ('input_tokens' in usage || 'output_tokens' in usage) {
    input = exact(usage.input_tokens);
    output = exact(usage.output_tokens);
    cached = count(details('input_tokens_details').cached_tokens);
    reasoning = count(details('output_tokens_details').reasoning_tokens);
  } else if ('prompt_tokens' in usage || 'completion_tokens' in usage) {
    input = exact(usage.prompt_tokens);
    output = 'completion_tokens' in usage ? exact(usage.completion_tokens) : 0; // absent for embeddings
    cached = count(details('prompt_tokens_details').cached_tokens);
    reasoning = count(details('completion_tokens_details').reasoning_tokens);
  } else {
    return null;
  }
  if (input === null || output === null) return null;
  return { input, cached_input: cached, cache_write: 0, output, reasoning, total: input + output };
}

/** A provider's usage reader: a whole JSON answer, or an event stream read event by event. */
export interface UsageReader {
  body(body: unknown): Reading | null;
  /** A fresh reader for one stream. */
  stream(): StreamUsage;
}

export interface StreamUsage {
  /** One event's `data`, as text; most are deltas, skipped without parsing. */
  event(data: string): void;
  /** What the stream reported, once it ended; null when it reported no usage. */
  reading(): Reading | null;
}

const TERMINAL: Record<string, ResponseStatus> = {
  'response.completed': 'completed',
  'response.incomplete': 'incomplete',
  'response.failed': 'failed',
};

function reading(model: string, status: ResponseStatus, usage: unknown): Reading {
  const tokens = tokensOf(usage);
  return tokens ? { model, status, tokens } : unknownReading(model);
}

const RESPONSE_STATUS = new Set<string>(['completed', 'incomplete', 'failed']);

/** A whole JSON response body: a Response, a chat completion, a completion, embeddings. */
export function readBody(body: unknown): Reading | null {
  if (!isObj(body)) return null;
  const status = body.object === 'response' && RESPONSE_STATUS.has(String(body.status)) ? (body.status as ResponseStatus) : 'completed';
  return reading(modelOf(body), status, body.usage);
}

/**
 * One event of a stream (an SSE `data:` or a WebSocket message): the Responses
 * API's terminal events, or a chat/completions chunk that carries `usage`.
 */
export function readEvent(event: unknown): Reading | null {
  if (!isObj(event)) return null;
  const status = typeof event.type === 'string' ? TERMINAL[event.type] : undefined;
  if (status) {
    const response = isObj(event.response) ? event.response : {};
    return reading(modelOf(response), status, response.usage);
  }
  if (isObj(event.usage)) return reading(modelOf(event), 'completed', event.usage);
  return null;
}

/** Cheap pre-check on an event's raw text, so deltas are never parsed: only what may hold usage or end a response. */
export const mayHoldUsage = (text: string): boolean =>
  text.includes('"usage"') || text.includes('"response.completed"') || text.includes('"response.incomplete"') || text.includes('"response.failed"');
