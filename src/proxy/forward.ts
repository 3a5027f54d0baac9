import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { neverSent, ProxyError, sendError, toProxyError, type ErrorShape } from '../core/errors.js';
import { CALLER_CLOSED, type Exchange } from '../core/exchange.js';
import { downstreamResponseHeaders } from '../core/headers.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import { cleanErrorBody } from '../core/redact.js';
import type { AdmittedCall } from '../policy/admission.js';
import { responseUsage, type ResponseUsage } from '../usage/response-usage.js';
import { unknownReading, type UsageReader } from '../usage/usage.js';

/** How much of a response is read for its usage: past it, the response counts as unknown. */
export const MAX_INSPECT_BYTES = 8 * 1024 * 1024;

// Error bodies are read whole to redact the key; OpenAI's are under 1 KiB.
const MAX_ERROR_BODY = 1 << 20;

/** An upstream error body, read whole (to redact it) up to a bound; past it the exchange is aborted. */
export class ErrorBody {
  #chunks: Buffer[] = [];
  #bytes = 0;

  add(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#bytes += chunk.length;
    if (this.#bytes > MAX_ERROR_BODY) {
      controller.abort(new ProxyError('upstream_unreachable', 'The upstream error body was too large to relay.'));
      return;
    }
    this.#chunks.push(chunk);
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.#chunks);
  }
}

/** What both the HTTP and the WebSocket paths need to reach the upstream. */
export interface UpstreamDeps {
  agent: Dispatcher;
  upstreamUrl: string;
  idleTimeoutMs: number;
  metrics: Metrics;
  logger: Logger;
  keyFingerprint: () => string;
  currentKey: () => string;
  /** The setting the key came from, named when the upstream refuses it. */
  keySetting: string;
  /** How the provider's answers report usage, and how its clients read our errors. */
  usage: UsageReader;
  errors: ErrorShape;
}

export interface ForwardDeps extends UpstreamDeps {
  maxBodyBytes: number;
}

/**
 * Sends one exchange upstream and streams the answer back; `headers` are already
 * policy-filtered. `held` is a body admission read and checked, else the
 * request streams; `call` a model call's reservation: its answer is read for
 * usage and settles it.
 */
export function forward(
  deps: ForwardDeps,
  ex: Exchange,
  res: ServerResponse,
  upstreamTarget: string,
  headers: string[],
  held?: Buffer | Readable,
  call?: AdmittedCall,
): void {
  const req = ex.req;
  const handler = new ForwardHandler(deps, ex, res, call);
  res.on('close', () => handler.callerClosed());
  // The caller's side of "no byte either way": a body that stops arriving, say.
  // undici's own timeouts cover the upstream side. Node resets this after the response.
  res.setTimeout(deps.idleTimeoutMs, () => handler.idle(deps.idleTimeoutMs));
  deps.agent.dispatch(
    {
      origin: deps.upstreamUrl,
      path: upstreamTarget,
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body: held ?? requestBody(req, ex, deps.maxBodyBytes),
    },
    handler,
  );
}

/**
 * The body to send upstream. With a content-length (already checked against the
 * limit), Node's parser stops at that length: the request itself is the body,
 * undici's fast path. A chunked body has no declared size, so it is counted as it
 * streams and cut at the limit.
 */
function requestBody(req: IncomingMessage, ex: Exchange, max: number): Readable | null {
  if (req.headers['transfer-encoding'] !== undefined) {
    // undici writes any async iterable (client-h1 writeIterable); its DispatchOptions type lags.
    return countedBody(req, ex, max) as unknown as Readable;
  }
  const length = Number(req.headers['content-length'] ?? 0);
  if (length === 0) return null;
  ex.bytesIn = length; // as declared: the parser delivers exactly this, or the exchange fails
  return req;
}

/** Streams the caller's body, counting it, so the limit holds without buffering. */
async function* countedBody(req: IncomingMessage, ex: Exchange, max: number): AsyncGenerator<Buffer> {
  for await (const chunk of req as AsyncIterable<Buffer>) {
    ex.bytesIn += chunk.length;
    if (ex.bytesIn > max) throw new ProxyError('body_too_large', `The request body is over ${max} bytes.`);
    yield chunk;
  }
}

/** An upstream 401/403 means our key was refused: count it and tell the operator which key. */
export function noteUpstreamStatus(deps: UpstreamDeps, ex: Exchange, status: number): void {
  if (status !== 401 && status !== 403) return;
  deps.metrics.upstreamAuthFailures.inc({ status });
  deps.logger.warn(
    { reqId: ex.id, upstreamStatus: status, keyFingerprint: deps.keyFingerprint() },
    `the upstream rejected the configured key: check ${deps.keySetting} (its fingerprint is logged here)`,
  );
}

/** The upstream's error answer with any whole or masked copy of the key replaced, ready to send. */
export function redactedError(
  deps: UpstreamDeps,
  ex: Exchange,
  status: number,
  upstreamHeaders: IncomingHttpHeaders,
  raw: Buffer,
): { headers: Record<string, string | string[]>; body: Buffer } {
  const { body, replaced } = cleanErrorBody(raw, upstreamHeaders['content-encoding'], deps.currentKey(), status);
  const headers = downstreamResponseHeaders(upstreamHeaders, ex.id);
  if (replaced) headers['content-type'] = 'application/json';
  delete headers['content-encoding'];
  headers['content-length'] = String(body.length);
  ex.bytesOut += body.length;
  return { headers, body };
}

function isEventStream(headers: IncomingHttpHeaders): boolean {
  return String(headers['content-type'] ?? '').startsWith('text/event-stream');
}

class ForwardHandler implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined;
  #status = 0;
  #headers: IncomingHttpHeaders = {};
  /** Set when the answer is an upstream error whose body we read and redact. */
  #errorBody: ErrorBody | undefined;
  /** Body bytes still due by content-length; the last chunk goes out with end(). */
  #remaining = -1;
  /** Reads a model call's answer for its usage, beside the bytes the caller gets. */
  #usage: ResponseUsage | undefined;

  constructor(
    private readonly deps: ForwardDeps,
    private readonly ex: Exchange,
    private readonly res: ServerResponse,
    private readonly call: AdmittedCall | undefined,
  ) {}

  /** A model call that ended without a readable answer: it may have been billed, so its reservation is charged. */
  #charge(): void {
    if (this.#usage) this.#usage.finish(false);
    else this.call?.reservation.record('http', unknownReading(this.call.model));
  }

  callerClosed(): void {
    if (this.res.writableFinished || this.ex.ended) return;
    // End first: abort() reports back through onResponseError, which must not count a 502.
    this.ex.end({ status: CALLER_CLOSED, upstreamStatus: this.#status || undefined });
    this.#charge();
    // The caller went away: stop the upstream exchange now, so a cancelled model call stops billing.
    this.#controller?.abort(new Error('caller closed the connection'));
  }

  idle(ms: number): void {
    if (this.ex.ended) return;
    const err = new ProxyError('upstream_timeout', `No byte moved either way for ${ms} ms.`);
    if (this.#controller) this.#controller.abort(err);
    else this.onResponseError(undefined, err);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.ex.ended) controller.abort(new Error('caller closed the connection'));
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    this.#status = status;
    this.#headers = headers;
    this.deps.metrics.firstByte.observe({ route: this.ex.route }, this.ex.seconds());
    noteUpstreamStatus(this.deps, this.ex, status);
    // The upstream refused the call: no work, nothing to charge.
    if (status >= 300) this.call?.reservation.release();
    else if (this.call) this.#usage = responseUsage(this.deps.usage, this.call.reservation, headers, MAX_INSPECT_BYTES, this.call.model);
    if (status >= 400 && !isEventStream(headers)) {
      this.#errorBody = new ErrorBody();
      return;
    }
    const length = headers['content-length'];
    this.#remaining = length === undefined ? -1 : Number(length);
    this.res.writeHead(status, downstreamResponseHeaders(headers, this.ex.id));
    // An event stream's head must not wait for its first event; but when that event
    // came in the same read (the usual case) the head rides with it, one write not two.
    if (isEventStream(headers)) setImmediate(() => this.res.headersSent || this.res.flushHeaders());
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#errorBody) {
      this.#errorBody.add(controller, chunk);
      return;
    }
    this.ex.bytesOut += chunk.length;
    if (this.#remaining > 0 && (this.#remaining -= chunk.length) <= 0) {
      // The whole body in hand: head, body and end leave in one write.
      this.res.end(chunk);
    } else if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', () => controller.resume());
    }
    // Read after the caller has the bytes: counting never delays them.
    this.#usage?.data(chunk);
  }

  onResponseEnd(): void {
    if (this.#errorBody) this.#sendRedactedError(this.#errorBody.toBuffer());
    else if (!this.res.writableEnded) this.res.end();
    this.#usage?.finish(true);
    this.ex.end({ status: this.#status, upstreamStatus: this.#status });
  }

  onResponseError(_c: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.#status === 0 && neverSent(err)) this.call?.reservation.release();
    else this.#charge();
    if (this.ex.ended) return;
    const error = toProxyError(err);
    // A body over the limit means the caller is still sending: close rather than read the rest.
    const status = sendError(this.res, error, this.ex.id, this.deps.errors, error.code === 'body_too_large' || error.code === 'upstream_timeout');
    this.ex.end({ status, code: error.code, upstreamStatus: this.#status || undefined, cause: err });
  }

  #sendRedactedError(raw: Buffer): void {
    const { headers, body } = redactedError(this.deps, this.ex, this.#status, this.#headers, raw);
    this.res.writeHead(this.#status, headers);
    this.res.end(body);
  }
}
