import { pino, type DestinationStream, type Logger } from 'pino';
import { CREDENTIAL_HEADERS } from './headers.js';
import { REDACTED } from './redact.js';

export type { Logger };

/** A headers object with every credential value replaced. */
function scrubHeaders(headers: unknown): unknown {
  if (!headers || typeof headers !== 'object') return headers;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers)) out[name] = CREDENTIAL_HEADERS.has(name.toLowerCase()) ? REDACTED : value;
  return out;
}

/**
 * pino with credential headers redacted wherever a `headers` or `req` is logged,
 * at any level, plus a last guard: a line that somehow holds a live key has it
 * replaced before it is written. Serializers rather than pino's `redact` paths:
 * they cost nothing on the per-exchange line, which logs no headers.
 */
/** `keys`: what holds each live key (the key stores), read as each line is written, so a rotated key is guarded at once. */
export function createLogger(level: string, keys: readonly { readonly key: string }[], destination?: DestinationStream): Logger {
  return pino(
    {
      name: 'api-proxy',
      level,
      base: undefined,
      serializers: {
        headers: scrubHeaders,
        req: (req: { method?: string; url?: string; headers?: unknown }) => ({ method: req.method, url: req.url, headers: scrubHeaders(req.headers) }),
      },
      hooks: {
        streamWrite: (line) => {
          for (const { key } of keys) if (key && line.includes(key)) line = line.split(key).join(REDACTED);
          return line;
        },
      },
    },
    // Lines are written in 4 KiB batches, and at least every second: one write
    // per exchange cost ~8% of throughput. main.ts flushes before exiting.
    destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 1000 }),
  );
}
