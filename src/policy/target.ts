import { ProxyError } from '../core/errors.js';

/** A request target as the upstream will act on it: the normal form of its path, and its query. */
export interface Target {
  /** Normal form, base path included, e.g. `/v1/responses`. */
  path: string;
  /** `?…` or `''`, passed as sent but for any `key` parameter. */
  query: string;
  /** The path's segments under the base path (`['responses', 'resp_1']`). */
  segments: string[];
}

const UNRESERVED = /%([0-9A-Fa-f]{2})/g;
const isUnreserved = (c: number): boolean =>
  (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;

/**
 * The upstream path for a caller's request target, in normal form (RFC 3986
 * §6.2.2): escapes of unreserved characters decoded, the others upper-cased;
 * empty segments and a trailing `/` dropped. What an upstream or a proxy on the
 * way might read differently is refused: a target that is not origin-form
 * (absolute-form, CONNECT, `//host/…` would let the caller pick the host), a
 * backslash or an escaped `/` or `\` (some servers decode them into separators),
 * a `#` (a fragment some servers drop),
 * and dot segments (they would climb out of the base path). The route is decided
 * on this form and this form is what goes upstream, so no spelling of a path can
 * make one route pass as another.
 */
export function requestTarget(target: string, basePath: string): Target {
  // A fragment is no part of a request target; an upstream that dropped it would read another path.
  if (!target.startsWith('/') || target.startsWith('//') || target.includes('\\') || target.includes('#')) throw badTarget();
  const q = target.indexOf('?');
  const rawPath = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : withoutKeyParam(target.slice(q));
  const decoded = rawPath.replace(UNRESERVED, (escape, hex: string) => {
    const c = parseInt(hex, 16);
    if (c === 0x2f || c === 0x5c) throw badTarget();
    return isUnreserved(c) ? String.fromCharCode(c) : escape.toUpperCase();
  });
  const segments = decoded.split('/').filter((s) => s !== '');
  if (segments.some((s) => s === '.' || s === '..')) throw badTarget();
  const base = basePath.split('/').filter((s) => s !== '');
  const underBase = base.every((s, i) => segments[i] === s);
  const rest = underBase ? segments.slice(base.length) : segments;
  return { path: `/${[...base, ...rest].join('/')}`, query, segments: rest };
}

/**
 * Google's APIs take a key as `?key=`: on any port it is a credential the
 * caller must not pass upstream, however its name is escaped or cased. The other
 * parameters go as sent, in order.
 */
function withoutKeyParam(query: string): string {
  const params = query.slice(1).split('&');
  const kept = params.filter((p) => paramName(p).toLowerCase() !== 'key');
  if (kept.length === params.length) return query;
  return kept.length === 0 ? '' : `?${kept.join('&')}`;
}

function paramName(param: string): string {
  const eq = param.indexOf('=');
  const raw = (eq === -1 ? param : param.slice(0, eq)).replaceAll('+', ' ');
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // a malformed escape: no decoder reads it as `key`
  }
}

/** A request target without its query string. */
export function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

function badTarget(): ProxyError {
  return new ProxyError('bad_request_target', 'The request target must be a path such as /v1/responses.');
}
