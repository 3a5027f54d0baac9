import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { bodyDecoder, isIdentity } from '../core/content-encoding.js';
import { ProxyError } from '../core/errors.js';
import { BodyScanner, SLICE, type Scan, ScanError } from './body-scan.js';

/** A multipart upload (files, audio): its parts are no JSON and name no model. */
export const isMultipart = (req: IncomingMessage): boolean => String(req.headers['content-type'] ?? '').toLowerCase().startsWith('multipart/');

export const hasBody = (req: IncomingMessage): boolean =>
  req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;

// Up to this size a held body is sent as one buffer (undici's fast path); past it as its chunks.
const ONE_BUFFER = 1024 * 1024;

/** A request body held whole as it arrived, in its chunks: never copied into one buffer past ONE_BUFFER. */
export class HeldBody {
  constructor(
    readonly chunks: readonly Buffer[],
    readonly length: number,
  ) {}

  /** What goes upstream: the bytes as the caller sent them. */
  toBody(): Buffer | Readable {
    return this.length <= ONE_BUFFER ? Buffer.concat(this.chunks, this.length) : Readable.from(this.chunks);
  }
}

/**
 * The request body, whole (what goes upstream), never past `max` bytes; a body
 * that stops arriving ends in upstream_timeout. Read with listeners, not
 * `for await`: the async iterator cost several microseconds per request.
 */
export function readBody(req: IncomingMessage, max: number, idleMs: number): Promise<HeldBody> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(new HeldBody(chunks, size));
    };
    // Refused, not destroyed: the caller is told why (app.ts answers and closes the connection).
    const timer = setTimeout(() => settle(new ProxyError('upstream_timeout', `No byte of the request body came for ${idleMs} ms.`)), idleMs);
    req.on('data', (chunk: Buffer) => {
      if (settled) return;
      timer.refresh();
      if ((size += chunk.length) > max) {
        settle(new ProxyError('body_too_large', `The request body is over ${max} bytes.`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => settle(null));
    req.on('error', settle);
    req.on('close', () => settle(new Error('the caller closed the connection before its body ended')));
  });
}

/**
 * The body decoded as the upstream will decode it and scanned as it inflates
 * (body-scan.ts): a small body that inflates past `max` stops there, never
 * held decoded. What it found, or why it cannot be read strictly.
 */
export async function scanBody(held: HeldBody, encoding: string | string[] | undefined, max: number): Promise<Scan | ScanError> {
  const scanner = new BodyScanner(max);
  try {
    if (isIdentity(encoding)) {
      for (const chunk of held.chunks) for (let at = 0; at < chunk.length; at += SLICE) scanner.write(chunk.subarray(at, at + SLICE));
    } else {
      const decoder = bodyDecoder(encoding);
      if (!decoder) return new ScanError('an unknown content-encoding', true);
      Readable.from(held.chunks).pipe(decoder);
      try {
        for await (const chunk of decoder as AsyncIterable<Buffer>) {
          scanner.write(chunk);
          if (scanner.failed) break;
        }
      } catch {
        return new ScanError('a body that does not decode', true);
      } finally {
        decoder.destroy();
      }
    }
    return scanner.end();
  } catch (err) {
    if (err instanceof ScanError) return err;
    throw err;
  }
}
