import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Config } from './config.js';
import { ProxyError, sendError } from './core/errors.js';
import { CALLER_CLOSED, Exchange, ExchangeTracker } from './core/exchange.js';
import { forward, MAX_INSPECT_BYTES, type ForwardDeps } from './proxy/forward.js';
import { billingHeaders, upstreamRequestHeaders } from './core/headers.js';
import { controlPlane, isReserved } from './control/health.js';
import type { KeyReloadResult, KeyStore } from './key.js';
import { Ledger } from './usage/ledger.js';
import type { Logger } from './core/logger.js';
import { createMetrics, type Metrics } from './core/metrics.js';
import { Admission, type Admitted, type Held } from './policy/admission.js';
import { createUpstreamAgent } from './proxy/tunnel.js';
import { rejectUpgrade, tunnelUpgrade } from './proxy/upgrade.js';
import type { WsPolicy } from './proxy/ws-session.js';

export interface AppDeps {
  logger: Logger;
  /** Made by the caller, whose logger guards against the live key. */
  keyStore: KeyStore;
}

export interface ProxyApp {
  /** The request listener: reserved paths, then forwarding. */
  handler: (req: IncomingMessage, res: ServerResponse) => void;
  /** The `upgrade` listener: WebSocket tunnels. */
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** The `connect` listener: this is no open proxy, so CONNECT gets the contract's 400. */
  onConnect: (req: IncomingMessage, socket: Duplex) => void;
  keyStore: KeyStore;
  metrics: Metrics;
  /** What the agent has spent, and its budget. */
  ledger: Ledger;
  /** Re-reads the key file (SIGHUP); a bad new key keeps the old one. */
  reloadKey: () => KeyReloadResult;
  /** Readiness turns 503 and new exchanges get `draining`; resolves when the open ones are done. */
  drain: () => Promise<void>;
  close: () => Promise<void>;
}

/**
 * Builds the sidecar from a parsed config. Listening, signals and the process
 * belong to main.ts, so tests build as many apps as they like.
 */
export function createApp(config: Config, deps: AppDeps): ProxyApp {
  const { logger, keyStore } = deps;
  const metrics = createMetrics(() => http.open);
  const agent = createUpstreamAgent(config);
  const http = new ExchangeTracker(metrics, logger, 'http');
  const websockets = new ExchangeTracker(metrics, logger, 'websocket');
  const ledger = new Ledger({ maxTokens: config.maxTokens, maxRequests: config.maxRequests, usageLogFile: config.usageLogFile, metrics, logger });
  let draining = false;
  const admission = new Admission(config, ledger, () => draining);
  const pinned = billingHeaders(config);
  const headersFor = (ex: Exchange): string[] => upstreamRequestHeaders(ex.req.rawHeaders, keyStore.key, ex.id, pinned);

  const upstream: ForwardDeps = {
    agent,
    upstreamUrl: config.upstreamUrl,
    idleTimeoutMs: config.idleTimeoutMs,
    maxBodyBytes: config.maxBodyBytes,
    metrics,
    logger,
    keyFingerprint: () => keyStore.fingerprint,
    currentKey: () => keyStore.key,
  };
  const wsPolicy: WsPolicy = { ledger, models: admission.models, tools: admission.tools, maxMessageBytes: config.maxBodyBytes, maxInspectBytes: MAX_INSPECT_BYTES, reserveTokens: config.reserveTokens, logger };

  function refuse(ex: Exchange, res: ServerResponse, err: unknown): void {
    if (!(err instanceof ProxyError)) {
      // The caller went away while its body was read.
      ex.end({ status: CALLER_CLOSED, cause: err });
      return;
    }
    // Unread bodies stay on the socket: close it rather than parse them as a next request.
    sendError(res, err, ex.id, true);
    ex.end({ status: err.status, code: err.code });
  }

  const reserved = controlPlane({ config, keyStore, metrics, ledger, isDraining: () => draining, startedAt: Date.now() });

  function handler(req: IncomingMessage, res: ServerResponse): void {
    if (isReserved(req)) {
      reserved(req, res);
      return;
    }
    const ex = new Exchange(req, http, keyStore.key);
    let admitted: Admitted;
    let held: Held | Promise<Held>;
    try {
      admitted = admission.request(ex);
      held = admission.body(ex, admitted.route);
    } catch (err) {
      refuse(ex, res, err);
      return;
    }
    if (!(held instanceof Promise)) {
      forward(upstream, ex, res, admitted.upstreamTarget, headersFor(ex), undefined, held.call);
      return;
    }
    // The body was held to be checked.
    held.then(
      ({ raw, call }) => {
        if (req.socket.destroyed) {
          call?.reservation.release();
          ex.end({ status: CALLER_CLOSED });
          return;
        }
        forward(upstream, ex, res, admitted.upstreamTarget, headersFor(ex), raw?.toBody(), call);
      },
      (err: unknown) => refuse(ex, res, err),
    );
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy()); // before anything async (httpxy #79)
    const ex = new Exchange(req, websockets, keyStore.key);
    let admitted: Admitted;
    try {
      admitted = admission.request(ex);
    } catch (err) {
      const error = err as ProxyError;
      rejectUpgrade(socket, error, ex.id);
      ex.end({ status: error.status, code: error.code });
      return;
    }
    tunnelUpgrade(upstream, wsPolicy, ex, socket, head, admitted.upstreamTarget, headersFor(ex));
  }

  function noteReload(result: KeyReloadResult): KeyReloadResult {
    if (result.error) {
      metrics.keyReloads.inc({ result: 'rejected' });
      logger.error({ reason: result.error, keyFingerprint: keyStore.fingerprint }, 'new key rejected; keeping the previous key');
    } else if (result.changed) {
      metrics.keyReloads.inc({ result: 'success' });
      logger.info({ keyFingerprint: keyStore.fingerprint }, 'key reloaded');
    }
    logger.flush();
    return result;
  }
  keyStore.watch(noteReload);

  function onConnect(req: IncomingMessage, socket: Duplex): void {
    socket.on('error', () => socket.destroy());
    const ex = new Exchange(req, http, keyStore.key);
    const error = new ProxyError('bad_request_target', 'This is not a forward proxy: CONNECT is refused.');
    rejectUpgrade(socket, error, ex.id);
    ex.end({ status: error.status, code: error.code });
  }

  const idle = (tracker: ExchangeTracker): Promise<void> =>
    tracker.open === 0 ? Promise.resolve() : new Promise((resolve) => tracker.once('idle', resolve));

  return {
    handler,
    onUpgrade,
    onConnect,
    keyStore,
    metrics,
    ledger,
    reloadKey: () => noteReload(keyStore.reload()),
    drain: async () => {
      draining = true;
      await Promise.all([idle(http), idle(websockets)]);
    },
    close: async () => {
      keyStore.close();
      await Promise.all([agent.close(), ledger.close()]);
    },
  };
}

/** The HTTP server for an app: the same options in production and in tests. */
export function createProxyServer(app: ProxyApp): Server {
  // noDelay: each SSE event leaves as it is written, not after Nagle's 40 ms.
  // keepAliveTimeout above the 60 s of common load balancers, so they close first.
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, app.handler);
  server.on('upgrade', app.onUpgrade);
  server.on('connect', app.onConnect);
  return server;
}
