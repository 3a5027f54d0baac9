// The sidecar process: config, then listen; signals drain, reload the key.
import { setTimeout as sleep } from 'node:timers/promises';
import { createApp, createProxyServer, keyStoresFor } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger } from './core/logger.js';

const EX_CONFIG = 78;

function configOrExit(): Config {
  try {
    return loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`api-proxy: configuration error: ${err.message}\n`);
    process.exit(EX_CONFIG);
  }
}

const config = configOrExit();
const keyStores = keyStoresFor(config);
const logger = createLogger(config.logLevel, keyStores);
const app = createApp(config, { logger, keyStores });

// A server per provider's port; one that cannot listen ends the process.
const servers = app.ports.map((port) => {
  const { served, keyStore } = port;
  const server = createProxyServer(port);
  server.on('error', (err) => {
    process.stderr.write(`api-proxy: cannot listen on ${config.host}:${served.port} (${served.provider.name}): ${err.message}\n`);
    process.exit(1);
  });
  server.listen(served.port, config.host, () => {
    const address = server.address();
    logger.info(
      {
        provider: served.provider.name,
        address: typeof address === 'object' && address ? `${address.address}:${address.port}` : address,
        upstream: served.upstreamUrl,
        basePath: served.basePath,
        egressProxy: served.egressProxy ? `${served.egressProxy.protocol}//${served.egressProxy.host}` : null,
        keySource: keyStore.source,
        keyFingerprint: keyStore.fingerprint,
      },
      'listening',
    );
    logger.flush(); // lifecycle lines go out at once; per-exchange lines are batched
  });
  return server;
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  const drained = app.drain();
  for (const server of servers) server.close();
  // Logged once the listener is closed, so the line means new connections are refused.
  logger.info({ signal, graceMs: config.shutdownGraceMs }, 'draining');
  logger.flush();
  const finished = await Promise.race([drained.then(() => true), sleep(config.shutdownGraceMs).then(() => false)]);
  logger.info({ finished }, finished ? 'drained; exiting' : 'grace period over; closing what is left');
  for (const server of servers) server.closeAllConnections();
  // What this run spent, in one line a CI log keeps.
  const { tokens, requests, unknown, budget } = app.ledger.snapshot();
  logger.info({ ...tokens, requests, unknown, budgetExhausted: budget.exhausted }, 'usage');
  await app.ledger.close();
  logger.flush(() => process.exit(0));
}

process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGHUP', () => {
  if (app.reloadKeys().length === 0) logger.info('SIGHUP: no key comes from a file; nothing to reload');
});
