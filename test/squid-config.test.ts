import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../testkit/fake-upstream.js';
import { productSquidConf, productSquidEnv, SQUID_BIN, SQUID_ENTRYPOINT, startProductSquid, type Squid } from '../testkit/squid.js';
import { FAKE_HOST } from '../testkit/test-ca.js';
import { until } from '../testkit/wait.js';
import { port443Unavailable, startFakeOn443, UPSTREAM_ADDRESS } from './support/egress.js';
import { startSidecar, TEST_KEY, type Sidecar } from './support/sidecar.js';

/**
 * The Squid that ships (squid/entrypoint.sh and squid/squid.conf, policy lines
 * unchanged), run on loopback: what the allowlist admits and what it refuses.
 */
if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');

/** Runs the entrypoint with `squid -k parse` in place of serving: the allowlist it writes, and how it ended. */
function entrypoint(opts: { env?: Record<string, string>; allowlist?: string }) {
  const dir = mkdtempSync(join(tmpdir(), 'api-proxy-squid-entry-'));
  const conf = join(dir, 'squid.conf');
  writeFileSync(conf, productSquidConf(dir, 3128, {}));
  const r = spawnSync(SQUID_ENTRYPOINT, ['-k', 'parse', '-n', `apiproxyparse${process.pid}`], { env: productSquidEnv(dir, conf, opts), encoding: 'utf8' });
  let domains: string[] | null = null;
  try {
    domains = readFileSync(join(dir, 'allowed-domains'), 'utf8').split('\n').filter(Boolean);
  } catch {
    /* refused before writing */
  }
  return { status: r.status, stderr: r.stderr, domains };
}

describe('the entrypoint builds the allowlist', () => {
  it('allows api.openai.com alone when nothing is configured, and squid.conf parses', () => {
    const r = entrypoint({});
    expect(r.status, r.stderr).toBe(0);
    expect(r.domains).toEqual(['api.openai.com']);
  });

  it('reads SQUID_ALLOWED_DOMAINS split on commas and spaces, lower-cased, once each', () => {
    const r = entrypoint({ env: { SQUID_ALLOWED_DOMAINS: 'api.openai.com, .Example.test files.example.test,api.openai.com' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.domains).toEqual(['.example.test', 'api.openai.com', 'files.example.test']);
  });

  it('adds a mounted allowlist file, comments and blank lines ignored', () => {
    const r = entrypoint({ env: { SQUID_ALLOWED_DOMAINS: 'api.openai.com' }, allowlist: '# team APIs\napi.anthropic.test  # second provider\n\n.azure.test\n' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.domains).toEqual(['.azure.test', 'api.anthropic.test', 'api.openai.com']);
  });

  it.each(['1.2.3.4', '*.openai.com', 'https://api.openai.com', 'api.openai.com:443', '-bad.example.test', 'localhost', '[::1]', 'api.openai.com/v1'])(
    'refuses %s with exit 78 and names it, before Squid starts',
    (entry) => {
      const r = entrypoint({ env: { SQUID_ALLOWED_DOMAINS: `api.openai.com,${entry}` } });
      expect(r.status).toBe(78);
      expect(r.stderr).toContain(`not a domain name: '${entry.toLowerCase()}'`);
      expect(r.domains).toBeNull();
    },
  );

  it('refuses an allowlist that was set but names nothing, rather than falling back to the default', () => {
    const r = entrypoint({ env: { SQUID_ALLOWED_DOMAINS: ' , ' } });
    expect(r.status).toBe(78);
    expect(r.stderr).toContain('the allowlist is empty');
  });
});

const why = port443Unavailable();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the Squid policy tests cannot run: ${why}`);

describe.skipIf(why !== null)(`the shipped policy, enforced${why ? ` (skipped: ${why})` : ''}`, () => {
  let fake: FakeUpstream;
  let squid: Squid;
  let sidecar: Sidecar;
  const hosts = { [FAKE_HOST]: UPSTREAM_ADDRESS, 'denied.test': UPSTREAM_ADDRESS, 'files.example.test': UPSTREAM_ADDRESS };

  beforeAll(async () => {
    fake = await startFakeOn443();
    squid = await startProductSquid({ hosts, env: { SQUID_ALLOWED_DOMAINS: `${FAKE_HOST},.example.test` } });
    sidecar = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' });
  });
  afterAll(async () => {
    await sidecar?.close();
    await squid?.stop();
    await fake?.close();
  });

  /** Sends one request head straight to Squid; the status code it answers with. */
  const squidStatus = (head: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const s = connect(squid.port, '127.0.0.1', () => s.write(`${head}\r\n\r\n`));
      s.setEncoding('latin1');
      s.once('data', (d: string) => {
        s.destroy();
        resolve(Number(/^HTTP\/1\.[01] (\d{3})/.exec(d)?.[1]));
      });
      s.on('error', reject);
    });
  const connectTo = (authority: string): Promise<number> => squidStatus(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}`);

  it('tunnels the sidecar to an allowlisted domain on 443: the key arrives', async () => {
    fake.received.length = 0;
    const res = await request(sidecar.url).post('/v1/responses').set('authorization', 'Bearer sk-agent-fake').send({ input: 'hi' });
    expect(res.status).toBe(200);
    expect(fake.received.at(-1)?.headers.authorization).toBe(`Bearer ${TEST_KEY}`);
  });

  it('answers a domain off the allowlist with 403, which the sidecar reports as egress_denied', async () => {
    const denied = await startSidecar({ UPSTREAM_URL: 'https://denied.test', HTTPS_PROXY: squid.url });
    try {
      const res = await request(denied.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('egress_denied');
    } finally {
      await denied.close();
    }
  });

  it('allows subdomains of a dotted entry, and refuses other ports, raw addresses and plain HTTP', async () => {
    expect(await connectTo(`files.example.test:443`)).toBe(200);
    expect(await connectTo(`${FAKE_HOST}:8443`)).toBe(403);
    expect(await connectTo(`${UPSTREAM_ADDRESS}:443`)).toBe(403);
    expect(await connectTo(`[::1]:443`)).toBe(403);
    expect(await connectTo(`denied.test:443`)).toBe(403);
    // Plain HTTP, even to an allowlisted domain: the key must not cross in clear.
    const absolute = await squidStatus(`GET http://${FAKE_HOST}/v1/models HTTP/1.1\r\nHost: ${FAKE_HOST}`);
    expect(absolute).toBe(403);
  });

  it('logs one JSON object per transaction, refusals included', async () => {
    await connectTo('denied.test:443');
    await connectTo('files.example.test:443');
    const lines = await until(
      () => squid.accessLog(),
      (l) => l.some((x) => x.includes('"denied.test:443"')) && l.some((x) => x.includes('files.example.test:443')),
    );
    const entries = lines.map((l) => JSON.parse(l) as Record<string, string>);
    expect(entries.find((e) => e.url === 'denied.test:443')).toMatchObject({ method: 'CONNECT', status: '403', result: 'TCP_DENIED' });
    // A tunnel is logged when it closes: the probe's tunnel above has, the sidecar's pooled one has not.
    expect(entries.find((e) => e.url === 'files.example.test:443')).toMatchObject({ method: 'CONNECT', status: '200', result: 'TCP_TUNNEL' });
  });
});
