import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint } from '../../src/key.js';
import { agentMessage } from '../../testkit/codex.js';
import { FAKE_TEXT } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';

/**
 * The sandbox as users run it: the real Dockerfiles built, docker-compose.yml
 * with the offline override brought up, and the agent container probed from
 * inside. scripts/container-test.sh provides the engine and the base images.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const sh = (cmd: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) => {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
};

const dockerWhy = (): string | null => {
  const info = sh('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 20_000 });
  if (info.error || info.code !== 0) return `no Docker engine answers (${(info.stderr || String(info.error)).trim().split('\n')[0]}); scripts/container-test.sh starts one`;
  if (sh('docker-compose', ['version'], { timeoutMs: 20_000 }).code !== 0) return 'docker-compose is not installed';
  return null;
};
const why = dockerWhy();
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the container tests cannot run: ${why}`);

describe.skipIf(why !== null)(`the compose sandbox, offline${why ? ` (skipped: ${why})` : ''}`, () => {
  const project = `apxtest${process.pid}`;
  const key = `sk-proj-${randomBytes(30).toString('base64url')}`;
  const keyDir = mkdtempSync(join(tmpdir(), 'api-proxy-compose-'));
  const keyFile = join(keyDir, 'openai_api_key');
  const env = { COMPOSE_PROJECT_NAME: project, API_PROXY_KEY_FILE: keyFile, API_PROXY_LOG_LEVEL: 'trace' };
  const compose = (args: string[], timeoutMs?: number) =>
    sh('docker-compose', ['-f', 'docker-compose.yml', '-f', 'docker-compose.offline.yml', ...args], { env, ...(timeoutMs ? { timeoutMs } : {}) });
  const container = (service: string): string => compose(['ps', '-q', service]).stdout.trim();
  const inspect = (id: string, format: string): string => sh('docker', ['inspect', '-f', format, id]).stdout.trim();
  /** Runs node inside a fresh agent container: the agent's network, environment and user. */
  const inAgent = (script: string) => compose(['run', '--rm', '--no-deps', '-T', '--entrypoint', 'node', 'agent', '-e', script]);
  const timings: Record<string, number> = {};
  const timed = <T,>(name: string, f: () => T): T => {
    const t0 = performance.now();
    try {
      return f();
    } finally {
      timings[name] = Math.round(performance.now() - t0);
    }
  };

  beforeAll(async () => {
    writeFileSync(keyFile, `${key}\n`);
    chmodSync(keyFile, 0o644); // the sidecar runs as uid 1000
    const build = timed('build', () => compose(['build'], 900_000));
    expect(build.code, build.stderr.slice(-4000)).toBe(0);
    const up = timed('up', () => compose(['up', '-d', 'api-proxy'], 180_000));
    expect(up.code, up.stderr.slice(-4000)).toBe(0);
    // Compose 1.29 has no --wait: poll each container's own health status, bounded.
    const t0 = performance.now();
    const healthy = await until(
      () => ['fake-upstream', 'squid', 'api-proxy'].map((s) => inspect(container(s), '{{.State.Health.Status}}')),
      (states) => states.every((s) => s === 'healthy'),
      150_000,
      1000,
    );
    timings.healthy = Math.round(performance.now() - t0);
    expect(healthy, compose(['logs', '--no-color']).stdout.slice(-4000)).toEqual(['healthy', 'healthy', 'healthy']);
  });

  /** Everything the stack printed, kept before `down` removes it. */
  let stackLogs: string | undefined;
  afterAll(() => {
    const logs = stackLogs ?? compose(['logs', '--no-color']).stdout;
    compose(['down', '-v', '--remove-orphans'], 120_000);
    rmSync(keyDir, { recursive: true, force: true });
    console.log(`container timings (ms): ${JSON.stringify(timings)}`);
    // The sidecar logged at trace; neither the key nor any 8-character piece of it is anywhere in the output.
    expect(logs).toMatch(/"msg":"exchange"/);
    const secret = key.slice('sk-proj-'.length);
    for (let i = 0; i + 8 <= secret.length; i++) expect(logs).not.toContain(secret.slice(i, i + 8));
  });

  it('docker-compose validates the files, alone and with the offline override', () => {
    const alone = sh('docker-compose', ['-f', 'docker-compose.yml', 'config', '--quiet'], { env });
    expect(alone.code, alone.stderr).toBe(0);
    const both = compose(['config', '--quiet']);
    expect(both.code, both.stderr).toBe(0);
  });

  it('runs the sidecar as a non-root user on a read-only root filesystem, with no capabilities', () => {
    const id = container('api-proxy');
    expect(inspect(id, '{{.Config.User}}')).toBe('node');
    expect(inspect(id, '{{.HostConfig.ReadonlyRootfs}}')).toBe('true');
    expect(inspect(id, '{{json .HostConfig.CapDrop}}')).toBe('["ALL"]');
    expect(inspect(id, '{{json .Config.Healthcheck.Test}}')).toContain('healthcheck.js');
    expect(inspect(container('squid'), '{{.Config.User}}')).toBe('proxy');
  });

  it('the agent reaches the sidecar and nothing else', () => {
    const squidIp = inspect(container('squid'), `{{(index .NetworkSettings.Networks "${project}_egress").IPAddress}}`);
    const fakeIp = inspect(container('fake-upstream'), `{{(index .NetworkSettings.Networks "${project}_internet").IPAddress}}`);
    expect(squidIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const targets = [
      ['api-proxy', 10000],
      ['squid', 3128],
      [squidIp, 3128],
      ['api.openai.test', 443],
      [fakeIp, 443],
      ['1.1.1.1', 443],
    ];
    const r = inAgent(`
      const net = require('net');
      const probe = ([host, port]) => new Promise((resolve) => {
        const s = net.connect({ host, port, timeout: 3000 });
        s.on('connect', () => { s.destroy(); resolve('open'); });
        s.on('timeout', () => { s.destroy(); resolve('timeout'); });
        s.on('error', (e) => resolve(e.code));
      });
      Promise.all(${JSON.stringify(targets)}.map(probe)).then((r) => console.log(JSON.stringify(r)));
    `);
    expect(r.code, r.stderr).toBe(0);
    const [sidecar, ...others] = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as string[];
    expect(sidecar).toBe('open');
    // Names of other networks do not resolve; addresses have no route, or go unanswered.
    for (const outcome of others) expect(outcome).not.toBe('open');
  });

  it("the agent's environment and files hold no key", () => {
    const r = compose(['run', '--rm', '--no-deps', '-T', '--entrypoint', 'sh', 'agent', '-c', 'env; test ! -e /run/secrets && echo no-secrets-mounted']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('API_PROXY_URL=http://api-proxy:10000/v1');
    expect(r.stdout).not.toMatch(/OPENAI_API_KEY|sk-proj-/);
    expect(r.stdout).toContain('no-secrets-mounted');
  });

  it('a request from the agent reaches the fake upstream with the key the sidecar holds', () => {
    const r = inAgent(`
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
    const seen = compose(['logs', '--no-color', 'fake-upstream']).stdout;
    expect(seen).toContain(JSON.stringify({ method: 'POST', path: '/v1/responses', websocket: false, bearer: fingerprint(key) }));
    expect(compose(['logs', '--no-color', 'api-proxy']).stdout).toContain(requestId);
  });

  it('the real Codex CLI in the agent container completes a turn through sidecar, Squid and fake upstream', () => {
    const r = timed('codex', () => compose(['run', '--rm', '--no-deps', '-T', 'agent'], 120_000));
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(agentMessage(r.stdout)).toBe(FAKE_TEXT);
    // Codex's default transport: the Responses WebSocket, carrying the sidecar's key.
    expect(compose(['logs', '--no-color', 'fake-upstream']).stdout).toContain(JSON.stringify({ method: 'GET', path: '/v1/responses', websocket: true, bearer: fingerprint(key) }));
    expect(compose(['logs', '--no-color', 'squid']).stdout).toMatch(/"method":"CONNECT","url":"api.openai.test:443","status":"200"/);
  });

  it('stops on SIGTERM with exit 0 (drained, not killed at the grace period), and down leaves nothing behind', () => {
    const id = container('api-proxy');
    const stop = timed('stop', () => compose(['stop', 'api-proxy'], 60_000));
    expect(stop.code, stop.stderr).toBe(0);
    expect(inspect(id, '{{.State.ExitCode}}')).toBe('0');
    stackLogs = compose(['logs', '--no-color']).stdout;
    expect(stackLogs).toMatch(/"msg":"draining"/);
    const down = timed('down', () => compose(['down', '-v', '--remove-orphans'], 120_000));
    expect(down.code, down.stderr).toBe(0);
    const left = sh('docker', ['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${project}`]).stdout.trim();
    expect(left).toBe('');
    expect(sh('docker', ['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]).stdout.trim()).toBe('');
    expect(sh('docker', ['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${project}`]).stdout.trim()).toBe('');
  });
});
