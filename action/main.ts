// The Action's main step: Squid and the sidecar on networks of their own; the
// agent step joins `outputs.network` and sees the sidecar alone.
import * as core from '@actions/core';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { codexConfig, CODEX_CONFIG_DEFAULTS } from '../src/cli/codex-config.js';
import { docker, dockerOk, LABEL, names } from './docker.js';

const SIDECAR_PORT = 10000;
const READY_TIMEOUT_MS = 120_000;

/** Hardening every container gets, as in docker-compose.yml. */
const hardened = (id: string, memory: string, pids: number): string[] => [
  '--label', `${LABEL}=${id}`,
  '--read-only',
  '--cap-drop', 'ALL',
  '--security-opt', 'no-new-privileges:true',
  '--init',
  '--memory', memory,
  '--pids-limit', String(pids),
  '--restart', 'no',
];

/** An env file docker reads: values on one line each, readable by this user alone. */
function envFile(path: string, values: Record<string, string>): string {
  for (const [k, v] of Object.entries(values)) if (/[\r\n]/.test(v)) throw new Error(`${k} must be one line`);
  writeFileSync(path, Object.entries(values).filter(([, v]) => v !== '').map(([k, v]) => `${k}=${v}\n`).join(''), { mode: 0o600 });
  return path;
}

async function main(): Promise<void> {
  // First, before anything else is printed: the key is masked in every log line after this.
  const key = core.getInput('openai-api-key', { required: true }).trim();
  core.setSecret(key);
  const token = core.getInput('proxy-auth-token');
  if (token) core.setSecret(token);
  const password = randomBytes(24).toString('hex');
  core.setSecret(password);

  // The sandbox's name and label, saved first: post cleans up even if main dies halfway.
  const id = `${process.env.GITHUB_RUN_ID ?? 'local'}-${process.env.GITHUB_RUN_ATTEMPT ?? '1'}-${randomBytes(3).toString('hex')}`;
  core.saveState('id', id);
  const n = names(id);
  const actionPath = resolve(process.env.GITHUB_ACTION_PATH ?? '.');

  // Engines before the CVE-2024-29018 fix let internal networks resolve names through the host.
  spawnSync('bash', [join(actionPath, 'scripts/engine-check.sh')], { stdio: 'inherit' });

  const image = core.getInput('image') || (await build(actionPath, '.', 'api-proxy:action'));
  const squidImage = core.getInput('squid-image') || (await build(actionPath, 'squid', 'api-proxy-squid:action'));

  // Files under RUNNER_TEMP, never the workspace: a 0700 directory only this user can enter.
  const dir = join(process.env.RUNNER_TEMP ?? '/tmp', `api-proxy-${id}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  core.saveState('dir', dir);
  const keyFile = join(dir, 'openai_api_key');
  // 0644 inside the 0700 directory: Docker bind-mounts the file, and the sidecar runs as uid 1000.
  writeFileSync(keyFile, key, { mode: 0o644 });
  chmodSync(keyFile, 0o644);

  await dockerOk(['network', 'create', '--internal', '--label', `${LABEL}=${id}`, n.sandbox]);
  await dockerOk(['network', 'create', '--internal', '--label', `${LABEL}=${id}`, n.egress]);
  await dockerOk(['network', 'create', '--label', `${LABEL}=${id}`, n.internet]);

  const squidEnv = envFile(join(dir, 'squid.env'), {
    SQUID_ALLOWED_DOMAINS: core.getInput('allowed-domains') || 'api.openai.com',
    SQUID_PROXY_PASSWORD: password,
  });
  await dockerOk(['create', '--name', n.squid, ...hardened(id, '256m', 64), '--network', n.egress, '--network-alias', 'squid', '--env-file', squidEnv, squidImage]);
  await dockerOk(['network', 'connect', n.internet, n.squid]);
  const upstreamNetwork = core.getInput('upstream-network');
  if (upstreamNetwork) await dockerOk(['network', 'connect', upstreamNetwork, n.squid]);
  await dockerOk(['start', n.squid]);

  const caFile = core.getInput('upstream-ca-file');
  const sidecarEnv = envFile(join(dir, 'sidecar.env'), {
    OPENAI_API_KEY_FILE: '/run/secrets/openai_api_key',
    HTTPS_PROXY: `http://api-proxy:${password}@squid:3128`,
    UPSTREAM_URL: core.getInput('upstream-url'),
    MAX_TOKENS: core.getInput('max-tokens'),
    MAX_REQUESTS: core.getInput('max-requests'),
    ALLOWED_MODELS: core.getInput('allowed-models'),
    ALLOWED_ROUTES: core.getInput('allowed-routes'),
    RESERVE_TOKENS: core.getInput('reserve-tokens'),
    ALLOWED_MCP_SERVERS: core.getInput('allowed-mcp-servers'),
    OPENAI_ORGANIZATION: core.getInput('openai-organization'),
    OPENAI_PROJECT: core.getInput('openai-project'),
    PROXY_AUTH_TOKEN: token,
    NODE_EXTRA_CA_CERTS: caFile ? '/run/api-proxy/ca.pem' : '',
  });
  await dockerOk([
    'create', '--name', n.sidecar, ...hardened(id, '256m', 64),
    '--network', n.sandbox, '--network-alias', 'api-proxy',
    '--env-file', sidecarEnv,
    '--mount', `type=bind,source=${keyFile},target=/run/secrets/openai_api_key,readonly`,
    ...(caFile ? ['--mount', `type=bind,source=${resolve(caFile)},target=/run/api-proxy/ca.pem,readonly`] : []),
    image,
  ]);
  await dockerOk(['network', 'connect', n.egress, n.sidecar]);
  await dockerOk(['start', n.sidecar]);

  await waitReady(n.sidecar, n.squid);

  const address = await dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${n.egress}").IPAddress}}`, n.sidecar]);
  const baseUrl = `http://api-proxy:${SIDECAR_PORT}/v1`;
  core.setOutput('network', n.sandbox);
  core.setOutput('base-url', baseUrl);
  core.setOutput('codex-config', codexConfig({ ...CODEX_CONFIG_DEFAULTS, baseUrl }));
  core.setOutput('usage-url', `http://${address}:${SIDECAR_PORT}/usage`);
  core.saveState('ready', 'true');
  core.info(`api-proxy sandbox ${id} is ready: agents join network ${n.sandbox} and use ${baseUrl}`);
}

async function build(actionPath: string, context: string, tag: string): Promise<string> {
  core.info(`building ${tag} from ${join(actionPath, context)}`);
  await dockerOk(['build', '-q', '-t', tag, join(actionPath, context)], 1_200_000);
  return tag;
}

/** Polls the sidecar's own readiness check; on failure, says why with the containers' last lines. */
async function waitReady(sidecar: string, squid: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const state = await docker(['inspect', '-f', '{{.State.Running}}', sidecar]);
    if (state.stdout.trim() !== 'true') break;
    if ((await docker(['exec', sidecar, 'node', 'dist/src/healthcheck.js'])).code === 0) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  const tail = async (c: string): Promise<string> => {
    const r = await docker(['logs', '--tail', '20', c]);
    return `${r.stdout}${r.stderr}`.trim();
  };
  throw new Error(`the sidecar did not become ready.\nsidecar:\n${await tail(sidecar)}\nsquid:\n${await tail(squid)}`);
}

main().catch((err: unknown) => core.setFailed((err as Error).message));
