import { brotliDecompressSync, createBrotliDecompress, createGunzip, createInflate, gunzipSync, inflateSync, type ZlibOptions } from 'node:zlib';
import type { Transform } from 'node:stream';

/**
 * Bodies as the other side encoded them (`content-encoding`), decoded for the
 * sidecar's own reading: error bodies to redact, responses to count, request
 * bodies to check a model. What is sent on is never touched.
 */

const name = (encoding: string | string[] | undefined): string => String(encoding ?? '').trim().toLowerCase();

/** True when `encoding` is none at all. */
export const isIdentity = (encoding: string | string[] | undefined): boolean => ['', 'identity'].includes(name(encoding));

/** A whole body, decoded; throws on an encoding we do not know, bad data, or output over `maxBytes`. */
export function decodeBody(raw: Buffer, encoding: string | string[] | undefined, maxBytes = Infinity): Buffer {
  const opts: ZlibOptions = Number.isFinite(maxBytes) ? { maxOutputLength: maxBytes } : {};
  switch (name(encoding)) {
    case '':
    case 'identity':
      if (raw.length > maxBytes) throw new RangeError('body over the limit');
      return raw;
    case 'gzip':
    case 'x-gzip':
      return gunzipSync(raw, opts);
    case 'deflate':
      return inflateSync(raw, opts);
    case 'br':
      return brotliDecompressSync(raw, opts);
    default:
      throw new Error('unsupported content-encoding');
  }
}

/** A streaming decoder for a body read as it flows, or null for an encoding we do not know. */
export function bodyDecoder(encoding: string | string[] | undefined): Transform | null {
  switch (name(encoding)) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip();
    case 'deflate':
      return createInflate();
    case 'br':
      return createBrotliDecompress();
    default:
      return null;
  }
}
