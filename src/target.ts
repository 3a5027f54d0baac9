import { ProxyError } from './errors.js';

// Dot segments, raw or percent-encoded, and backslashes: an upstream or a proxy on
// the way may normalise them and leave the base path (or worse, guess a host).
const DOT_SEGMENT = /(^|\/)(\.|%2e){1,2}(\/|$|\?)/i;
const ENCODED_SEPARATOR_DOTS = /(\.|%2e){1,2}(%2f|%5c)/i;

/**
 * The upstream path for a caller's request target. Only origin-form (`/path?query`)
 * is served: absolute-form, authority-form (CONNECT) and `//host/…` would let a
 * caller pick the destination, so they are refused before anything goes upstream.
 */
export function upstreamPath(target: string, basePath: string): string {
  if (!target.startsWith('/') || target.startsWith('//') || target.includes('\\')) {
    throw badTarget();
  }
  const path = pathOf(target);
  if (DOT_SEGMENT.test(path) || ENCODED_SEPARATOR_DOTS.test(path)) throw badTarget();
  if (basePath === '' || path === basePath || path.startsWith(`${basePath}/`)) return target;
  return basePath + target;
}

/** A request target without its query string. */
export function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

function badTarget(): ProxyError {
  return new ProxyError('bad_request_target', 'The request target must be a path such as /v1/responses.');
}
