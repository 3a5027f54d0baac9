import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

// A caller gets this many tries at the token in one request; a header of a thousand cookies buys no more.
const MAX_CANDIDATES = 32;

const bearer = (value: string): string | undefined => /^Bearer\s+(\S+)\s*$/i.exec(value)?.[1];
const values = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/**
 * Every value a caller may have presented PROXY_AUTH_TOKEN as, in whichever
 * credential header its provider's clients send theirs (the contract: "in any
 * of those headers"): a bearer token in `authorization` or
 * `proxy-authorization`, the value of `api-key`, `x-api-key` or
 * `x-goog-api-key`, or of a cookie.
 */
export function presentedKeys(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name of ['authorization', 'proxy-authorization']) {
    for (const v of values(headers[name])) {
      const token = bearer(v);
      if (token !== undefined) out.push(token);
    }
  }
  for (const name of ['api-key', 'x-api-key', 'x-goog-api-key']) out.push(...values(headers[name]));
  for (const cookie of values(headers.cookie)) {
    for (const pair of cookie.split(';')) {
      const at = pair.indexOf('=');
      if (at > 0) out.push(pair.slice(at + 1).trim());
    }
  }
  return out.slice(0, MAX_CANDIDATES);
}

/** True when no token is configured, or the caller presented exactly it. */
export function callerAllowed(headers: IncomingHttpHeaders, token: string | undefined): boolean {
  if (token === undefined) return true;
  const want = Buffer.from(token);
  return presentedKeys(headers).some((got) => {
    const have = Buffer.from(got);
    return have.length === want.length && timingSafeEqual(have, want);
  });
}
