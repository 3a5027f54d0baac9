import { mkdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { generate } from 'selfsigned';

/** The host names the fake upstream answers for, as in a real deployment. */
export const FAKE_HOST = 'api.openai.test';
export const FAKE_ANTHROPIC_HOST = 'api.anthropic.test';
export const FAKE_GEMINI_HOST = 'generativelanguage.googleapis.test';

export interface TestPki {
  dir: string;
  caFile: string;
  cert: string;
  key: string;
}

/**
 * A throwaway CA and a server certificate it signed, for the TLS fake upstream.
 * Processes trust it through NODE_EXTRA_CA_CERTS, as they would a private CA.
 */
export async function createTestPki(dir: string): Promise<TestPki> {
  mkdirSync(dir, { recursive: true });
  const notAfterDate = new Date(Date.now() + 7 * 24 * 3600 * 1000);
  const ca = await generate([{ name: 'commonName', value: 'api-proxy test CA' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    notAfterDate,
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    ],
  });
  const server = await generate([{ name: 'commonName', value: FAKE_HOST }], {
    keyType: 'ec',
    algorithm: 'sha256',
    notAfterDate,
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: FAKE_HOST },
          { type: 2, value: `*.openai.test` },
          { type: 2, value: FAKE_ANTHROPIC_HOST },
          { type: 2, value: `*.anthropic.test` },
          { type: 2, value: FAKE_GEMINI_HOST },
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
        ],
      },
    ],
  });
  const pki = { dir, caFile: join(dir, 'ca.pem'), cert: server.cert, key: server.private };
  writeFileSync(pki.caFile, ca.cert);
  writeFileSync(join(dir, 'server.pem'), server.cert);
  writeFileSync(join(dir, 'server-key.pem'), server.private, { mode: 0o600 });
  return pki;
}

/** The PKI a previous createTestPki wrote into `dir`. */
export function loadTestPki(dir: string): TestPki {
  const caFile = join(dir, 'ca.pem');
  if (!existsSync(caFile)) throw new Error(`no test PKI in ${dir}`);
  return {
    dir,
    caFile,
    cert: readFileSync(join(dir, 'server.pem'), 'utf8'),
    key: readFileSync(join(dir, 'server-key.pem'), 'utf8'),
  };
}
