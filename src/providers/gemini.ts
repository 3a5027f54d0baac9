import type { ErrorShape } from '../core/errors.js';
import { get, post, type Family } from '../policy/routes.js';
import { eventObject, exact, isObj, optional, unknownReading, type Obj, type Reading, type Tokens } from '../usage/usage.js';
import type { Provider } from './provider.js';

// Paths go as sent (`/v1beta/…`, `/v1/…`): `*` is the API version.
const MODELS = ['*', 'models'];

/** Checked in order: a model's custom methods before the model reads, which share their prefix. */
const FAMILIES: readonly Family[] = [
  { name: 'generate', prefix: MODELS, label: 'models:generate', methods: ['generateContent', 'streamGenerateContent'], guardedShapes: [post(['*'], true)] },
  { name: 'embed', prefix: MODELS, label: 'models:embed', methods: ['embedContent', 'batchEmbedContents'], guardedShapes: [post(['*'], true)] },
  // Free, and no model output: a read, not a model call.
  { name: 'count_tokens', prefix: MODELS, label: 'models:countTokens', methods: ['countTokens'], guardedShapes: [post(['*'])] },
  // Another method of a model (batchGenerateContent, predict, …) is no shape here: refused when guarded.
  { name: 'models', prefix: MODELS, guardedShapes: [get([]), get(['*'])] },
  { name: 'batches', prefix: ['*', 'batches'] },
  { name: 'cached_contents', prefix: ['*', 'cachedContents'] },
  { name: 'files', prefix: ['*', 'files'], multipart: true },
  { name: 'files', prefix: ['upload', '*', 'files'], multipart: true },
  { name: 'tuned_models', prefix: ['*', 'tunedModels'] },
  // The Live API's WebSocket: its turns are no requests the budget can hold.
  { name: 'live', prefix: ['ws'] },
];

/** `usageMetadata`: input counts tool-use prompts, output counts thoughts (reasoning). */
export function geminiTokens(usage: unknown): Tokens | null {
  if (!isObj(usage)) return null;
  const prompt = exact(usage.promptTokenCount);
  const toolPrompt = optional(usage.toolUsePromptTokenCount);
  const cached = optional(usage.cachedContentTokenCount);
  const candidates = optional(usage.candidatesTokenCount);
  const thoughts = optional(usage.thoughtsTokenCount);
  if (prompt === null || toolPrompt === null || cached === null || candidates === null || thoughts === null) return null;
  const input = prompt + toolPrompt;
  const output = candidates + thoughts;
  return { input, cached_input: cached, cache_write: 0, output, reasoning: thoughts, total: input + output };
}

const modelOf = (o: Obj): string | undefined => (typeof o.modelVersion === 'string' && o.modelVersion !== '' ? o.modelVersion : undefined);
const finished = (o: Obj): boolean => Array.isArray(o.candidates) && o.candidates.some((c) => isObj(c) && typeof c.finishReason === 'string');

/** One GenerateContentResponse, or a streamed array of them (streamGenerateContent without alt=sse): the last one's usage. */
function readBody(body: unknown): Reading | null {
  const last = Array.isArray(body) ? body.at(-1) : body;
  if (!isObj(last)) return null;
  const tokens = geminiTokens(last.usageMetadata);
  return tokens ? { model: modelOf(last) ?? 'unknown', status: 'completed', tokens } : null;
}

// A status's Google name, for refusals in Google's error shape.
const STATUS: Record<number, string> = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 502: 'UNAVAILABLE', 503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED' };

/**
 * google.rpc's error shape, the contract's code as the ErrorInfo reason. The
 * budget is 400 FAILED_PRECONDITION: the Gemini CLI retries any 429 for
 * minutes, and stops after one request on a 400.
 */
const errors: ErrorShape = (err) => {
  const budget = err.code === 'budget_exceeded';
  const status = budget ? 400 : err.status;
  const name = budget ? 'FAILED_PRECONDITION' : (STATUS[status] ?? (status >= 500 ? 'INTERNAL' : 'INVALID_ARGUMENT'));
  const details = [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: err.code, domain: 'api-proxy' }];
  return { status, body: JSON.stringify({ error: { code: status, message: err.message, status: name, details } }), headers: {} };
};

/** Google's Gemini API: generateContent, its streams (SSE with alt=sse, else a JSON array), embeddings. */
export const gemini: Provider = {
  name: 'gemini',
  settings: { key: 'GEMINI_API_KEY', port: 'GEMINI_PORT', upstream: 'GEMINI_UPSTREAM_URL' },
  defaults: { port: 10003, upstream: 'https://generativelanguage.googleapis.com', basePath: '' },
  families: FAMILIES,
  guardedRoutes: ['generate', 'embed', 'count_tokens', 'models'],
  credential: (key) => ['x-goog-api-key', key],
  usage: {
    body: readBody,
    stream: () => {
      // Each chunk carries the usage so far: the last one's counts, once a candidate says it finished.
      let last: Obj | undefined;
      let done = false;
      return {
        event: (data) => {
          const chunk = data.includes('"usageMetadata"') || data.includes('"finishReason"') ? eventObject(data) : undefined;
          if (!chunk) return;
          if (isObj(chunk.usageMetadata)) last = chunk;
          done ||= finished(chunk);
        },
        // A stream cut before its last chunk reported a partial count: unknown, charged its reservation.
        reading: () => (last && done ? readBody(last) ?? unknownReading(modelOf(last)) : null),
      };
    },
  },
  errors,
};
