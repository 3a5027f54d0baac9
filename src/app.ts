import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { callerAllowed } from './caller-auth.js';
import type { Config } from './config.js';
import { ProxyError, sendError } from './errors.js';
import { Exchange, ExchangeTracker } from './exchange.js';
import { declaredTooLarge, forward, type ForwardDeps } from './forward.js';
import { upstreamRequestHeaders } from './headers.js';
import { isReserved, reservedHandler } from './health.js';
import type { KeyReloadResult, KeyStore } from './key.js';
import type { Logger } from './logger.js';
import { createMetrics, routeFamily, type Metrics } from './metrics.js';
import { upstreamPath } from './target.js';
import { createUpstreamAgent } from './tunnel.js';
import { rejectUpgrade, tunnelUpgrade } from './upgrade.js';

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
  const metrics = createMetrics();
  const agent = createUpstreamAgent(config);
  const http = new ExchangeTracker(metrics, logger, 'http');
  const websockets = new ExchangeTracker(metrics, logger, 'websocket');
  let draining = false;

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

  /**
   * The checks every exchange passes before anything goes upstream, in order.
   * Each returns the upstream path, or throws the ProxyError the caller gets.
   */
  function admit(ex: Exchange): string {
    if (draining) throw new ProxyError('draining', 'The proxy is shutting down; retry on another instance.');
    const path = upstreamPath(ex.req.url ?? '', config.basePath);
    ex.path = path;
    ex.route = routeFamily(path, config.basePath);
    if (!callerAllowed(ex.req.headers, config.proxyAuthToken)) {
      throw new ProxyError('proxy_auth_required', 'This proxy needs its token as the bearer key.');
    }
    if (declaredTooLarge(ex.req.headers, config.maxBodyBytes)) {
      throw new ProxyError('body_too_large', `The request body is over ${config.maxBodyBytes} bytes.`);
    }
    return path;
  }

  const reserved = reservedHandler({ config, keyStore, metrics, isDraining: () => draining, startedAt: Date.now() });

  function handler(req: IncomingMessage, res: ServerResponse): void {
    if (isReserved(req)) {
      reserved(req, res);
      return;
    }
    const ex = new Exchange(req, http, keyStore.key);
    let path: string;
    try {
      path = admit(ex);
    } catch (err) {
      const error = err as ProxyError;
      // Unread bodies stay on the socket: close it rather than parse them as a next request.
      sendError(res, error, ex.id, true);
      ex.end({ status: error.status, code: error.code });
      return;
    }
    forward(upstream, ex, res, path, upstreamRequestHeaders(req.rawHeaders, keyStore.key, ex.id));
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy()); // before anything async (httpxy #79)
    const ex = new Exchange(req, websockets, keyStore.key);
    let path: string;
    try {
      path = admit(ex);
    } catch (err) {
      const error = err as ProxyError;
      rejectUpgrade(socket, error, ex.id);
      ex.end({ status: error.status, code: error.code });
      return;
    }
    tunnelUpgrade(upstream, ex, socket, head, path, upstreamRequestHeaders(req.rawHeaders, keyStore.key, ex.id));
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
    reloadKey: () => noteReload(keyStore.reload()),
    drain: async () => {
      draining = true;
      await Promise.all([idle(http), idle(websockets)]);
    },
    close: async () => {
      keyStore.close();
      await agent.close();
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
