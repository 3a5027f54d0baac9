import { openaiErrors } from '../core/errors.js';
import { del, EPHEMERAL_KEYS, get, post, type Family } from '../policy/routes.js';
import { eventObject, mayHoldUsage, readBody, readEvent, type Reading } from '../usage/usage.js';
import type { Provider } from './provider.js';

/** Checked in order: the credential-minting routes come before the families they sit in. */
export const OPENAI_FAMILIES: readonly Family[] = [
  // Each answers with a bearer token usable from anywhere: the one thing the sandbox exists to prevent.
  { name: EPHEMERAL_KEYS, prefix: ['realtime', 'client_secrets'] },
  { name: EPHEMERAL_KEYS, prefix: ['realtime', 'sessions'] },
  { name: EPHEMERAL_KEYS, prefix: ['realtime', 'transcription_sessions'] },
  { name: EPHEMERAL_KEYS, prefix: ['chatkit', 'sessions'] },
  {
    name: 'responses',
    prefix: ['responses'],
    hostedTools: true,
    guardedShapes: [
      post([], true),
      post(['compact'], true),
      post(['input_tokens']),
      get([]), // the Responses WebSocket
      get(['*']),
      del(['*']),
      get(['*', 'input_items']),
      post(['*', 'cancel']),
    ],
  },
  { name: 'chat', prefix: ['chat'], label: 'chat/completions', guardedShapes: [post(['completions'], true)] },
  { name: 'completions', prefix: ['completions'], guardedShapes: [post([], true)] },
  { name: 'embeddings', prefix: ['embeddings'], guardedShapes: [post([], true)] },
  { name: 'models', prefix: ['models'], guardedShapes: [get([]), get(['*'])] },
  { name: 'files', prefix: ['files'], multipart: true },
  { name: 'uploads', prefix: ['uploads'], multipart: true },
  ...[
    'audio',
    'images',
    'moderations',
    'batches',
    'fine_tuning',
    'vector_stores',
    'assistants',
    'threads',
    'conversations',
    'evals',
    'containers',
    'realtime',
    'chatkit',
  ].map((name) => ({ name, prefix: [name] })),
];

/** OpenAI: the Responses, Chat Completions, Completions and Embeddings APIs, over HTTP, SSE and the Responses WebSocket. */
export const openai: Provider = {
  name: 'openai',
  settings: { key: 'OPENAI_API_KEY', port: 'PORT', upstream: 'UPSTREAM_URL', basePath: 'UPSTREAM_BASE_PATH' },
  defaults: { port: 10000, upstream: 'https://api.openai.com', basePath: '/v1' },
  families: OPENAI_FAMILIES,
  guardedRoutes: ['responses', 'chat', 'completions', 'embeddings', 'models'],
  credential: (key) => ['authorization', `Bearer ${key}`],
  billingHeaders: true,
  usage: {
    body: readBody,
    stream: () => {
      // The usage comes once, in the terminal event (or the chat chunk that carries it).
      let reading: Reading | null = null;
      return {
        event: (data) => {
          // Not JSON ([DONE], or a broken event): nothing to count.
          if (!reading && mayHoldUsage(data)) reading = readEvent(eventObject(data));
        },
        reading: () => reading,
      };
    },
  },
  errors: openaiErrors,
};
