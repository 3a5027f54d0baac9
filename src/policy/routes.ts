/**
 * The route table: which family a path belongs to, which requests are model
 * calls (counted, reserved, read for usage), which mint a credential. Data, one
 * table; a provider can later bring its own.
 */

/** One request shape of a family: a method and the segments after the family's (`*` matches one). */
interface Shape {
  method: string;
  rest: readonly string[];
  /** A model call: its body is read, a reservation held, its answer read for usage. */
  modelCall?: boolean;
}

export interface Family {
  name: string;
  /** The path's first segments under the base path. */
  prefix: readonly string[];
  /**
   * When guarded, only these shapes of the family pass; a family without a list
   * passes whole once allowed. The counted families are narrow on purpose:
   * whatever else they answer is not a model call the ledger can count.
   */
  guardedShapes?: readonly Shape[];
  /** Its bodies are multipart uploads whose parts name no model. */
  multipart?: boolean;
}

const post = (rest: string[], modelCall = false): Shape => ({ method: 'POST', rest, modelCall });
const get = (rest: string[]): Shape => ({ method: 'GET', rest });
const del = (rest: string[]): Shape => ({ method: 'DELETE', rest });

export const EPHEMERAL_KEYS = 'ephemeral_keys';

/** Checked in order: the credential-minting routes come before the families they sit in. */
export const FAMILIES: readonly Family[] = [
  // Each answers with a bearer token usable from anywhere: the one thing the sandbox exists to prevent.
  { name: EPHEMERAL_KEYS, prefix: ['realtime', 'client_secrets'] },
  { name: EPHEMERAL_KEYS, prefix: ['realtime', 'sessions'] },
  { name: EPHEMERAL_KEYS, prefix: ['realtime', 'transcription_sessions'] },
  { name: EPHEMERAL_KEYS, prefix: ['chatkit', 'sessions'] },
  {
    name: 'responses',
    prefix: ['responses'],
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
  { name: 'chat', prefix: ['chat'], guardedShapes: [post(['completions'], true)] },
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

/** What ALLOWED_ROUTES opens when guarded and unset: the families whose spend is counted. */
export const GUARDED_DEFAULT_ROUTES = ['responses', 'chat', 'completions', 'embeddings', 'models'] as const;

export interface Route {
  /** The family's name; for a path no family claims, its first segment (or `''`). */
  family: string;
  /** The table's entry, or undefined for a path it does not know. */
  entry: Family | undefined;
  /** The guarded shape it matches, if its family has a list. */
  shape: Shape | undefined;
}

const matches = (pattern: readonly string[], segments: readonly string[]): boolean =>
  pattern.length === segments.length && pattern.every((p, i) => p === '*' || p === segments[i]);

/**
 * The route of a normalised path's segments (under the base path). Families are
 * compared case-insensitively: an upstream that routes `/v1/Responses` as
 * `/v1/responses` must not find the sidecar calling it something else.
 */
export function routeOf(method: string, segments: readonly string[]): Route {
  const lower = segments.map((s) => s.toLowerCase());
  for (const entry of FAMILIES) {
    if (!entry.prefix.every((p, i) => lower[i] === p)) continue;
    const rest = segments.slice(entry.prefix.length);
    const shape = entry.guardedShapes?.find((s) => s.method === method && matches(s.rest, rest));
    return { family: entry.name, entry, shape };
  }
  return { family: lower[0] ?? '', entry: undefined, shape: undefined };
}

/** True when the family's defining segments were sent in another case than the table's. */
export function familyMiscased(route: Route, segments: readonly string[]): boolean {
  return route.entry !== undefined && route.entry.prefix.some((p, i) => segments[i] !== p);
}

/** A bounded label for metrics: the known family's path under the base, else `other`. */
export function routeLabel(route: Route, basePath: string): string {
  if (!route.entry) return 'other';
  const name = route.entry.name === 'chat' ? 'chat/completions' : route.entry.prefix.join('/');
  return `${basePath}/${name}`;
}
