import type { IncomingMessage } from 'node:http';
import { EventEmitter } from 'node:events';
import type { ErrorCode } from './errors.js';
import { requestIdFor } from './headers.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** nginx's convention for "the caller closed the connection first". */
export const CALLER_CLOSED = 499;

export interface Outcome {
  status: number;
  code?: ErrorCode | undefined;
  upstreamStatus?: number | undefined;
  cause?: unknown;
}

/**
 * One caller exchange (HTTP or WebSocket), from the request to its last byte.
 * `end` records it exactly once — metrics, the one log line, the in-flight count —
 * however many of the paths that can end it (upstream end, error, caller gone) run.
 */
export class Exchange {
  readonly id: string;
  readonly started = process.hrtime.bigint();
  route = 'other';
  path: string;
  bytesIn = 0;
  bytesOut = 0;
  #ended = false;

  constructor(
    readonly req: IncomingMessage,
    private readonly tracker: ExchangeTracker,
    key: string,
  ) {
    this.id = requestIdFor(req.headers, key);
    this.path = req.url ?? '';
    tracker.opened();
  }

  get ended(): boolean {
    return this.#ended;
  }

  seconds(): number {
    return Number(process.hrtime.bigint() - this.started) / 1e9;
  }

  end(outcome: Outcome): void {
    if (this.#ended) return;
    this.#ended = true;
    this.tracker.closed(this, outcome);
  }
}

/** Counts exchanges under way, so shutdown can wait for them. */
export class ExchangeTracker extends EventEmitter {
  #open = 0;

  constructor(
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly kind: 'http' | 'websocket',
  ) {
    super();
  }

  get open(): number {
    return this.#open;
  }

  opened(): void {
    this.#open++;
  }

  closed(ex: Exchange, outcome: Outcome): void {
    this.#open--;
    const seconds = ex.seconds();
    const method = ex.req.method ?? 'GET';
    if (this.kind === 'http') {
      this.metrics.requests.inc({ method, route: ex.route, status: outcome.status });
      this.metrics.duration.observe({ route: ex.route }, seconds);
    } else {
      this.metrics.websocketsTotal.inc({ status: outcome.status });
    }
    this.metrics.requestBytes.inc(ex.bytesIn);
    this.metrics.responseBytes.inc(ex.bytesOut);
    if (outcome.code) this.metrics.upstreamErrors.inc({ code: outcome.code });

    const line = {
      reqId: ex.id,
      kind: this.kind,
      method,
      path: ex.path,
      status: outcome.status,
      upstreamStatus: outcome.upstreamStatus,
      code: outcome.code,
      ms: Math.round(seconds * 1000),
      bytesIn: ex.bytesIn,
      bytesOut: ex.bytesOut,
      err: outcome.cause instanceof Error ? describeCause(outcome.cause) : undefined,
    };
    if (outcome.code && outcome.status >= 500) this.logger.warn(line, 'exchange failed');
    else this.logger.info(line, 'exchange');
    if (this.#open === 0) this.emit('idle');
  }
}

/** Message and code of an error and its causes; never headers or bodies. */
function describeCause(err: Error): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 4; e = e.cause) {
    const code = (e as { code?: string }).code;
    parts.push(code ? `${e.message} (${code})` : e.message);
  }
  return parts.join(' <- ');
}
