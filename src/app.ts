import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Config, ProviderConfig } from './config.js';
import { ProxyError, sendError } from './core/errors.js';
import { CALLER_CLOSED, Exchange, ExchangeTracker } from './core/exchange.js';
import { forward, MAX_INSPECT_BYTES, type ForwardDeps } from './proxy/forward.js';
import { billingHeaders, upstreamRequestHeaders } from './core/headers.js';
import { controlPlane, isReserved } from './control/health.js';
import { KeyStore, type KeyReloadResult } from './key.js';
import { Ledger } from './usage/ledger.js';
import type { Logger } from './core/logger.js';
import { createMetrics, type Metrics } from './core/metrics.js';
import { Admission, type Admitted, type Held } from './policy/admission.js';
import { createUpstreamAgent } from './proxy/tunnel.js';
import { rejectUpgrade, tunnelUpgrade } from './proxy/upgrade.js';
import type { WsPolicy } from './proxy/ws-session.js';

export interface AppDeps {
  logger: Logger;
  /** One per provider, in `config.providers` order (keyStoresFor); made by the caller, whose logger guards against every live key. */
  keyStores: readonly KeyStore[];
}

/** One provider's port: its listeners, on one shared ledger, metrics and drain. */
export interface PortApp {
  served: ProviderConfig;
  keyStore: KeyStore;
  /** The request listener: reserved paths, then forwarding. */
  handler: (req: IncomingMessage, res: ServerResponse) => void;
  /** The `upgrade` listener: WebSocket tunnels. */
  onUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** The `connect` listener: this is no open proxy, so CONNECT gets the contract's 400. */
  onConnect: (req: IncomingMessage, socket: Duplex) => void;
}

export interface ProxyApp {
  /** One per provider served, in `config.providers` order. */
  ports: readonly PortApp[];
  metrics: Metrics;
  /** What the agent has spent across every provider, and its one budget. */
  ledger: Ledger;
  /** Re-reads every key file (SIGHUP); a bad new key keeps the old one. */
  reloadKeys: () => KeyReloadResult[];
  /** Readiness turns 503 and new exchanges get `draining`; resolves when the open ones are done. */
  drain: () => Promise<void>;
  close: () => Promise<void>;
}

/** A key store per provider served, each naming its own setting when a reload fails. */
export function keyStoresFor(config: Config): KeyStore[] {
  return config.providers.map((p) => new KeyStore(p.key, p.keySource, p.keyFile, `${p.provider.settings.key}_FILE`));
}

/**
 * Builds the sidecar from a parsed config: a port per provider, one ledger and
 * budget for all. Listening, signals and the process belong to serve.ts, so
 * tests build as many apps as they like.
 */
export function createApp(config: Config, deps: AppDeps): ProxyApp {
  const { logger, keyStores } = deps;
  const metrics = createMetrics(() => http.open);
  const http = new ExchangeTracker(metrics, logger, 'http');
  const websockets = new ExchangeTracker(metrics, logger, 'websocket');
  const ledger = new Ledger({ providers: config.providers.map((p) => p.provider.name), maxTokens: config.maxTokens, maxRequests: config.maxRequests, usageLogFile: config.usageLogFile, metrics, logger });
  let draining = false;
  const isDraining = (): boolean => draining;
  // One connection pool per upstream origin (and so per Squid tunnel set).
  const agents = config.providers.map((p) => createUpstreamAgent(p.egressProxy, config));
  const health = { config, keyStores, metrics, ledger, isDraining, startedAt: Date.now() };

  function noteReload(keyStore: KeyStore, result: KeyReloadResult): KeyReloadResult {
    if (result.error) {
      metrics.keyReloads.inc({ result: 'rejected' });
      logger.error({ reason: result.error, keyFingerprint: keyStore.fingerprint }, 'new key rejected; keeping the previous key');
    } else if (result.changed) {
      metrics.keyReloads.inc({ result: 'success' });
      logger.info({ keySetting: keyStore.setting, keyFingerprint: keyStore.fingerprint }, 'key reloaded');
    }
    logger.flush();
    return result;
  }

  const ports = config.providers.map((served, i): PortApp => {
    const keyStore = keyStores[i]!;
    keyStore.watch((result) => noteReload(keyStore, result));
    const { provider } = served;
    const admission = new Admission(config, served, ledger, isDraining);
    const pinned = provider.billingHeaders ? billingHeaders(config) : [];
    const headersFor = (ex: Exchange): string[] =>
      upstreamRequestHeaders(ex.req.rawHeaders, ex.id, [...pinned, ...provider.credential(keyStore.key, ex.req.rawHeaders)]);
    const upstream: ForwardDeps = {
      agent: agents[i]!,
      upstreamUrl: served.upstreamUrl,
      idleTimeoutMs: config.idleTimeoutMs,
      maxBodyBytes: config.maxBodyBytes,
      metrics,
      logger,
      keyFingerprint: () => keyStore.fingerprint,
      currentKey: () => keyStore.key,
      keySetting: served.keySetting,
      usage: provider.usage,
      errors: provider.errors,
    };
    const wsPolicy: WsPolicy = { provider: provider.name, ledger, models: admission.models, tools: admission.tools, maxMessageBytes: config.maxBodyBytes, maxInspectBytes: MAX_INSPECT_BYTES, reserveTokens: config.reserveTokens, logger };
    const reserved = controlPlane({ ...health, served, keyStore });

    function refuse(ex: Exchange, res: ServerResponse, err: unknown): void {
      if (!(err instanceof ProxyError)) {
        // The caller went away while its body was read.
        ex.end({ status: CALLER_CLOSED, cause: err });
        return;
      }
      // Unread bodies stay on the socket: close it rather than parse them as a next request.
      ex.end({ status: sendError(res, err, ex.id, provider.errors, true), code: err.code });
    }

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
        ex.end({ status: rejectUpgrade(socket, error, ex.id, provider.errors), code: error.code });
        return;
      }
      tunnelUpgrade(upstream, wsPolicy, ex, socket, head, admitted.upstreamTarget, headersFor(ex));
    }

    function onConnect(req: IncomingMessage, socket: Duplex): void {
      socket.on('error', () => socket.destroy());
      const ex = new Exchange(req, http, keyStore.key);
      const error = new ProxyError('bad_request_target', 'This is not a forward proxy: CONNECT is refused.');
      ex.end({ status: rejectUpgrade(socket, error, ex.id, provider.errors), code: error.code });
    }

    return { served, keyStore, handler, onUpgrade, onConnect };
  });

  const idle = (tracker: ExchangeTracker): Promise<void> =>
    tracker.open === 0 ? Promise.resolve() : new Promise((resolve) => tracker.once('idle', resolve));

  return {
    ports,
    metrics,
    ledger,
    reloadKeys: () => ports.filter((p) => p.keyStore.source === 'file').map((p) => noteReload(p.keyStore, p.keyStore.reload())),
    drain: async () => {
      draining = true;
      await Promise.all([idle(http), idle(websockets)]);
    },
    close: async () => {
      for (const k of keyStores) k.close();
      await Promise.all([...agents.map((a) => a.close()), ledger.close()]);
    },
  };
}

/** The HTTP server for one port of an app: the same options in production and in tests. */
export function createProxyServer(app: PortApp): Server {
  // noDelay: each SSE event leaves as it is written, not after Nagle's 40 ms.
  // keepAliveTimeout above the 60 s of common load balancers, so they close first.
  const server = createServer({ noDelay: true, keepAliveTimeout: 65_000 }, app.handler);
  server.on('upgrade', app.onUpgrade);
  server.on('connect', app.onConnect);
  return server;
}
