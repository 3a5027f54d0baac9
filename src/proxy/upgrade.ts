import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { type ErrorShape, type ProxyError, toProxyError } from '../core/errors.js';
import { CALLER_CLOSED, type Exchange } from '../core/exchange.js';
import { ErrorBody, noteUpstreamStatus, redactedError, type UpstreamDeps } from './forward.js';
import { REQUEST_ID_HEADER } from '../core/headers.js';
import { relayWebSocket, type WsPolicy } from './ws-session.js';

/** An HTTP/1.1 response head, for a socket that Node handed us for an upgrade. */
export function responseHead(status: number, headers: IncomingHttpHeaders): string {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`;
  }
  return `${head}\r\n`;
}

/**
 * A refusal: head and body in one write, then close. Codex reads a refused
 * upgrade's body only from the read that brought its head; written apart, a 429
 * insufficient_quota ends in "exceeded retry limit" instead of "Quota exceeded".
 */
export function refuseUpgrade(socket: Duplex, status: number, headers: IncomingHttpHeaders, body: Buffer | string): void {
  if (!socket.writable) return void socket.destroy();
  socket.end(Buffer.concat([Buffer.from(responseHead(status, headers), 'latin1'), Buffer.from(body)]));
}

/** Refuses an upgrade with the error in the provider's shape; returns the status sent. */
export function rejectUpgrade(socket: Duplex, err: ProxyError, requestId: string, shape: ErrorShape): number {
  const { status, body, headers } = shape(err);
  refuseUpgrade(socket, status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    [REQUEST_ID_HEADER]: requestId,
    ...headers,
    connection: 'close',
  }, body);
  return status;
}

/**
 * Tunnels a WebSocket upgrade: the upstream handshake goes through the same
 * dispatcher (and so the same egress tunnel pool) as HTTP; after its 101 the two
 * sockets are relayed (ws-session.ts: usage read, budget and models enforced).
 * A refusal (401, 426, …) is relayed as it came, so Codex falls back to SSE at
 * once instead of retrying.
 */
export function tunnelUpgrade(
  deps: UpstreamDeps,
  policy: WsPolicy,
  ex: Exchange,
  socket: Duplex,
  head: Buffer,
  upstreamPath: string,
  headers: string[],
): void {
  const handler = new UpgradeHandler(deps, policy, ex, socket, head);
  socket.on('close', () => handler.callerClosed());
  deps.agent.dispatch(
    {
      origin: deps.upstreamUrl,
      path: upstreamPath,
      method: 'GET',
      headers,
      upgrade: ex.req.headers.upgrade ?? 'websocket',
    },
    handler,
  );
}

class UpgradeHandler implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined;
  #status = 0;
  #headers: IncomingHttpHeaders = {};
  #refusal = new ErrorBody();
  #upstream: Duplex | undefined;

  constructor(
    private readonly deps: UpstreamDeps,
    private readonly policy: WsPolicy,
    private readonly ex: Exchange,
    private readonly socket: Duplex,
    private readonly head: Buffer,
  ) {}

  callerClosed(): void {
    this.#upstream?.destroy();
    if (!this.ex.ended && !this.#upstream) {
      this.ex.end({ status: CALLER_CLOSED });
      this.#controller?.abort(new Error('caller closed the connection'));
    }
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.ex.ended) controller.abort(new Error('caller closed the connection'));
  }

  onRequestUpgrade(_c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders, upstream: Duplex): void {
    this.#status = status;
    this.#upstream = upstream;
    const { socket, ex, deps } = this;
    if (ex.ended) return void upstream.destroy();

    deps.metrics.websocketsActive.inc();
    let open = true;
    const close = (): void => {
      if (!open) return;
      open = false;
      deps.metrics.websocketsActive.dec();
      socket.destroy();
      upstream.destroy();
      ex.end({ status, upstreamStatus: status });
    };
    upstream.on('error', close).on('close', close);
    socket.on('error', close).on('close', close);
    // No byte either way for the idle timeout ends the tunnel, as for HTTP.
    for (const s of [socket, upstream]) {
      (s as Duplex & { setTimeout?: (ms: number, cb: () => void) => void }).setTimeout?.(deps.idleTimeoutMs, close);
    }

    socket.write(responseHead(status, { ...headers, [REQUEST_ID_HEADER]: ex.id }), 'latin1');
    relayWebSocket(socket, upstream, headers, ex, this.policy);
    if (this.head.length > 0) socket.unshift(this.head); // bytes the caller sent with its upgrade: the relay reads them first
  }

  // A refused upgrade: read the (small) body whole, as for any upstream error, to redact it.
  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    this.#status = status;
    this.#headers = headers;
    noteUpstreamStatus(this.deps, this.ex, status);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#refusal.add(controller, chunk);
  }

  onResponseEnd(): void {
    const status = this.#status;
    const { headers, body } = redactedError(this.deps, this.ex, status, this.#headers, this.#refusal.toBuffer());
    headers.connection = 'close';
    refuseUpgrade(this.socket, status, headers, body);
    this.ex.end({ status, upstreamStatus: status });
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (this.ex.ended) return;
    const error = toProxyError(err);
    let status = error.status;
    if (this.#status === 0) status = rejectUpgrade(this.socket, error, this.ex.id, this.deps.errors);
    else this.socket.destroy();
    this.ex.end({ status, code: error.code, upstreamStatus: this.#status || undefined, cause: err });
  }
}
