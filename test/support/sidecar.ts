import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createApp, createProxyServer, type ProxyApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { KeyStore } from '../../src/key.js';
import { createLogger } from '../../src/logger.js';
import { loadTestPki, type TestPki } from '../../testkit/test-ca.js';

/**
 * A key shaped like a real project key, so masks and fragments look like OpenAI's.
 * Random-looking on purpose: leak sweeps search for every 6-character fragment,
 * which runs like "123456" or "abcdef" would find in timestamps and UUIDs.
 */
export const TEST_KEY = 'sk-proj-Q7vXmLkRtZwHsJdNfGpYcBqWeUaToKiMxPzVnLbCr';

export function testPki(): TestPki {
  return loadTestPki(process.env.API_PROXY_TEST_PKI!);
}

export interface Sidecar {
  url: string;
  port: number;
  app: ProxyApp;
  config: Config;
  /** Every log line written, as text. */
  logs: string[];
  close(): Promise<void>;
}

/** The real app and server on `host`:0, configured from `env` as main.ts would be. */
export async function startSidecar(env: Record<string, string | undefined>, host = '127.0.0.1'): Promise<Sidecar> {
  const config = loadConfig({ OPENAI_API_KEY: TEST_KEY, LOG_LEVEL: 'info', ...env });
  const logs: string[] = [];
  const keyStore = new KeyStore(config.key, config.keySource, config.keyFile);
  const logger = createLogger(config.logLevel, () => keyStore.key, { write: (s: string) => void logs.push(s) });
  const app = createApp(config, { logger, keyStore });
  const server = createProxyServer(app);
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}`,
    port,
    app,
    config,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await app.close();
    },
  };
}
