import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/** The bearer key a caller presented, wherever SDKs put it. */
export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const auth = headers.authorization;
  if (auth) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return m?.[1];
  }
  const key = headers['api-key'] ?? headers['x-api-key'] ?? headers['x-goog-api-key'];
  return Array.isArray(key) ? key[0] : key;
}

/** True when no token is configured, or the caller presented exactly it. */
export function callerAllowed(headers: IncomingHttpHeaders, token: string | undefined): boolean {
  if (token === undefined) return true;
  const got = presentedKey(headers);
  if (got === undefined) return false;
  const a = Buffer.from(got);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}
