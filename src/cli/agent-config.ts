// `api-proxy agent-config <agent>`: the settings that send an agent's every
// model call to the sidecar and nowhere else, with no key of its own.
import { parseArgs } from 'node:util';
import { baseUrlProblem, codexConfigCommand } from './codex-config.js';

const EX_USAGE = 64;
const USAGE = `usage: api-proxy agent-config claude --base-url URL [--format env|settings]
       api-proxy agent-config codex --base-url URL [codex-config's options]`;

/** Any value serves: the sidecar drops whatever key the agent sends and sets the real one. */
export const CLAUDE_PLACEHOLDER_KEY = 'sk-ant-api-proxy-placeholder';

/**
 * Claude Code's environment for the sandbox: its base URL, a placeholder key
 * (with one it asks for no login), and no telemetry, error reporting or
 * update checks, which would try hosts the sandbox only refuses.
 */
export function claudeEnv(baseUrl: string): Record<string, string> {
  return {
    ANTHROPIC_BASE_URL: baseUrl,
    ANTHROPIC_API_KEY: CLAUDE_PLACEHOLDER_KEY,
    DISABLE_TELEMETRY: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
  };
}

function claudeCommand(args: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        'base-url': { type: 'string' },
        format: { type: 'string', default: 'env' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (e) {
    err.write(`api-proxy agent-config claude: ${(e as Error).message}\n${USAGE}\n`);
    return EX_USAGE;
  }
  if (values.help) {
    out.write(`${USAGE}\n`);
    return 0;
  }
  const baseUrl = values['base-url'];
  if (baseUrl === undefined) {
    err.write(`api-proxy agent-config claude: --base-url is required (the sidecar's Anthropic port, e.g. http://api-proxy:10001)\n${USAGE}\n`);
    return EX_USAGE;
  }
  // Claude Code adds /v1/messages itself: a /v1 here would make /v1/v1/messages.
  const problem = baseUrlProblem(baseUrl) ?? (/\/v1\/?$/.test(new URL(baseUrl).pathname) ? 'must not end in /v1: Claude Code adds it' : null);
  if (problem) {
    err.write(`api-proxy agent-config claude: --base-url ${problem}\n`);
    return EX_USAGE;
  }
  const env = claudeEnv(baseUrl);
  if (values.format === 'env') {
    // NAME=value lines: for $GITHUB_ENV, `docker run --env-file`, or `set -a; . file`.
    out.write(`${Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n')}\n`);
  } else if (values.format === 'settings') {
    // Claude Code's settings.json (~/.claude/settings.json) applies its `env` to every session.
    out.write(`${JSON.stringify({ env }, null, 2)}\n`);
  } else {
    err.write(`api-proxy agent-config claude: --format must be env or settings\n${USAGE}\n`);
    return EX_USAGE;
  }
  return 0;
}

/** Runs the command; returns the exit code. */
export function agentConfigCommand(args: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream): number {
  const [agent, ...rest] = args;
  if (agent === 'claude') return claudeCommand(rest, out, err);
  if (agent === 'codex') return codexConfigCommand(rest, out, err);
  if (agent === '--help' || agent === '-h') {
    out.write(`${USAGE}\n`);
    return 0;
  }
  err.write(`api-proxy agent-config: ${agent === undefined ? 'name an agent' : `unknown agent '${agent}'`} (claude or codex)\n${USAGE}\n`);
  return EX_USAGE;
}
