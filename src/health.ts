import { connect } from 'node:net';
import { Router } from 'express';
import pkg from '../package.json' with { type: 'json' };
import type { Config } from './config.js';
import type { KeyStore } from './key.js';
import type { Metrics } from './metrics.js';

// A probe must answer well inside a kubelet's 1 s default timeout.
const PROBE_TIMEOUT_MS = 800;

/** True when a TCP connection to the egress proxy opens in time. */
export function canConnect(url: URL, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  return new Promise((resolve) => {
    const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ''), port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The proxy URL as safe to show: no credentials. */
function shown(url: URL): string {
  return `${url.protocol}//${url.host}`;
}

export interface HealthDeps {
  config: Config;
  keyStore: KeyStore;
  metrics: Metrics;
  isDraining: () => boolean;
  startedAt: number;
}

export function healthRoutes({ config, keyStore, metrics, isDraining, startedAt }: HealthDeps): Router {
  const router = Router({ caseSensitive: true, strict: true });

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (_req, res) => {
    const reasons: string[] = [];
    if (isDraining()) reasons.push('draining');
    if (!keyStore.key) reasons.push('no key loaded');
    if (config.egressProxy && !(await canConnect(config.egressProxy))) reasons.push('egress proxy unreachable');
    if (reasons.length > 0) res.status(503).json({ status: 'not_ready', reasons });
    else res.json({ status: 'ready' });
  });

  router.get('/health', async (_req, res) => {
    const reachable = config.egressProxy ? await canConnect(config.egressProxy) : null;
    const sum = async (m: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> =>
      (await m.get()).values.reduce((a, v) => a + v.value, 0);
    res.json({
      status: isDraining() ? 'draining' : 'ok',
      version: pkg.version,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      key: { source: keyStore.source, fingerprint: keyStore.fingerprint },
      upstream: { url: config.upstreamUrl, basePath: config.basePath },
      egressProxy: config.egressProxy
        ? { configured: true, url: shown(config.egressProxy), reachable }
        : { configured: false },
      counts: {
        requests: await sum(metrics.requests),
        inFlight: await sum(metrics.inFlight),
        upstreamErrors: await sum(metrics.upstreamErrors),
        upstreamAuthFailures: await sum(metrics.upstreamAuthFailures),
        websocketsActive: await sum(metrics.websocketsActive),
        keyReloads: await sum(metrics.keyReloads),
      },
    });
  });

  router.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  return router;
}
