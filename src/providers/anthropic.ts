import type { ErrorShape } from '../core/errors.js';
import { get, post, type Family } from '../policy/routes.js';
import { eventObject, exact, isObj, optional, unknownReading, type Obj, type Reading, type Tokens } from '../usage/usage.js';
import type { Provider } from './provider.js';

/** Checked in order: message batches sit under `messages` and answer later, elsewhere: not countable. */
const FAMILIES: readonly Family[] = [
  { name: 'batches', prefix: ['messages', 'batches'] },
  // count_tokens costs nothing and answers no model output: a read, not a model call.
  // Its `mcp_servers` are servers the upstream connects to: read always, guarded or not.
  { name: 'messages', prefix: ['messages'], hostedTools: true, guardedShapes: [post([], true), post(['count_tokens'])] },
  { name: 'models', prefix: ['models'], guardedShapes: [get([]), get(['*'])] },
  { name: 'files', prefix: ['files'], multipart: true },
  ...['complete', 'skills', 'organizations'].map((name) => ({ name, prefix: [name] })),
];

/**
 * Messages `usage`: input counts the cache reads and writes, which the API
 * reports beside `input_tokens`, not in it.
 */
export function anthropicTokens(usage: unknown, output: unknown): Tokens | null {
  if (!isObj(usage)) return null;
  const fresh = exact(usage.input_tokens);
  const read = optional(usage.cache_read_input_tokens);
  const written = optional(usage.cache_creation_input_tokens);
  const out = exact(output);
  if (fresh === null || read === null || written === null || out === null) return null;
  const input = fresh + read + written;
  return { input, cached_input: read, cache_write: written, output: out, reasoning: 0, total: input + out };
}

const modelOf = (o: Obj): string | undefined => (typeof o.model === 'string' && o.model !== '' ? o.model : undefined);

const reading = (model: string | undefined, tokens: Tokens | null): Reading =>
  tokens ? { model: model ?? 'unknown', status: 'completed', tokens } : unknownReading(model);

/** The two events that carry usage; every other (the content deltas) is skipped unparsed. */
const mayHoldUsage = (data: string): boolean => data.includes('"message_start"') || data.includes('"message_delta"');

const ERROR_TYPES: Record<number, string> = { 402: 'billing_error', 403: 'permission_error', 413: 'request_too_large', 503: 'overloaded_error' };

/**
 * Anthropic's error shape, the contract's code beside its type. Every refusal
 * says `x-should-retry: false`, which Claude Code and the SDKs obey; the
 * budget is 402 `billing_error`, on which they stop at once (a 429 they may
 * retry, a 400 Claude Code retried five times).
 */
const errors: ErrorShape = (err) => {
  const status = err.code === 'budget_exceeded' ? 402 : err.status;
  const type = ERROR_TYPES[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
  return {
    status,
    body: JSON.stringify({ type: 'error', error: { type, message: err.message, code: err.code } }),
    headers: { 'x-should-retry': 'false' },
  };
};

/** Anthropic: the Messages API, JSON and server-sent events. */
export const anthropic: Provider = {
  name: 'anthropic',
  settings: { key: 'ANTHROPIC_API_KEY', port: 'ANTHROPIC_PORT', upstream: 'ANTHROPIC_UPSTREAM_URL' },
  defaults: { port: 10001, upstream: 'https://api.anthropic.com', basePath: '/v1' },
  families: FAMILIES,
  guardedRoutes: ['messages', 'models'],
  credential: (key, rawHeaders) => {
    const out = ['x-api-key', key];
    // The API refuses a request without a version; the caller's own, when sent, is the one its client speaks.
    const versioned = rawHeaders.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'anthropic-version');
    if (!versioned) out.push('anthropic-version', '2023-06-01');
    return out;
  },
  usage: {
    body: (body) => (isObj(body) && isObj(body.usage) ? reading(modelOf(body), anthropicTokens(body.usage, body.usage.output_tokens)) : null),
    stream: () => {
      // message_start brings the input side; each message_delta the output so far (cumulative): the last one wins.
      let start: Obj | undefined;
      let model: string | undefined;
      let output: unknown;
      return {
        event: (data) => {
          const event = mayHoldUsage(data) ? eventObject(data) : undefined;
          if (!event) return;
          if (event.type === 'message_start' && start === undefined && isObj(event.message)) {
            start = isObj(event.message.usage) ? event.message.usage : {};
            model = modelOf(event.message);
          } else if (event.type === 'message_delta' && isObj(event.usage)) {
            output = event.usage.output_tokens;
          }
        },
        // A stream cut before its first message_delta reported no output: unknown, charged its reservation.
        reading: () => (start === undefined || output === undefined ? null : reading(model, anthropicTokens(start, output))),
      };
    },
  },
  errors,
};
