import type { IncomingMessage } from 'node:http';
import { decodeBody } from './content-encoding.js';
import { ProxyError } from './errors.js';
import { ModelPolicy } from './model-policy.js';

export interface HeldBody {
  /** The bytes as the caller sent them: what goes upstream. */
  raw: Buffer;
  /** What they parse to, or undefined when they are not JSON. */
  json: unknown;
}

/**
 * A body that may name a model: any but a multipart upload (files, audio),
 * whose parts are not JSON. A JSON body sent as text/plain is still read: the
 * upstream may well parse it.
 */
const mayNameModel = (req: IncomingMessage): boolean => {
  const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  return hasBody && !String(req.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/');
};

/**
 * With ALLOWED_MODELS set, a JSON request body is read whole (never past
 * `maxBytes`) so its model can be checked before anything goes upstream. A
 * compressed body is decoded for the check; one that cannot be is refused.
 * Resolves null when the body is not one that names a model.
 */
export async function readModelBody(req: IncomingMessage, maxBytes: number, idleMs: number): Promise<HeldBody | null> {
  if (!mayNameModel(req)) return null;
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
  let text: string;
  try {
    text = decodeBody(raw, req.headers['content-encoding'], maxBytes).toString('utf8');
  } catch {
    throw ModelPolicy.unreadable();
  }
  try {
    return { raw, json: JSON.parse(text) };
  } catch {
    // Not JSON after all: the upstream refuses it; nothing names a model here.
    return { raw, json: undefined };
  }
}
