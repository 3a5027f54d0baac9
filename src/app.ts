import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { callerAllowed } from './caller-auth.js';
import type { Config } from './config.js';
import { ProxyError, sendError } from './errors.js';
import { CALLER_CLOSED, Exchange, ExchangeTracker } from './exchange.js';
import { declaredTooLarge, forward, MAX_INSPECT_BYTES, type ForwardDeps } from './forward.js';
import { upstreamRequestHeaders } from './headers.js';
import { controlPlane, isReserved } from './health.js';
import type { KeyReloadResult, KeyStore } from './key.js';
import { Ledger } from './ledger.js';
import type { Logger } from './logger.js';
import { createMetrics, routeFamily, type Metrics } from './metrics.js';
import { ModelPolicy } from './model-policy.js';
import { readModelBody } from './request-body.js';
import { upstreamPath } from './target.js';
import { createUpstreamAgent } from './tunnel.js';
import { rejectUpgrade, tunnelUpgrade } from './upgrade.js';
import type { WsPolicy } from './ws-session.js';

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
  const metrics = createMetrics();
  const agent = createUpstreamAgent(config);
  const http = new ExchangeTracker(metrics, logger, 'http');
  const websockets = new ExchangeTracker(metrics, logger, 'websocket');
  const ledger = new Ledger({ maxTokens: config.maxTokens, maxRequests: config.maxRequests, usageLogFile: config.usageLogFile, metrics, logger });
  const models = config.allowedModels ? new ModelPolicy(config.allowedModels) : null;
  let draining = false;

  const upstream: ForwardDeps = {
    agent,
    upstreamUrl: config.upstreamUrl,
    idleTimeoutMs: config.idleTimeoutMs,
    maxBodyBytes: config.maxBodyBytes,
    basePath: config.basePath,
    ledger,
    metrics,
    logger,
    keyFingerprint: () => keyStore.fingerprint,
    currentKey: () => keyStore.key,
  };
  const wsPolicy: WsPolicy = { ledger, models, maxMessageBytes: config.maxBodyBytes, maxInspectBytes: MAX_INSPECT_BYTES, logger };

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
    ledger.admit(false); // spent: refused before anything is read or sent
    return path;
  }

  /** What MAX_REQUESTS counts: every forwarded request but GET and HEAD. */
  const counts = (method: string | undefined): boolean => method !== 'GET' && method !== 'HEAD';

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
    let path: string;
    try {
      path = admit(ex);
    } catch (err) {
      refuse(ex, res, err);
      return;
    }
    const send = (body?: Buffer): void => {
      ledger.admit(counts(req.method));
      forward(upstream, ex, res, path, upstreamRequestHeaders(req.rawHeaders, keyStore.key, ex.id), body);
    };
    if (!models) {
      try {
        send();
      } catch (err) {
        refuse(ex, res, err);
      }
      return;
    }
    // The model is read from the body, so the body is held until it is checked (within MAX_BODY_BYTES).
    readModelBody(req, config.maxBodyBytes, config.idleTimeoutMs)
      .then((held) => {
        if (held) {
          models.check(held.json);
          ex.bytesIn = held.raw.length;
        }
        send(held?.raw);
      })
      .catch((err: unknown) => refuse(ex, res, err));
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
    tunnelUpgrade(upstream, wsPolicy, ex, socket, head, path, upstreamRequestHeaders(req.rawHeaders, keyStore.key, ex.id));
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
