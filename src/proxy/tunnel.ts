import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import type * as Undici from 'undici';
import type { Config } from '../config.js';
import { ProxyError, toProxyError, whileConnecting } from '../core/errors.js';

// undici's index also loads fetch, caches, mocks and interceptors: 100 ms of the
// sidecar's start. The pieces the data path uses load in 40 (undici 7's own
// files, which it publishes as they are; its types come from the index). The
// index would also have attached connect() to every dispatcher: it is called
// here on the pool instead.
const require = createRequire(import.meta.url);
const Agent: typeof Undici.Agent = require('undici/lib/dispatcher/agent.js');
const Pool: typeof Undici.Pool = require('undici/lib/dispatcher/pool.js');
const buildConnector: typeof Undici.buildConnector = require('undici/lib/core/connect.js');
const connectThrough: (this: Undici.Pool, opts: Parameters<Undici.Pool['connect']>[0]) => Promise<Undici.Dispatcher.ConnectData> = require('undici/lib/api/api-connect.js');
type Agent = Undici.Agent;

// Idle pooled connections live this long (OpenAI keeps idle connections ~60 s;
// Squid's pconn_timeout is 1 min). Only idle ones: the pool keeps none beyond need.
const KEEP_ALIVE_MS = 30_000;
const TLS_SESSION_CACHE = 100;

/**
 * One TLS context for every upstream connection. Left to itself, tls.connect
 * builds an OpenSSL SSL_CTX per connection (~19 KB of native memory each, held
 * as long as the connection): with a thousand open streams that is a fifth of
 * the sidecar's memory. Every connection trusts the same roots (the system's
 * and NODE_EXTRA_CA_CERTS), so they can share one.
 */
const upstreamTls = (): { secureContext: SecureContext; maxCachedSessions: number } => ({
  secureContext: createSecureContext(),
  maxCachedSessions: TLS_SESSION_CACHE,
});

/**
 * The dispatcher every upstream exchange goes through. Connections are kept
 * alive and reused; with an egress proxy each connection is one CONNECT tunnel,
 * so N sequential requests cost one CONNECT and one TLS handshake, not N.
 */
export function createUpstreamAgent(egressProxy: URL | null, config: Config): Agent {
  return new Agent({
    connect: egressProxy
      ? tunnelConnector(egressProxy, config.connectTimeoutMs)
      : { timeout: config.connectTimeoutMs, ...upstreamTls() },
    keepAliveTimeout: KEEP_ALIVE_MS,
    keepAliveMaxTimeout: KEEP_ALIVE_MS,
    headersTimeout: config.idleTimeoutMs,
    bodyTimeout: config.idleTimeoutMs,
    pipelining: 1,
  });
}

type Connector = Undici.buildConnector.connector;

/**
 * Opens a CONNECT tunnel through the egress proxy, then TLS inside it. One
 * deadline covers proxy TCP, CONNECT and TLS. Failures are re-typed here, where
 * we still know which step failed: a proxy answering 403 is a policy decision
 * (egress_denied), not an outage.
 */
export function tunnelConnector(proxy: URL, timeoutMs: number): Connector {
  const proxyPool = new Pool(proxy.origin, { connect: { timeout: timeoutMs } });
  const tls = buildConnector({ timeout: timeoutMs, ...upstreamTls() });
  const auth = proxy.username
    ? `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}`
    : undefined;

  return (opts, callback) => {
    const port = opts.port || (opts.protocol === 'https:' ? '443' : '80');
    const authority = `${opts.hostname.includes(':') ? `[${opts.hostname}]` : opts.hostname}:${port}`;
    const abort = new AbortController();
    let tunnelSocket: Socket | undefined;
    let settled = false;
    const finish = (err: Error | null, socket?: Socket): void => {
      if (settled) {
        socket?.destroy();
        return;
      }
      settled = true;
      clearTimeout(timer);
      if (err) {
        tunnelSocket?.destroy();
        callback(whileConnecting(err), null);
      } else {
        callback(null, socket!);
      }
    };
    const timer = setTimeout(() => {
      abort.abort();
      finish(new ProxyError('upstream_timeout', `Connecting to the upstream through the egress proxy took over ${timeoutMs} ms.`));
    }, timeoutMs);

    connectThrough
      .call(proxyPool, {
        path: authority,
        headers: { host: authority, ...(auth ? { 'proxy-authorization': auth } : {}) },
        signal: abort.signal,
      })
      .then(({ statusCode, socket }) => {
        tunnelSocket = socket as Socket;
        if (statusCode !== 200) return finish(egressRefusal(statusCode, authority));
        if (opts.protocol !== 'https:') return finish(null, tunnelSocket);
        tls({ ...opts, httpSocket: tunnelSocket }, (err, tlsSocket) => {
          if (err) finish(toProxyError(err));
          else finish(null, tlsSocket as Socket);
        });
      })
      .catch((err: unknown) => {
        if (settled) return;
        const cause = toProxyError(err);
        finish(
          cause.code === 'upstream_unreachable'
            ? new ProxyError('upstream_unreachable', 'The egress proxy could not be reached.', { cause: err })
            : cause,
        );
      });
  };
}

function egressRefusal(status: number, authority: string): ProxyError {
  if (status === 403) {
    return new ProxyError('egress_denied', `The egress proxy refused the connection to ${authority} (403).`);
  }
  if (status === 407) {
    return new ProxyError('egress_denied', 'The egress proxy wants credentials it was not given (407): check the user and password in HTTPS_PROXY.');
  }
  if (status === 504) {
    return new ProxyError('upstream_timeout', `The egress proxy timed out connecting to ${authority}.`);
  }
  return new ProxyError('upstream_unreachable', `The egress proxy could not connect to ${authority} (${status}).`);
}
