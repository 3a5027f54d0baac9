/**
 * The product's main job on a local default: an agent's request goes to the
 * sidecar, which swaps the agent's credential for the key and sends it through
 * Squid (when installed) to a fake OpenAI upstream over TLS. No real key, no
 * internet. Prints what the upstream received, with the key masked.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { maskKey, startFakeUpstream } from '../testkit/fake-upstream.js';
import { freePort, SQUID_BIN, startSquid, waitForPort, type Squid } from '../testkit/squid.js';
import { createTestPki, FAKE_HOST } from '../testkit/test-ca.js';
import { until } from '../testkit/wait.js';

// Shaped like a project key so the mask looks real; it opens nothing.
const DEMO_KEY = 'sk-proj-DEMOnotARealKey0000000000000000000000demo';
const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

const dir = mkdtempSync(join(tmpdir(), 'api-proxy-demo-'));
const pki = await createTestPki(dir);
const fake = await startFakeUpstream({ pki, hostname: SQUID_BIN ? FAKE_HOST : 'localhost' });
let squid: Squid | undefined;
if (SQUID_BIN) squid = await startSquid({ allow: [`.${FAKE_HOST.split('.').slice(1).join('.')}`], hosts: { [FAKE_HOST]: '127.0.0.1' } });

const port = await freePort();
const sidecar = spawn(process.execPath, [MAIN], {
  env: {
    PATH: process.env.PATH ?? '',
    OPENAI_API_KEY: DEMO_KEY,
    UPSTREAM_URL: fake.url,
    HOST: '127.0.0.1',
    PORT: String(port),
    NODE_EXTRA_CA_CERTS: pki.caFile,
    ...(squid ? { HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' } : {}),
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
let sidecarLog = '';
sidecar.stdout.setEncoding('utf8').on('data', (d: string) => (sidecarLog += d));
const sidecarUrl = `http://127.0.0.1:${port}`;

try {
  await waitForPort(port);
  console.log('api-proxy demo: agent → sidecar → %s → fake OpenAI upstream (TLS, throwaway CA)\n', squid ? 'Squid' : '(no Squid installed: direct)');
  console.log('  upstream  %s', fake.url);
  console.log('  squid     %s', squid ? `${squid.url} (allows .openai.test only)` : 'not installed (apt-get install squid)');
  console.log('  sidecar   %s (key %s)\n', sidecarUrl, maskKey(DEMO_KEY));

  const agentHeaders = {
    'content-type': 'application/json',
    authorization: 'Bearer sk-agent-holds-no-real-key',
    originator: 'codex_exec',
  };
  console.log('agent → POST %s/responses with %j', sidecarUrl, agentHeaders);
  const res = await fetch(`${sidecarUrl}/responses`, {
    method: 'POST',
    headers: agentHeaders,
    body: JSON.stringify({ model: 'gpt-5.5', input: 'say hi' }),
  });
  const body = (await res.json()) as { output?: { content?: { text?: string }[] }[] };
  console.log('agent ← %d %j (x-request-id %s)\n', res.status, body.output?.[0]?.content?.[0]?.text, res.headers.get('x-request-id'));

  const got = fake.received[0];
  if (!got) throw new Error('the upstream received nothing');
  console.log('upstream received: %s %s', got.method, got.path);
  for (let i = 0; i < got.rawHeaders.length; i += 2) {
    const name = got.rawHeaders[i]!;
    const value = got.rawHeaders[i + 1]!;
    const shown = name.toLowerCase() === 'authorization' ? `Bearer ${maskKey(value.slice(7))}   ← the sidecar's key, masked here` : value;
    console.log('  %s: %s', name, shown);
  }
  // pino batches exchange lines (flushed at least every second): wait for it.
  const logLine = await until(() => sidecarLog.split('\n').find((l) => l.includes('"msg":"exchange"')), (l) => l !== undefined, 2000);
  console.log('\nsidecar log line: %s', logLine);
  const health = (await (await fetch(`${sidecarUrl}/health`)).json()) as object;
  console.log('\nsidecar /health: %j', health);
  if (res.status !== 200 || got.headers.authorization !== `Bearer ${DEMO_KEY}`) {
    throw new Error('the request did not arrive with the sidecar key');
  }
  console.log('\ndemo ok: the agent sent no real key; the upstream got only the sidecar\'s.');
} catch (err) {
  console.error('demo failed: %s\n%s', (err as Error).message, sidecarLog);
  process.exitCode = 1;
} finally {
  sidecar.kill('SIGTERM');
  await new Promise((r) => sidecar.once('exit', r));
  await squid?.stop();
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
}
