import type { ServerResponse } from 'node:http';

/** The proxy's own error codes: one status each, as the contract's table says. */
export const ERROR_STATUS = {
  bad_request_target: 400,
  proxy_auth_required: 401,
  body_too_large: 413,
  egress_denied: 502,
  upstream_unreachable: 502,
  draining: 503,
  upstream_timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ProxyError';
    this.code = code;
    this.status = ERROR_STATUS[code];
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

/** OpenAI's error shape, so SDKs show our errors like theirs. */
export function errorBody(err: ProxyError): string {
  return JSON.stringify({ error: { message: err.message, type: 'proxy_error', code: err.code } });
}

export function sendError(res: ServerResponse, err: ProxyError, requestId: string, close = false): void {
  if (res.headersSent) {
    // Too late for a status: cut the stream so the caller sees it did not complete.
    res.destroy(err);
    return;
  }
  const body = errorBody(err);
  res.writeHead(err.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(body);
}
