import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FakeUpstream } from '../testkit/fake-upstream.js';
import { productSquidConf, productSquidEnv, SQUID_BIN, SQUID_ENTRYPOINT, TEST_PROXY_PASSWORD, type Squid } from '../testkit/squid.js';
import { FAKE_HOST } from '../testkit/test-ca.js';
import { IP } from '../testkit/netns.js';
import { until } from '../testkit/wait.js';
import { shippedEgressUnavailable, startShippedEgress, type ShippedEgress } from './support/egress.js';
import { startSidecar, TEST_KEY, type Sidecar } from './support/sidecar.js';

/**
 * The Squid that ships (squid/entrypoint.sh and squid/squid.conf, policy lines
 * unchanged), run as its image runs it, in a namespace of its own: whom it
 * serves, what the allowlist admits and what it refuses.
 */
if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');

/** Runs the entrypoint with `squid -k parse` in place of serving: what it writes, and how it ended. */
function entrypoint(opts: { env?: Record<string, string>; allowlist?: string }) {
  const dir = mkdtempSync(join(tmpdir(), 'api-proxy-squid-entry-'));
  const conf = join(dir, 'squid.conf');
  writeFileSync(conf, productSquidConf(dir, {}));
  const r = spawnSync(SQUID_ENTRYPOINT, ['-k', 'parse', '-n', `apiproxyparse${process.pid}`], { env: productSquidEnv(dir, conf, opts), encoding: 'utf8' });
  const written = (name: string): string | null => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch {
      return null; // refused before writing
    }
  };
  const domains = written('allowed-domains')?.split('\n').filter(Boolean) ?? null;
  const everything = readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
  return { status: r.status, stderr: r.stderr, domains, authConf: written('auth.conf'), passwd: written('passwd'), dir, everything };
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


describe('the entrypoint sets up proxy authentication', () => {
  it('requires user api-proxy with the password, stored only as a SHA-512 crypt hash readable by Squid alone', () => {
    const r = entrypoint({});
    expect(r.status, r.stderr).toBe(0);
    expect(r.authConf).toContain(`auth_param basic program /usr/lib/squid/basic_ncsa_auth ${r.dir}/passwd`);
    expect(r.authConf).toMatch(/^acl api_proxy_client proxy_auth api-proxy$/m);
    expect(r.authConf).toMatch(/^http_access deny !api_proxy_client$/m);
    expect(r.passwd).toMatch(/^api-proxy:\$6\$[A-Za-z0-9]{8,16}\$[./A-Za-z0-9]{86}\n$/);
    expect(statSync(join(r.dir, 'passwd')).mode & 0o777).toBe(0o600);
    expect(r.everything).not.toContain(TEST_PROXY_PASSWORD);
    expect(r.stderr).not.toContain(TEST_PROXY_PASSWORD);
  });

  it('hashes with a fresh salt each start', () => {
    expect(entrypoint({}).passwd).not.toBe(entrypoint({}).passwd);
  });

  it('takes SQUID_PROXY_USER, and the password from SQUID_PROXY_PASSWORD_FILE without its trailing newline', () => {
    const dir = mkdtempSync(join(tmpdir(), 'api-proxy-squid-pw-'));
    const file = join(dir, 'password');
    writeFileSync(file, 'from-a-file-Zq9\n');
    const r = entrypoint({ env: { SQUID_PROXY_USER: 'sidecar-1', SQUID_PROXY_PASSWORD: '', SQUID_PROXY_PASSWORD_FILE: file } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.authConf).toMatch(/^acl api_proxy_client proxy_auth sidecar-1$/m);
    // The helper Squid runs accepts exactly that password.
    const check = spawnSync('/usr/lib/squid/basic_ncsa_auth', [join(r.dir, 'passwd')], { input: 'sidecar-1 from-a-file-Zq9\nsidecar-1 from-a-file-Zq9%0A\n', encoding: 'utf8' });
    expect(check.stdout.split('\n').slice(0, 2).map((l) => l.split(' ')[0])).toEqual(['OK', 'ERR']);
  });

  it('with SQUID_AUTH=off writes no authentication and says so', () => {
    const r = entrypoint({ env: { SQUID_AUTH: 'off', SQUID_PROXY_PASSWORD: '' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.authConf).not.toMatch(/^(auth_param|acl|http_access)/m);
    expect(r.stderr).toContain('SQUID_AUTH=off');
  });

  const unreadable = join(mkdtempSync(join(tmpdir(), 'api-proxy-squid-pw-')), 'missing');
  it.each([
    ['no password at all', { SQUID_PROXY_PASSWORD: '' }, 'SQUID_PROXY_PASSWORD: is missing'],
    ['both the password and its file', { SQUID_PROXY_PASSWORD_FILE: '/etc/hostname' }, 'set only one'],
    ['a password file that cannot be read', { SQUID_PROXY_PASSWORD: '', SQUID_PROXY_PASSWORD_FILE: unreadable }, `SQUID_PROXY_PASSWORD_FILE: ${unreadable} cannot be read`],
    ['a password with a space in it', { SQUID_PROXY_PASSWORD: 'two words-Kx81' }, 'holds whitespace or control characters'],
    ['a user name with a colon', { SQUID_PROXY_USER: 'api:proxy' }, 'SQUID_PROXY_USER: must be'],
    ['an unknown SQUID_AUTH', { SQUID_AUTH: 'maybe' }, "SQUID_AUTH must be 'on' or 'off'"],
  ])('refuses %s with exit 78 and one line, never the password', (_, env, message) => {
    const r = entrypoint({ env });
    expect(r.status).toBe(78);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('two words');
    expect(r.authConf).toBeNull();
    expect(r.domains).toBeNull();
  });
});

// Names the allowlist admits (a dotted entry) that resolve inward, one per kind of range Squid refuses.
const INWARD: Record<string, string> = {
  'loopback.example.test': '127.0.0.1',
  'this-network.example.test': '0.0.0.0',
  'rfc1918-10.example.test': '10.1.2.3',
  'rfc1918-172.example.test': '172.16.5.4',
  'rfc1918-192.example.test': '192.168.1.1',
  'metadata.example.test': '169.254.169.254',
  'cgnat.example.test': '100.64.0.1',
  'mapped.example.test': '::ffff:10.0.0.1',
  'v6-loopback.example.test': '::1',
  'ula.example.test': 'fd00::1',
  'v6-link-local.example.test': 'fe80::1',
};

const why = shippedEgressUnavailable();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the Squid policy tests cannot run: ${why}`);

describe.skipIf(why !== null)(`the shipped policy, enforced${why ? ` (skipped: ${why})` : ''}`, () => {
  let egress: ShippedEgress;
  let fake: FakeUpstream;
  let squid: Squid;
  let sidecar: Sidecar;

  beforeAll(async () => {
    egress = await startShippedEgress({ names: ['denied.test', 'files.example.test'], hosts: INWARD, env: { SQUID_ALLOWED_DOMAINS: `${FAKE_HOST},.example.test` } });
    ({ fake, squid } = egress);
    sidecar = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' });
  });
  afterAll(async () => {
    await sidecar?.close();
    await egress?.close();
  });

  /**
   * Sends one request head straight to Squid from this process, which shares the
   * sidecar's network namespace as an agent in the sidecar's pod would; the status line and headers.
   */
  const squidAnswer = (head: string): Promise<{ status: number; head: string }> =>
    new Promise((resolve, reject) => {
      // latin1: each char of `head` one byte, so a test can send bytes that are not UTF-8.
      const s = connect(squid.port, squid.host, () => s.write(Buffer.from(`${head}\r\n\r\n`, 'latin1')));
      s.setEncoding('latin1');
      s.once('data', (d: string) => {
        s.destroy();
        resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(d)?.[1]), head: d.split('\r\n\r\n')[0]! });
      });
      s.on('error', reject);
    });
  const basic = (user: string, password: string): string => `Proxy-Authorization: Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const credentials = basic('api-proxy', TEST_PROXY_PASSWORD);
  const squidStatus = async (head: string, auth = credentials): Promise<number> => (await squidAnswer(`${head}\r\n${auth}`)).status;
  const connectTo = (authority: string, auth = credentials): Promise<number> => squidStatus(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}`, auth);

  it('tunnels the sidecar, which has the password, to an allowlisted domain on 443: the key arrives', async () => {
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
    expect(await connectTo(`${egress.upstreamAddress}:443`)).toBe(403);
    expect(await connectTo(`[::1]:443`)).toBe(403);
    expect(await connectTo(`denied.test:443`)).toBe(403);
    // Plain HTTP, even to an allowlisted domain: the key must not cross in clear.
    const absolute = await squidStatus(`GET http://${FAKE_HOST}/v1/models HTTP/1.1\r\nHost: ${FAKE_HOST}`);
    expect(absolute).toBe(403);
  });

  it('answers a client without the password 407, and tunnels nothing for it', async () => {
    const before = fake.connections;
    const bare = await squidAnswer(`CONNECT ${FAKE_HOST}:443 HTTP/1.1\r\nHost: ${FAKE_HOST}:443`);
    expect(bare.status).toBe(407);
    expect(bare.head).toMatch(/^Proxy-Authenticate: Basic realm="api-proxy egress"$/im);
    expect(await connectTo(`${FAKE_HOST}:443`, basic('api-proxy', 'guessed-password'))).toBe(407);
    expect(await connectTo(`${FAKE_HOST}:443`, basic('someone', TEST_PROXY_PASSWORD))).toBe(407);
    // Refused before any policy: an off-list name and a plain-HTTP request get the same 407.
    expect(await connectTo('denied.test:443', '')).toBe(407);
    expect(await squidStatus(`GET http://${FAKE_HOST}/v1/models HTTP/1.1\r\nHost: ${FAKE_HOST}`, '')).toBe(407);
    expect(fake.connections).toBe(before);
  });

  it('a sidecar whose proxy URL lacks the password gets egress_denied, and nothing reaches the upstream', async () => {
    const before = fake.connections;
    const bare = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: `http://${squid.host}:${squid.port}` });
    try {
      const res = await request(bare.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('egress_denied');
      expect(res.body.error.message).toContain('407');
    } finally {
      await bare.close();
    }
    expect(fake.connections).toBe(before);
  });

  it('never tunnels to loopback, private, link-local, CGNAT or unique-local addresses, whatever the allowlist admits', async () => {
    for (const name of Object.keys(INWARD)) expect(await connectTo(`${name}:443`), name).toBe(403);
    // The same wildcard entry still admits a public-range address.
    expect(await connectTo('files.example.test:443')).toBe(200);
  });

  it('writes a crafted target into its JSON log as plain ASCII data: no string ended, no field added, no bytes that are not UTF-8', async () => {
    const target = 'http://files.example.test/a","status":"200","injected":"\\x\xff\xe9';
    expect(await squidStatus(`GET ${target} HTTP/1.1\r\nHost: files.example.test`)).toBe(403);
    // accessLog() decodes strictly, and every line must parse.
    const lines = await until(() => squid.accessLog(), (l) => l.some((x) => x.includes('injected')));
    const entries = lines.map((l) => JSON.parse(l) as Record<string, string>);
    const entry = entries.find((e) => e.url?.includes('injected'));
    expect(entry).toMatchObject({ method: 'GET', status: '403', result: 'TCP_DENIED' });
    const url = String(entry?.url);
    expect(url).toMatch(/^[\x21-\x7e]+$/);
    // Percent-decoded byte for byte (latin1: one char per byte), it is what was sent.
    expect(url.replace(/%([0-9A-F]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))).toBe(target);
    expect(entries.some((e) => 'injected' in e)).toBe(false);
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

describe.skipIf(why !== null)(`a test process killed hard${why ? ` (skipped: ${why})` : ''}`, () => {
  it('leaves no shipped Squid running: the death signal is set after the uid change', async () => {
    const dist = new URL('../dist/testkit/', import.meta.url).href;
    // A test process of its own (the built testkit): it starts the shipped Squid as proxy, says its PID, and waits.
    const script = `
      const { createEgressNamespace } = await import('${dist}netns.js');
      const { startProductSquid } = await import('${dist}squid.js');
      const squid = await startProductSquid(createEgressNamespace(), { hosts: {} });
      console.log(squid.pid);
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let pid = 0;
    try {
      pid = Number(await new Promise<string>((resolve, reject) => {
        child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim()));
        child.once('exit', (code) => reject(new Error(`the test process exited (${code}) before Squid listened`)));
      }));
      const squidUid = () => readFileSync(`/proc/${pid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)?.[1];
      expect(squidUid()).toBe('13');
      child.kill('SIGKILL');
      // Gone, or a zombie waiting for init: either way no longer serving.
      const running = (): boolean => {
        try {
          return !/^Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, ''));
        } catch {
          return false;
        }
      };
      expect(await until(running, (r) => !r, 10_000, 50), 'Squid outlived its test process').toBe(false);
    } finally {
      child.kill('SIGKILL');
      if (pid > 0) spawnSync('kill', ['-KILL', String(pid)]); // only when this test failed
      spawnSync(IP!, ['netns', 'del', `apxe${child.pid}ns`]);
    }
  });
});
