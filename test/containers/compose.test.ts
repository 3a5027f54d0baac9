import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint } from '../../src/key.js';
import { agentMessage } from '../../testkit/codex.js';
import { FAKE_TEXT } from '../../testkit/fake-upstream.js';
import { probeResults, probeScript } from '../../testkit/probe.js';
import { run, type Ran } from '../../testkit/run.js';
import { until } from '../../testkit/wait.js';

/**
 * The sandbox as users run it: the real Dockerfiles built, docker-compose.yml
 * with the offline override brought up, and the agent container probed from
 * inside. scripts/container-test.sh provides the engine and the base images.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const sh = (cmd: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Ran> =>
  run(cmd, args, { cwd: ROOT, env: { ...process.env, ...opts.env }, timeoutMs: opts.timeoutMs ?? 120_000 });

const dockerWhy = async (): Promise<string | null> => {
  const info = await sh('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 20_000 });
  if (info.error || info.code !== 0) return `no Docker engine answers (${(info.stderr || String(info.error)).trim().split('\n')[0]}); scripts/container-test.sh starts one`;
  if ((await sh('docker-compose', ['version'], { timeoutMs: 20_000 })).code !== 0) return 'docker-compose is not installed';
  return null;
};
const why = await dockerWhy();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the container tests cannot run: ${why}`);

describe.skipIf(why !== null)(`the compose sandbox, offline${why ? ` (skipped: ${why})` : ''}`, () => {
  const project = `apxtest${process.pid}`;
  const key = `sk-proj-${randomBytes(30).toString('base64url')}`;
  const password = randomBytes(24).toString('hex');
  const keyDir = mkdtempSync(join(tmpdir(), 'api-proxy-compose-'));
  // Where and how scripts/sandbox.sh writes it: 0644 in a 0700 directory.
  const keyFile = join(keyDir, 'secrets', 'openai_api_key');
  const env = { COMPOSE_PROJECT_NAME: project, API_PROXY_KEY_FILE: keyFile, API_PROXY_LOG_LEVEL: 'trace', SQUID_PROXY_PASSWORD: password };
  const compose = (args: string[], timeoutMs?: number) =>
    sh('docker-compose', ['-f', 'docker-compose.yml', '-f', 'docker-compose.offline.yml', ...args], { env, ...(timeoutMs ? { timeoutMs } : {}) });
  const container = async (service: string): Promise<string> => (await compose(['ps', '-q', service])).stdout.trim();
  const inspect = async (id: string, format: string): Promise<string> => (await sh('docker', ['inspect', '-f', format, id])).stdout.trim();
  /** Runs node inside a fresh agent container: the agent's network, environment and user. */
  const inAgent = (script: string) => compose(['run', '--rm', '--no-deps', '-T', '--entrypoint', 'node', 'agent', '-e', script]);
  const timings: Record<string, number> = {};
  const timed = async <T,>(name: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      timings[name] = Math.round(performance.now() - t0);
    }
  };

  beforeAll(async () => {
    const prepared = await sh('bash', ['scripts/sandbox.sh', '--prepare-only'], { env: { OPENAI_API_KEY: key, API_PROXY_SECRETS_DIR: join(keyDir, 'secrets') } });
    expect(prepared.code, prepared.stderr).toBe(0);
    expect(statSync(join(keyDir, 'secrets')).mode & 0o777).toBe(0o700);
    const build = await timed('build', () => compose(['build'], 900_000));
    expect(build.code, build.stderr.slice(-4000)).toBe(0);
    const up = await timed('up', () => compose(['up', '-d', 'api-proxy'], 180_000));
    expect(up.code, up.stderr.slice(-4000)).toBe(0);
    // Compose 1.29 has no --wait: poll each container's own health status, bounded.
    const t0 = performance.now();
    const healthy = await until(
      () => Promise.all(['fake-upstream', 'squid', 'api-proxy'].map(async (s) => inspect(await container(s), '{{.State.Health.Status}}'))),
      (states) => states.every((s) => s === 'healthy'),
      150_000,
      1000,
    );
    timings.healthy = Math.round(performance.now() - t0);
    expect(healthy, (await compose(['logs', '--no-color'])).stdout.slice(-4000)).toEqual(['healthy', 'healthy', 'healthy']);
  });

  /** Everything the stack printed, kept before `down` removes it. */
  let stackLogs: string | undefined;
  afterAll(async () => {
    const logs = stackLogs ?? (await compose(['logs', '--no-color'])).stdout;
    await compose(['down', '-v', '--remove-orphans'], 120_000);
    rmSync(keyDir, { recursive: true, force: true });
    console.log(`container timings (ms): ${JSON.stringify(timings)}`);
    // The sidecar logged at trace; neither the key nor Squid's password, nor any 8-character piece of them, is anywhere in the output.
    expect(logs).toMatch(/"msg":"exchange"/);
    for (const secret of [key.slice('sk-proj-'.length), password]) {
      for (let i = 0; i + 8 <= secret.length; i++) expect(logs).not.toContain(secret.slice(i, i + 8));
    }
  });

  it('docker-compose validates the files, alone and with the offline override, and stops at once without a Squid password', async () => {
    const alone = await sh('docker-compose', ['-f', 'docker-compose.yml', 'config', '--quiet'], { env });
    expect(alone.code, alone.stderr).toBe(0);
    const both = await compose(['config', '--quiet']);
    expect(both.code, both.stderr).toBe(0);
    const unset = await sh('docker-compose', ['-f', 'docker-compose.yml', 'config', '--quiet'], { env: { ...env, SQUID_PROXY_PASSWORD: '' } });
    expect(unset.code).not.toBe(0);
    expect(unset.stderr).toContain('SQUID_PROXY_PASSWORD');
  });

  it('builds a sidecar image that runs as node (1000), sets REQUIRE_EGRESS_PROXY, and fails fast without a key or a proxy', async () => {
    expect(await inspect('api-proxy:local', '{{.Config.User}}')).toBe('1000:1000');
    expect(await inspect('api-proxy:local', '{{json .Config.ExposedPorts}}')).toBe('{"10000/tcp":{},"10001/tcp":{},"10003/tcp":{},"10005/tcp":{}}');
    expect(await inspect('api-proxy:local', '{{json .Config.Env}}')).toContain('REQUIRE_EGRESS_PROXY=true');
    expect(await inspect('api-proxy:local', '{{json .Config.Healthcheck.Test}}')).toBe('["CMD","node","dist/src/healthcheck.js"]');
    const noKey = await sh('docker', ['run', '--rm', '--read-only', '--network', 'none', 'api-proxy:local']);
    expect(noKey.code).toBe(78);
    expect(noKey.stderr.trim().split('\n')).toEqual(['api-proxy: configuration error: OPENAI_API_KEY: is missing (set it, or OPENAI_API_KEY_FILE, or another provider\'s key: ANTHROPIC_API_KEY, GEMINI_API_KEY, AZURE_OPENAI_API_KEY)']);
    const noProxy = await sh('docker', ['run', '--rm', '--read-only', '--network', 'none', '-e', `OPENAI_API_KEY=${key}`, 'api-proxy:local']);
    expect(noProxy.code).toBe(78);
    expect(noProxy.stderr).toMatch(/^api-proxy: configuration error: REQUIRE_EGRESS_PROXY/);
    expect(noProxy.stderr + noProxy.stdout).not.toContain(key.slice(8, 16));
    const config = await sh('docker', ['run', '--rm', '--network', 'none', 'api-proxy:local', 'codex-config', '--base-url', 'http://api-proxy:10000/v1']);
    expect(config.code, config.stderr).toBe(0);
    expect(config.stdout).toContain('base_url = "http://api-proxy:10000/v1"');
  });

  it('runs the sidecar as a non-root user on a read-only root filesystem, with no capabilities', async () => {
    const id = await container('api-proxy');
    expect(await inspect(id, '{{.Config.User}}')).toBe('1000:1000');
    expect(await inspect(id, '{{.HostConfig.ReadonlyRootfs}}')).toBe('true');
    expect(await inspect(id, '{{json .HostConfig.CapDrop}}')).toBe('["ALL"]');
    expect(await inspect(id, '{{json .Config.Healthcheck.Test}}')).toContain('healthcheck.js');
    expect(await inspect(await container('squid'), '{{.Config.User}}')).toBe('13:13');
  });

  it('Squid answers 407 to a client beside the sidecar that lacks the password, and tunnels for one that has it', async () => {
    // A container on the egress network, where only the sidecar and Squid are: what an agent sharing the sidecar's network would see.
    const probe = (auth: string) =>
      sh('docker', ['run', '--rm', '--network', `${project}_egress`, '--entrypoint', 'node', 'api-proxy:local', '-e', `
        const s = require('net').connect(3128, 'squid', () => s.write('CONNECT api.openai.test:443 HTTP/1.1\\r\\nHost: api.openai.test:443\\r\\n${auth}\\r\\n'));
        s.once('data', (d) => { console.log(String(d).split(' ')[1]); s.destroy(); });
      `]);
    const bare = await probe('');
    expect(bare.code, bare.stderr).toBe(0);
    expect(bare.stdout.trim()).toBe('407');
    const withPassword = await probe(`Proxy-Authorization: Basic ${Buffer.from(`api-proxy:${password}`).toString('base64')}\\r\\n`);
    expect(withPassword.stdout.trim()).toBe('200');
    expect((await compose(['logs', '--no-color', 'squid'])).stdout).toMatch(/"method":"CONNECT","url":"api.openai.test:443","status":"407","result":"TCP_DENIED"/);
  });

  it('the agent reaches the sidecar and nothing else', async () => {
    const squidIp = await inspect(await container('squid'), `{{(index .NetworkSettings.Networks "${project}_egress").IPAddress}}`);
    const fakeIp = await inspect(await container('fake-upstream'), `{{(index .NetworkSettings.Networks "${project}_internet").IPAddress}}`);
    expect(squidIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const targets: [string, number][] = [
      ['api-proxy', 10000],
      ['squid', 3128],
      [squidIp, 3128],
      ['api.openai.test', 443],
      [fakeIp, 443],
      ['1.1.1.1', 443],
    ];
    const r = await inAgent(probeScript(targets));
    expect(r.code, r.stderr).toBe(0);
    const [sidecar, ...others] = probeResults(r.stdout);
    expect(sidecar).toBe('open');
    // Names of other networks do not resolve; addresses have no route, or go unanswered.
    for (const outcome of others) expect(outcome).not.toBe('open');
  });

  it("the agent's environment and files hold no key", async () => {
    const r = await compose(['run', '--rm', '--no-deps', '-T', '--entrypoint', 'sh', 'agent', '-c', 'env; test ! -e /run/secrets && echo no-secrets-mounted']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('API_PROXY_URL=http://api-proxy:10000/v1');
    expect(r.stdout).not.toMatch(/OPENAI_API_KEY|sk-proj-/);
    expect(r.stdout).toContain('no-secrets-mounted');
  });

  it('a request from the agent reaches the fake upstream with the key the sidecar holds', async () => {
    const r = await inAgent(`
      fetch('http://api-proxy:10000/v1/responses', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer sk-agent-has-no-key' },
        body: JSON.stringify({ model: 'gpt-5.5', input: 'hi' }),
      }).then(async (res) => console.log(res.status, res.headers.get('x-request-id'), (await res.json()).object));
    `);
    expect(r.code, r.stderr).toBe(0);
    const [status, requestId, object] = r.stdout.trim().split('\n').at(-1)!.split(' ');
    expect(status).toBe('200');
    expect(object).toBe('response');
    const seen = (await compose(['logs', '--no-color', 'fake-upstream'])).stdout;
    expect(seen).toContain(JSON.stringify({ method: 'POST', path: '/v1/responses', websocket: false, bearer: fingerprint(key) }));
    expect((await compose(['logs', '--no-color', 'api-proxy'])).stdout).toContain(requestId);
  });

  it('the real Codex CLI in the agent container completes a turn through sidecar, Squid and fake upstream', async () => {
    const r = await timed('codex', () => compose(['run', '--rm', '--no-deps', '-T', 'agent'], 120_000));
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(agentMessage(r.stdout)).toBe(FAKE_TEXT);
    // Codex's default transport: the Responses WebSocket, carrying the sidecar's key.
    expect((await compose(['logs', '--no-color', 'fake-upstream'])).stdout).toContain(JSON.stringify({ method: 'GET', path: '/v1/responses', websocket: true, bearer: fingerprint(key) }));
    expect((await compose(['logs', '--no-color', 'squid'])).stdout).toMatch(/"method":"CONNECT","url":"api.openai.test:443","status":"200"/);
  });

  it('stops on SIGTERM with exit 0 (drained, not killed at the grace period), and down leaves nothing behind', async () => {
    const id = await container('api-proxy');
    const stop = await timed('stop', () => compose(['stop', 'api-proxy'], 60_000));
    expect(stop.code, stop.stderr).toBe(0);
    expect(await inspect(id, '{{.State.ExitCode}}')).toBe('0');
    stackLogs = (await compose(['logs', '--no-color'])).stdout;
    expect(stackLogs).toMatch(/"msg":"draining"/);
    const down = await timed('down', () => compose(['down', '-v', '--remove-orphans'], 120_000));
    expect(down.code, down.stderr).toBe(0);
    const left = (await sh('docker', ['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${project}`])).stdout.trim();
    expect(left).toBe('');
    expect((await sh('docker', ['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`])).stdout.trim()).toBe('');
    expect((await sh('docker', ['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`])).stdout.trim()).toBe('');
  });
});

describe.skipIf(why !== null)(`scripts/sandbox.sh --offline, the documented command${why ? ` (skipped: ${why})` : ''}`, () => {
  const env = { COMPOSE_PROJECT_NAME: `apxsandbox${process.pid}` };
  const files = ['-f', 'docker-compose.yml', '-f', 'docker-compose.offline.yml'];
  afterAll(async () => {
    await sh('docker-compose', [...files, 'down', '-v', '--remove-orphans'], { env: { ...env, SQUID_PROXY_PASSWORD: 'cleanup' }, timeoutMs: 120_000 });
  });

  it('runs the agent once through the stack, and stops everything when it exits, with its exit code', async () => {
    const r = await sh('bash', ['scripts/sandbox.sh', '--offline', '--no-color'], { env, timeoutMs: 600_000 });
    expect(r.code, r.stderr.slice(-3000)).toBe(0);
    // compose prefixes each line with the service; Codex's answer is in the agent's.
    expect(r.stdout).toMatch(new RegExp(`agent[-_]1 +\\| .*"type":"agent_message".*${FAKE_TEXT.replace(/[.]/g, '\\.')}`));
    const running = await sh('docker', ['ps', '-q', '--filter', `label=com.docker.compose.project=${env.COMPOSE_PROJECT_NAME}`]);
    expect(running.stdout.trim()).toBe('');
  });
});
