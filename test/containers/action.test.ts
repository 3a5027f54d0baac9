import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentMessage } from '../../testkit/codex.js';
import { FAKE_TEXT } from '../../testkit/fake-upstream.js';
import { probeResults, probeScript } from '../../testkit/probe.js';
import { run, type Ran } from '../../testkit/run.js';
import { until } from '../../testkit/wait.js';

/**
 * The GitHub Action (action.yml) run as the runner runs it: its bundled main and
 * post entry points with inputs as INPUT_* variables and the runner's files
 * (GITHUB_OUTPUT, GITHUB_STATE, GITHUB_STEP_SUMMARY, GITHUB_ENV), against the
 * Docker engine, with the fake upstream behind Squid on a network of its own.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const sh = (cmd: string, args: string[], timeoutMs = 120_000): Promise<Ran> => run(cmd, args, { cwd: ROOT, env: process.env, timeoutMs });
const why = (await sh('docker', ['info', '--format', '{{.ServerVersion}}'], 20_000)).code === 0 ? null : 'no Docker engine answers; scripts/container-test.sh starts one';
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the Action tests cannot run: ${why}`);

const KEY = `sk-proj-${randomBytes(30).toString('base64url')}`;
const LABEL = 'io.github.api-proxy.action';

/** The runner's file commands: `name<<DELIM\nvalue\nDELIM` entries. */
function fileCommands(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  const text = readFileSync(path, 'utf8');
  const re = /^([^\n<]+)<<(\S+)\n([\s\S]*?)\n\2$/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out[m[1]!] = m[3]!;
  return out;
}

interface Step {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** One runner "job": its files, and main and post run against them. */
function job(inputs: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'api-proxy-runner-'));
  const files = { GITHUB_OUTPUT: 'output', GITHUB_STATE: 'state', GITHUB_STEP_SUMMARY: 'summary', GITHUB_ENV: 'env' };
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', RUNNER_TEMP: join(dir, 'temp'), GITHUB_ACTION_PATH: ROOT, GITHUB_RUN_ID: String(process.pid), GITHUB_RUN_ATTEMPT: '1' };
  mkdirSync(env.RUNNER_TEMP!);
  for (const [name, file] of Object.entries(files)) {
    env[name] = join(dir, file);
    writeFileSync(env[name]!, '');
  }
  for (const [name, value] of Object.entries(inputs)) env[`INPUT_${name.toUpperCase()}`] = value;
  const step = (entry: 'main' | 'post', extra: Record<string, string> = {}): { child: ReturnType<typeof spawn>; done: Promise<Step> } => {
    const child = spawn(process.execPath, [join(ROOT, `action/dist/${entry}.mjs`)], { cwd: ROOT, env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    return { child, done: new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr }))) };
  };
  const state = (): Record<string, string> => Object.fromEntries(Object.entries(fileCommands(env.GITHUB_STATE!)).map(([k, v]) => [`STATE_${k}`, v]));
  return {
    dir,
    main: () => step('main'),
    post: () => step('post', state()).done,
    outputs: () => fileCommands(env.GITHUB_OUTPUT!),
    summary: () => readFileSync(env.GITHUB_STEP_SUMMARY!, 'utf8'),
    everything: () => Object.keys(files).map((f) => readFileSync(env[f]!, 'utf8')).join('\n'),
  };
}

const left = async (id: string): Promise<string> =>
  `${(await sh('docker', ['ps', '-aq', '--filter', `label=${LABEL}=${id}`])).stdout}${(await sh('docker', ['network', 'ls', '-q', '--filter', `label=${LABEL}=${id}`])).stdout}`.trim();

describe.skipIf(why !== null)(`the Action, run as the runner runs it${why ? ` (skipped: ${why})` : ''}`, () => {
  const upstreamNet = `api-proxy-test-upstream-${process.pid}`;
  const fakeName = `api-proxy-test-fake-${process.pid}`;
  const caDir = mkdtempSync(join(tmpdir(), 'api-proxy-action-ca-'));
  let runner: ReturnType<typeof job>;
  let main: Step;
  let outputs: Record<string, string>;

  beforeAll(async () => {
    // The agent and the fake upstream's images (the compose test builds the same; the cache makes this quick).
    for (const args of [['-t', 'api-proxy-agent:local', '-f', 'agent/Dockerfile', '.'], ['--target', 'fake-upstream', '-t', 'api-proxy-fake-upstream:local', '.']]) {
      const b = await sh('docker', ['build', '-q', ...args], 900_000);
      expect(b.code, b.stderr.slice(-2000)).toBe(0);
    }
    // The fake upstream where Squid can reach it: a public-shaped subnet (Squid refuses private ones).
    await sh('docker', ['network', 'create', '--subnet', '198.19.251.0/24', '--label', `${LABEL}-test=${process.pid}`, upstreamNet]);
    const fake = await sh('docker', ['run', '-d', '--name', fakeName, '--label', `${LABEL}-test=${process.pid}`, '--network', upstreamNet, '--network-alias', 'api.openai.test', '--sysctl', 'net.ipv4.ip_unprivileged_port_start=0', 'api-proxy-fake-upstream:local']);
    expect(fake.code, fake.stderr).toBe(0);
    await until(() => sh('docker', ['logs', fakeName]), (r) => r.stdout.includes('"listening"'), 60_000, 200);
    expect((await sh('docker', ['cp', `${fakeName}:/pki/ca.pem`, join(caDir, 'ca.pem')])).code).toBe(0);
    chmodSync(join(caDir, 'ca.pem'), 0o644);

    runner = job({
      'openai-api-key': KEY,
      'allowed-domains': 'api.openai.test',
      'upstream-url': 'https://api.openai.test',
      'upstream-ca-file': join(caDir, 'ca.pem'),
      'upstream-network': upstreamNet,
      // Codex's prewarm and its turn report 10 tokens each: the prewarm leaves room for the turn, the turn spends it.
      'max-tokens': '15',
    });
    main = await runner.main().done;
    outputs = runner.outputs();
  });

  afterAll(async () => {
    await sh('docker', ['rm', '-f', fakeName]);
    await sh('docker', ['network', 'rm', upstreamNet]);
  });

  it('masks the key before printing anything, and sets its outputs', () => {
    expect(main.code, `${main.stdout}\n${main.stderr}`).toBe(0);
    expect(main.stdout.split('\n')[0]).toBe(`::add-mask::${KEY}`);
    expect(outputs.network).toMatch(/^api-proxy-.+-sandbox$/);
    expect(outputs['base-url']).toBe('http://api-proxy:10000/v1');
    expect(outputs['codex-config']).toContain('base_url = "http://api-proxy:10000/v1"');
    expect(outputs['codex-config']).not.toContain('env_key');
  });

  it('runs Squid and the sidecar hardened, the key mounted into the sidecar alone and on no command line', async () => {
    const id = fileCommands(join(runner.dir, 'state')).id!;
    const containers = (await sh('docker', ['ps', '-q', '--filter', `label=${LABEL}=${id}`])).stdout.trim().split('\n');
    expect(containers).toHaveLength(2);
    for (const c of containers) {
      const inspect = JSON.parse((await sh('docker', ['inspect', c])).stdout)[0];
      expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
      expect(inspect.HostConfig.CapDrop).toEqual(['ALL']);
      expect(inspect.HostConfig.SecurityOpt).toContain('no-new-privileges:true');
      expect(inspect.HostConfig.Memory).toBeGreaterThan(0);
      expect(inspect.HostConfig.PidsLimit).toBeGreaterThan(0);
      const text = JSON.stringify(inspect);
      expect(text).not.toContain(KEY);
      const mounts = (inspect.Mounts as { Destination: string }[]).map((m) => m.Destination);
      if (inspect.Name.endsWith('-sidecar')) expect(mounts).toContain('/run/secrets/openai_api_key');
      else expect(mounts).not.toContain('/run/secrets/openai_api_key');
    }
    // The usage URL answers from the runner.
    const usage = (await (await fetch(outputs['usage-url']!)).json()) as { budget: { maxTokens: number } };
    expect(usage.budget.maxTokens).toBe(15);
  });

  it('an agent container on the output network reaches the sidecar and nothing else', async () => {
    const targets: [string, number][] = [['api-proxy', 10000], ['squid', 3128], ['api.openai.test', 443], ['198.19.251.2', 443], ['1.1.1.1', 443]];
    const r = await sh('docker', ['run', '--rm', '--network', outputs.network!, '--entrypoint', 'node', 'api-proxy-agent:local', '-e', probeScript(targets)]);
    expect(r.code, r.stderr).toBe(0);
    const [sidecar, ...others] = probeResults(r.stdout);
    expect(sidecar).toBe('open');
    for (const outcome of others) expect(outcome).not.toBe('open');
  });

  const codex = async (): Promise<Ran> => {
    const home = mkdtempSync(join(tmpdir(), 'api-proxy-action-codex-'));
    writeFileSync(join(home, 'config.toml'), outputs['codex-config']!);
    chmodSync(home, 0o777);
    return sh('docker', ['run', '--rm', '--network', outputs.network!, '-e', 'CODEX_HOME=/codex', '-v', `${home}:/codex`, '--entrypoint', 'codex', 'api-proxy-agent:local', 'exec', '--skip-git-repo-check', '--ephemeral', '--json', 'say hi'], 180_000);
  };

  it('a Codex turn with the printed config completes; with max-tokens spent, the next stops with "Quota exceeded"', async () => {
    const first = await codex();
    expect(first.code, first.stderr.slice(-2000)).toBe(0);
    expect(agentMessage(first.stdout)).toBe(FAKE_TEXT);
    const second = await codex();
    expect(second.code).toBe(1);
    expect(`${second.stdout}\n${second.stderr}`).toContain('Quota exceeded');
  });

  it('post writes the usage and the budget state into the job summary, and leaves no container or network', async () => {
    const id = fileCommands(join(runner.dir, 'state')).id!;
    const post = await runner.post();
    expect(post.code, `${post.stdout}\n${post.stderr}`).toBe(0);
    const summary = runner.summary();
    expect(summary).toContain('### Model usage (api-proxy)');
    // The prewarm's response counts beside the turn's.
    expect(summary).toMatch(/\| `gpt-5\.5` \| 2 \|/);
    expect(summary).toMatch(/Budget: \d+ of 15 tokens: \*\*exhausted\*\*/);
    expect(await left(id)).toBe('');
    // The key is nowhere the runner keeps: outputs, state, summary, env, what main and post printed.
    for (const text of [runner.everything(), main.stdout.split('\n').slice(1).join('\n'), main.stderr, post.stdout, post.stderr]) {
      expect(text).not.toContain(KEY.slice(8, 24));
    }
  });

  it('post cleans up after a main that was killed halfway', async () => {
    const killed = job({ 'openai-api-key': KEY, image: 'api-proxy:action', 'squid-image': 'api-proxy-squid:action' });
    const m = killed.main();
    // Kill it once it has made something: its state already names the sandbox.
    const id = await until(() => fileCommands(join(killed.dir, 'state')).id, (v) => v !== undefined, 30_000, 20);
    await until(() => sh('docker', ['network', 'ls', '-q', '--filter', `label=${LABEL}=${id}`]), (r) => r.stdout.trim() !== '', 30_000, 50);
    m.child.kill('SIGKILL');
    await m.done;
    expect(await left(id!)).not.toBe('');
    const post = await killed.post();
    expect(post.code, post.stderr).toBe(0);
    expect(await left(id!)).toBe('');
  });
});
