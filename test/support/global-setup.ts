import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestPki } from '../../testkit/test-ca.js';
import { TEST_PROXY_PASSWORD } from '../../testkit/squid.js';
import { CAPTURE_DIR, TEST_KEYS } from './sidecar.js';

/**
 * A fresh test CA per run; every test process trusts it through NODE_EXTRA_CA_CERTS.
 * It stays in .cache/ (ignored) after the run: processes Vitest starts late read
 * that variable too, and must find the file.
 *
 * After the run, everything every in-process sidecar logged (at trace) and sent to
 * callers is searched for every test key and every 6-character fragment of each, and for
 * the Squid password the shipped-Squid tests give sidecars.
 */
export default async function setup(): Promise<() => void> {
  const dir = fileURLToPath(new URL('../../.cache/test-pki', import.meta.url));
  rmSync(dir, { recursive: true, force: true });
  rmSync(CAPTURE_DIR, { recursive: true, force: true });
  const pki = await createTestPki(dir);
  process.env.NODE_EXTRA_CA_CERTS = pki.caFile;
  process.env.API_PROXY_TEST_PKI = dir;
  return () => sweepForKey();
}

function sweepForKey(): void {
  let files: string[];
  try {
    files = readdirSync(CAPTURE_DIR).map((f) => join(CAPTURE_DIR, f));
  } catch {
    return; // no sidecar ran (a filtered run)
  }
  const text = files.map((f) => readFileSync(f, 'utf8')).join('\n');
  const hits: string[] = [];
  for (const { key, prefix } of TEST_KEYS) {
    const secret = key.slice(prefix.length);
    if (text.includes(key)) hits.push(`the whole key ${prefix}…`);
    for (let i = 0; i + 6 <= secret.length; i++) {
      const fragment = secret.slice(i, i + 6);
      if (text.includes(fragment)) hits.push(fragment);
    }
  }
  // Squid's password rides in the sidecar's HTTPS_PROXY: shown nowhere either.
  if (text.includes(TEST_PROXY_PASSWORD)) hits.push("Squid's password");
  console.log(`key sweep: ${(text.length / 1e6).toFixed(1)} MB from ${files.length} test processes searched, ${hits.length} hits`);
  if (hits.length > 0) throw new Error(`the key leaked into logs or responses: ${hits.join(', ')} (see ${CAPTURE_DIR})`);
}
