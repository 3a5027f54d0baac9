import type { IncomingHttpHeaders } from 'node:http';
import type { Transform } from 'node:stream';
import { bodyDecoder, decodeBody, isIdentity } from '../core/content-encoding.js';
import type { Reservation } from './ledger.js';
import { SseReader } from './sse-reader.js';
import { UNKNOWN_MODEL, unknownReading, type Reading, type UsageReader } from './usage.js';

/** Reads a copy of one response body as it flows to the caller; `finish` counts it, once. */
export interface ResponseUsage {
  data(chunk: Buffer): void;
  /** The body ended (`complete`), or was cut short: count what was read, or unknown. */
  finish(complete: boolean): void;
}

// The model a stream names early (response.created, every chat chunk), found without parsing the event.
const MODEL_FIELD = /"model"\s*:\s*"([^"\\]{1,128})"/;
const MODEL_LOOKS = 3;

/**
 * The reader for a 2xx answer to a model call: server-sent events read event by
 * event, anything else read as one JSON body of at most `maxBytes`. It settles
 * the call's reservation: usage the answer does not report, or that lies past
 * the bound, is unknown and charged the reservation. `asked` is the model the
 * request named, until the answer names its own.
 */
export function responseUsage(
  reader: UsageReader,
  reservation: Reservation,
  headers: IncomingHttpHeaders,
  maxBytes: number,
  asked: string | undefined,
): ResponseUsage {
  const encoding = headers['content-encoding'];
  let model: string | undefined;
  // The model the answer reports; else the one it named early, else the one asked for.
  const count = (transport: 'http' | 'sse', reading: Reading | null): void => {
    const named = model ?? asked;
    if (!reading) reservation.record(transport, unknownReading(named));
    else reservation.record(transport, reading.model === UNKNOWN_MODEL && named !== undefined ? { ...reading, model: named } : reading);
  };

  if (String(headers['content-type'] ?? '').startsWith('text/event-stream')) {
    const stream = reader.stream();
    let looks = 0;
    const sse = new SseReader((data) => {
      if (model === undefined && looks++ < MODEL_LOOKS) model = MODEL_FIELD.exec(data)?.[1];
      stream.event(data);
    }, maxBytes);
    // A compressed stream is inflated in a copy, in order; undecodable, it counts as unknown.
    const done = (): void => count('sse', sse.overflowed ? null : stream.reading());
    let decoder: Transform | null = null;
    let readable = isIdentity(encoding);
    if (!readable) {
      decoder = bodyDecoder(encoding);
      readable = decoder !== null;
      decoder?.on('data', (c: Buffer) => sse.write(c)).on('end', done).on('error', () => {
        readable = false;
        count('sse', null);
      });
    }
    return {
      data: (chunk) => {
        if (!readable) return;
        if (decoder) decoder.write(chunk);
        else sse.write(chunk);
      },
      finish: (complete) => {
        if (!readable) count('sse', null);
        else if (decoder && complete) decoder.end(); // 'end' counts, once the copy is all inflated
        else done();
      },
    };
  }

  const chunks: Buffer[] = [];
  let size = 0;
  return {
    data: (chunk) => {
      if ((size += chunk.length) <= maxBytes) chunks.push(chunk);
    },
    finish: (complete) => {
      if (!complete || size > maxBytes) return count('http', null);
      try {
        count('http', reader.body(JSON.parse(decodeBody(Buffer.concat(chunks), encoding, maxBytes).toString('utf8'))));
      } catch {
        count('http', null);
      }
    },
  };
}
