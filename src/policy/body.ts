import type { IncomingMessage } from 'node:http';
import { decodeBody } from '../content-encoding.js';
import { ProxyError } from '../errors.js';

/** A request body held by admission: the bytes as sent (what goes upstream) and what they say. */
export interface HeldBody {
  raw: Buffer;
  /** What the decoded body parses to; undefined when it is not JSON. */
  json: unknown;
  /** The body's length as the upstream reads it, decoded. */
  decodedBytes: number;
}

/** A multipart upload (files, audio): its parts are no JSON and name no model. */
export const isMultipart = (req: IncomingMessage): boolean => String(req.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/');

export const hasBody = (req: IncomingMessage): boolean =>
  req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;

/**
 * The request body, read whole (never past `maxBytes`) and decoded as the
 * upstream will decode it, to be checked before anything goes upstream. A JSON
 * body sent as text/plain is still read: the upstream may well parse it. Throws
 * `unreadable` when the body cannot be decoded.
 */
export async function holdBody(req: IncomingMessage, maxBytes: number, idleMs: number, unreadable: () => ProxyError): Promise<HeldBody> {
  const timer = setTimeout(() => req.destroy(new ProxyError('upstream_timeout', `No byte of the request body came for ${idleMs} ms.`)), idleMs);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      timer.refresh();
      if ((size += chunk.length) > maxBytes) throw new ProxyError('body_too_large', `The request body is over ${maxBytes} bytes.`);
      chunks.push(chunk);
    }
  } finally {
    clearTimeout(timer);
  }
  const raw = Buffer.concat(chunks);
  let decoded: Buffer;
  try {
    decoded = decodeBody(raw, req.headers['content-encoding'], maxBytes);
  } catch {
    throw unreadable();
  }
  let json: unknown;
  try {
    json = JSON.parse(decoded.toString('utf8'));
  } catch {
    // Not JSON after all: the upstream refuses it.
  }
  return { raw, json, decodedBytes: decoded.length };
}
