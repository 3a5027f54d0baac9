import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createTestPki } from '../../testkit/test-ca.js';

/**
 * A fresh test CA per run; every test process trusts it through NODE_EXTRA_CA_CERTS.
 * It stays in .cache/ (ignored) after the run: processes Vitest starts late read
 * that variable too, and must find the file.
 */
export default async function setup(): Promise<void> {
  const dir = fileURLToPath(new URL('../../.cache/test-pki', import.meta.url));
  rmSync(dir, { recursive: true, force: true });
  const pki = await createTestPki(dir);
  process.env.NODE_EXTRA_CA_CERTS = pki.caFile;
  process.env.API_PROXY_TEST_PKI = dir;
}
