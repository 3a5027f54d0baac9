import { once } from 'node:events';
import { appendFileSync, mkdirSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createApp, createProxyServer, keyStoresFor, type ProxyApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import type { ProviderName } from '../../src/providers/index.js';
import { createLogger } from '../../src/core/logger.js';
import { loadTestPki, type TestPki } from '../../testkit/test-ca.js';

/**
 * A key shaped like a real project key, so masks and fragments look like OpenAI's.
 * Random-looking on purpose: leak sweeps search for every 6-character fragment,
 * which runs like "123456" or "abcdef" would find in timestamps and UUIDs.
 */
export const TEST_KEY = 'sk-proj-Q7vXmLkRtZwHsJdNfGpYcBqWeUaToKiMxPzVnLbCr';
/** Anthropic's key shape; its own random tail, so a sweep tells which key leaked. */
export const TEST_ANTHROPIC_KEY = 'sk-ant-api03-Wm4TzRq8VbKx2NcJh7PyLd5GsFe9XuAo3HiBk6QnMt';
export const TEST_GEMINI_KEY = 'AIzaSyTestR7kQ2mX9vL4bN8cW1dH6pK3sT5gY0fJ';
export const TEST_AZURE_KEY = 'AzureTestKey7Fq2Lm9Xv4Rb8Nc1Wd6Hp3Ks5Tg0Y';
/** Every key a test sidecar may hold, with the prefix that is no secret: global-setup.ts sweeps for each. */
export const TEST_KEYS = [
  { key: TEST_KEY, prefix: 'sk-proj-' },
  { key: TEST_ANTHROPIC_KEY, prefix: 'sk-ant-api03-' },
  { key: TEST_GEMINI_KEY, prefix: 'AIzaSyTest' },
  { key: TEST_AZURE_KEY, prefix: 'AzureTestKey' },
];

export function testPki(): TestPki {
  return loadTestPki(process.env.API_PROXY_TEST_PKI!);
}

export interface Sidecar {
  /** The first provider's port (OpenAI's when its key is set). */
  url: string;
  port: number;
  /** Each served provider's base URL. */
  urls: Partial<Record<ProviderName, string>>;
  app: ProxyApp;
  config: Config;
  /** Every log line written, as text. */
  logs: string[];
  close(): Promise<void>;
}

/** Where every sidecar of the run leaves what it logged and sent; global-setup.ts sweeps it for the key. */
export const CAPTURE_DIR = fileURLToPath(new URL('../../.cache/capture/', import.meta.url));

/** Records every byte a server socket sends (head, body, WebSocket frames), below the write APIs. */
interface WritableInternals {
  _write(chunk: unknown, encoding: BufferEncoding, callback: (err?: Error | null) => void): void;
  _writev(chunks: { chunk: unknown }[], callback: (err?: Error | null) => void): void;
}

function tap(socket: Socket, sent: string[]): void {
  const s = socket as unknown as WritableInternals;
  const write = s._write.bind(s);
  const writev = s._writev.bind(s);
  s._write = (chunk, encoding, callback) => {
    sent.push(String(chunk));
    write(chunk, encoding, callback);
  };
  s._writev = (chunks, callback) => {
    for (const c of chunks) sent.push(String(c.chunk));
    writev(chunks, callback);
  };
}

/**
 * The real app and server on `host`:0, configured from `env` as main.ts would be.
 * Logs at trace unless told otherwise, so the whole suite doubles as a leak sweep.
 */
export async function startSidecar(env: Record<string, string | undefined>, host = '127.0.0.1'): Promise<Sidecar> {
  const config = loadConfig({ OPENAI_API_KEY: TEST_KEY, LOG_LEVEL: 'trace', ...env });
  const logs: string[] = [];
  const keyStores = keyStoresFor(config);
  const logger = createLogger(config.logLevel, keyStores, { write: (s: string) => void logs.push(s) });
  const app = createApp(config, { logger, keyStores });
  const sent: string[] = [];
  const servers = app.ports.map((port) => createProxyServer(port));
  const urls: Partial<Record<ProviderName, string>> = {};
  for (const [i, server] of servers.entries()) {
    server.on('connection', (socket: Socket) => tap(socket, sent));
    server.listen(0, host);
    await once(server, 'listening');
    urls[app.ports[i]!.served.provider.name] = `http://${host}:${(server.address() as AddressInfo).port}`;
  }
  const { port } = servers[0]!.address() as AddressInfo;
  return {
    url: `http://${host}:${port}`,
    port,
    urls,
    app,
    config,
    logs,
    close: async () => {
      for (const server of servers) server.closeAllConnections();
      await Promise.all(servers.map((server) => new Promise((r) => server.close(r))));
      await app.close();
      mkdirSync(CAPTURE_DIR, { recursive: true });
      appendFileSync(join(CAPTURE_DIR, `${process.pid}.txt`), [...logs, ...sent].join('\n'));
    },
  };
}
