import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
/**
 * The header policy: data plus pure functions, tested without sockets.
 * Upstream gets every caller header except credentials, forwarding hints and
 * hop-by-hop headers (RFC 9110 §7.6.1), plus the real key and our request id.
 */

/** Whatever a caller may have used to authenticate: never forwarded. */
export const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'api-key', 'x-api-key', 'x-goog-api-key', 'cookie']);

/**
 * Who pays, with a user key that belongs to several: never the caller's choice.
 * OPENAI_ORGANIZATION / OPENAI_PROJECT pin them instead.
 */
export const BILLING_HEADERS = new Set(['openai-organization', 'openai-project']);

/** Forwarding hints would tell the upstream about the sandbox, or let a caller spoof them. */
export const FORWARDING_HEADERS = new Set(['forwarded', 'via', 'x-real-ip', 'host']);

/** Hop-by-hop, or set by the HTTP client for its own connection. */
export const HOP_BY_HOP_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect', // Node answers 100-continue itself; the body follows either way
  'http2-settings',
]);

export const REQUEST_ID_HEADER = 'x-request-id';

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A caller's id we may echo: a plain token, and never one that would echo the key back. */
export function isSaneRequestId(value: string | undefined, key: string): value is string {
  return value !== undefined && SANE_REQUEST_ID.test(value) && !value.includes(key);
}

/** The id for an exchange: the caller's `x-request-id` when sane, else a new one. */
export function requestIdFor(headers: IncomingHttpHeaders, key: string): string {
  const given = headers[REQUEST_ID_HEADER];
  return typeof given === 'string' && isSaneRequestId(given, key) ? given : randomUUID();
}

/** Names listed in `Connection` are hop-by-hop for this message too. */
function connectionTokens(raw: readonly string[]): Set<string> {
  const tokens = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') {
      for (const t of raw[i + 1]!.split(',')) tokens.add(t.trim().toLowerCase());
    }
  }
  return tokens;
}

function dropRequestHeader(name: string, listed: Set<string>): boolean {
  return (
    CREDENTIAL_HEADERS.has(name) ||
    BILLING_HEADERS.has(name) ||
    FORWARDING_HEADERS.has(name) ||
    HOP_BY_HOP_HEADERS.has(name) ||
    name.startsWith('x-forwarded-') ||
    name === REQUEST_ID_HEADER ||
    listed.has(name)
  );
}

/** The configured billing headers, as name, value pairs for upstreamRequestHeaders. */
export function billingHeaders(config: { openaiOrganization?: string | undefined; openaiProject?: string | undefined }): string[] {
  const out: string[] = [];
  if (config.openaiOrganization) out.push('openai-organization', config.openaiOrganization);
  if (config.openaiProject) out.push('openai-project', config.openaiProject);
  return out;
}

/**
 * Upstream request headers from the caller's raw headers (Node's `rawHeaders`:
 * name, value, name, value…), as the flat list undici takes. Keeps duplicates and
 * the caller's spelling of names; `added` (the provider's key headers, billingHeaders)
 * come after them.
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], requestId: string, added: readonly string[]): string[] {
  const listed = connectionTokens(rawHeaders);
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (!dropRequestHeader(name.toLowerCase(), listed)) out.push(name, rawHeaders[i + 1]!);
  }
  out.push(...added, REQUEST_ID_HEADER, requestId);
  return out;
}

/**
 * Headers for the caller from the upstream's response. The upstream's own request
 * id is kept as `x-upstream-request-id`, which OpenAI support asks for.
 */
export function downstreamResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
  requestId: string,
): Record<string, string | string[]> {
  const listed = new Set<string>();
  const connection = headers.connection;
  if (typeof connection === 'string') for (const t of connection.split(',')) listed.add(t.trim().toLowerCase());
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP_HEADERS.has(name) || listed.has(name)) continue;
    if (name === REQUEST_ID_HEADER) out['x-upstream-request-id'] = value;
    else out[name] = value;
  }
  out[REQUEST_ID_HEADER] = requestId;
  return out;
}
