import type { ServerResponse } from 'node:http';

/**
 * The proxy's own error codes: one status each, as the contract's table says.
 * `type` is OpenAI's error type where a client acts on it (`insufficient_quota`
 * stops Codex at once); `final` answers carry `x-should-retry: false`, which the
 * openai SDK obeys: retrying cannot help.
 */
const ERRORS = {
  bad_request_target: { status: 400 },
  background_not_allowed: { status: 400, type: 'invalid_request_error', final: true },
  proxy_auth_required: { status: 401 },
  model_not_allowed: { status: 403, type: 'invalid_request_error', final: true },
  route_not_allowed: { status: 403, type: 'invalid_request_error', final: true },
  tool_not_allowed: { status: 403, type: 'invalid_request_error', final: true },
  body_too_large: { status: 413 },
  budget_exceeded: { status: 429, type: 'insufficient_quota', final: true },
  egress_denied: { status: 502 },
  upstream_unreachable: { status: 502 },
  draining: { status: 503 },
  upstream_timeout: { status: 504 },
} as const satisfies Record<string, ErrorSpec>;

interface ErrorSpec {
  status: number;
  type?: string;
  final?: boolean;
}

export type ErrorCode = keyof typeof ERRORS;
const specOf = (code: ErrorCode): ErrorSpec => ERRORS[code];

export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProxyError';
    this.code = code;
    this.status = ERRORS[code].status;
  }

  /** OpenAI's error object: `{message, type, code}`. */
  toJSON(): { message: string; type: string; code: ErrorCode } {
    return { message: this.message, type: specOf(this.code).type ?? 'proxy_error', code: this.code };
  }

  /** Headers every answer carrying this error gets. */
  headers(): Record<string, string> {
    return specOf(this.code).final ? { 'x-should-retry': 'false' } : {};
  }
}

const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);

/**
 * Re-types whatever undici, net or tls threw into one of our codes, keeping the
 * cause for the log. Anything we cannot place means the upstream was not reached.
 */
export function toProxyError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  const code = (err as { code?: string } | null)?.code;
  if (code && TIMEOUT_CODES.has(code)) {
    return new ProxyError('upstream_timeout', 'The upstream did not answer in time.', { cause: err });
  }
  return new ProxyError('upstream_unreachable', 'The upstream could not be reached.', { cause: err });
}

// Errors raised while the connection to the upstream was being made: the request never left.
const CONNECTING = new WeakSet<Error>();
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/** Marks an error of the connecting step (the egress tunnel, TLS): nothing of the request was sent. */
export function whileConnecting<E extends Error>(err: E): E {
  CONNECTING.add(err);
  return err;
}

/**
 * True when the request surely never reached the upstream, so the model call
 * cost nothing. Anything else (a reset mid-answer, a timeout) may have been
 * billed: the budget is charged, not spared.
 */
export function neverSent(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (CONNECTING.has(e) || CONNECT_CODES.has(String((e as { code?: unknown }).code))) return true;
  }
  return false;
}

/** One refusal as a provider's clients read it: status, body and the headers that make them stop or retry. */
export interface ErrorAnswer {
  status: number;
  body: string;
  headers: Record<string, string>;
}

/** How a provider writes the proxy's errors, so its SDKs show them like its own. */
export type ErrorShape = (err: ProxyError) => ErrorAnswer;

/** OpenAI's error shape, `{"error":{message,type,code}}`, with the contract's statuses. */
export const openaiErrors: ErrorShape = (err) => ({ status: err.status, body: JSON.stringify({ error: err }), headers: err.headers() });

/** Answers with the error in the provider's shape; returns the status sent, for the exchange's record. */
export function sendError(res: ServerResponse, err: ProxyError, requestId: string, shape: ErrorShape, close = false): number {
  if (res.headersSent) {
    // Too late for a status: cut the stream so the caller sees it did not complete.
    res.destroy(err);
    return err.status;
  }
  const answer = shape(err);
  res.writeHead(answer.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(answer.body),
    'x-request-id': requestId,
    ...answer.headers,
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(answer.body);
  return answer.status;
}
