import { pino, type DestinationStream, type Logger } from 'pino';
import { CREDENTIAL_HEADERS } from './headers.js';
import { REDACTED } from './redact.js';

export type { Logger };

// Any credential header under any object we might log, at any level.
const REDACT_PATHS = [...CREDENTIAL_HEADERS].flatMap((h) => [
  `headers["${h}"]`,
  `req.headers["${h}"]`,
  `*.headers["${h}"]`,
]);

/**
 * pino with credential headers redacted, plus a last guard: a line that somehow
 * holds the live key has it replaced before it is written.
 */
export function createLogger(level: string, currentKey: () => string, destination?: DestinationStream): Logger {
  return pino(
    {
      name: 'api-proxy',
      level,
      base: undefined,
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      hooks: {
        streamWrite: (line) => {
          const key = currentKey();
          return key && line.includes(key) ? line.split(key).join(REDACTED) : line;
        },
      },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
