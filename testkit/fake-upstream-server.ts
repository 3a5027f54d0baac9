/**
 * The fake OpenAI upstream as a process of its own, for the offline compose
 * stack: makes a throwaway CA and a certificate for api.openai.test in PKI_DIR
 * (the sidecar trusts PKI_DIR/ca.pem), then serves TLS on PORT until SIGTERM.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { presentedKeys } from '../src/policy/caller-auth.js';
import { fingerprint } from '../src/key.js';
import { startFakeUpstream, type Received } from './fake-upstream.js';
import { createTestPki, loadTestPki } from './test-ca.js';

const dir = process.env.PKI_DIR ?? '/pki';
const port = Number(process.env.PORT ?? 443);
// A restarted fake keeps the CA the sidecar already trusts.
const pki = existsSync(join(dir, 'ca.pem')) ? loadTestPki(dir) : await createTestPki(dir);
const fake = await startFakeUpstream({ pki, listenHost: '0.0.0.0', port, keepAliveTimeoutMs: 120_000 });
fake.on('request', (r: Received) => {
  // What arrived, and the fingerprint of the bearer it carried (never the bearer): the compose smoke test reads this.
  const [bearer] = presentedKeys(r.headers);
  console.log(JSON.stringify({ method: r.method, path: r.path, websocket: r.websocket, bearer: bearer ? fingerprint(bearer) : null }));
});
console.log(JSON.stringify({ listening: fake.port, ca: pki.caFile }));
const stop = (): void => void fake.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
