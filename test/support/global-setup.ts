import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { createTestPki } from '../../testkit/test-ca.js';

/** One test CA per run; every test process trusts it through NODE_EXTRA_CA_CERTS. */
export default async function setup(): Promise<() => void> {
  const dir = mkdtempSync(join(tmpdir(), 'api-proxy-pki-'));
  const pki = await createTestPki(dir);
  process.env.NODE_EXTRA_CA_CERTS = pki.caFile;
  process.env.API_PROXY_TEST_PKI = dir;
  // This process reads NODE_EXTRA_CA_CERTS at its first TLS context: make that now, not after teardown.
  createSecureContext();
  return () => {
    rmSync(dir, { recursive: true, force: true });
  };
}
