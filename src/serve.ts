// The sidecar process: config, then listen; signals drain, reload the key.
import { setTimeout as sleep } from 'node:timers/promises';
import { createApp, createProxyServer } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { KeyStore } from './key.js';
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
const keyStore = new KeyStore(config.key, config.keySource, config.keyFile);
const logger = createLogger(config.logLevel, () => keyStore.key);
const app = createApp(config, { logger, keyStore });

const server = createProxyServer(app);
server.on('error', (err) => {
  process.stderr.write(`api-proxy: cannot listen on ${config.host}:${config.port}: ${err.message}\n`);
  process.exit(1);
});

server.listen(config.port, config.host, () => {
  const address = server.address();
  logger.info(
    {
      address: typeof address === 'object' && address ? `${address.address}:${address.port}` : address,
      upstream: config.upstreamUrl,
      basePath: config.basePath,
      egressProxy: config.egressProxy ? `${config.egressProxy.protocol}//${config.egressProxy.host}` : null,
      keySource: keyStore.source,
      keyFingerprint: keyStore.fingerprint,
    },
    'listening',
  );
  logger.flush(); // lifecycle lines go out at once; per-exchange lines are batched
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  const drained = app.drain();
  server.close();
  // Logged once the listener is closed, so the line means new connections are refused.
  logger.info({ signal, graceMs: config.shutdownGraceMs }, 'draining');
  logger.flush();
  const finished = await Promise.race([drained.then(() => true), sleep(config.shutdownGraceMs).then(() => false)]);
  logger.info({ finished }, finished ? 'drained; exiting' : 'grace period over; closing what is left');
  server.closeAllConnections();
  // What this run spent, in one line a CI log keeps.
  const { tokens, requests, unknown, budget } = app.ledger.snapshot();
  logger.info({ ...tokens, requests, unknown, budgetExhausted: budget.exhausted }, 'usage');
  await app.ledger.close();
  logger.flush(() => process.exit(0));
}

process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGHUP', () => {
  if (keyStore.source === 'file') app.reloadKey();
  else logger.info('SIGHUP: the key comes from OPENAI_API_KEY; nothing to reload');
});
