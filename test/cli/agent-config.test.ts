import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { agentConfigCommand, CLAUDE_PLACEHOLDER_KEY } from '../../src/cli/agent-config.js';
import { spawnMain } from '../support/process.js';

const run = (args: string[]) => {
  const out = new PassThrough();
  const err = new PassThrough();
  const code = agentConfigCommand(args, out, err);
  return { code, stdout: String(out.read() ?? ''), stderr: String(err.read() ?? '') };
};

describe('api-proxy agent-config', () => {
  it('claude: NAME=value lines with the base URL, a placeholder key, and no traffic to other hosts', () => {
    const r = run(['claude', '--base-url', 'http://api-proxy:10001']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'ANTHROPIC_BASE_URL=http://api-proxy:10001',
        `ANTHROPIC_API_KEY=${CLAUDE_PLACEHOLDER_KEY}`,
        'DISABLE_TELEMETRY=1',
        'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1',
        '',
      ].join('\n'),
    );
  });

  it("claude --format settings: the same as Claude Code's settings.json env", () => {
    const r = run(['claude', '--base-url', 'http://127.0.0.1:10001', '--format', 'settings']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      env: { ANTHROPIC_BASE_URL: 'http://127.0.0.1:10001', ANTHROPIC_API_KEY: CLAUDE_PLACEHOLDER_KEY, DISABLE_TELEMETRY: '1', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' },
    });
  });

  it.each([
    [['claude'], '--base-url is required'],
    [['claude', '--base-url', 'http://api-proxy:10001/v1'], 'must not end in /v1'],
    [['claude', '--base-url', 'http://u:p@api-proxy:10001'], 'must not hold credentials'],
    [['claude', '--base-url', 'api-proxy:10001'], 'must be http:// or https://'],
    [['claude', '--base-url', 'http://api-proxy:10001', '--format', 'yaml'], '--format must be env or settings'],
    [['gemini'], "unknown agent 'gemini'"],
    [[], 'name an agent'],
  ])('%j exits 64 saying why', (args, message) => {
    const r = run(args);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain(message);
    expect(r.stdout).toBe('');
  });

  it('codex: the same config.toml as codex-config, and both commands answer from the built binary', async () => {
    const p = spawnMain({}, ['agent-config', 'codex', '--base-url', 'http://api-proxy:10000/v1']);
    expect((await p.exited).code).toBe(0);
    const q = spawnMain({}, ['codex-config', '--base-url', 'http://api-proxy:10000/v1']);
    expect((await q.exited).code).toBe(0);
    expect(p.stdout()).toBe(q.stdout());
    expect(p.stdout()).toContain('base_url = "http://api-proxy:10000/v1"');
    const c = spawnMain({}, ['agent-config', 'claude', '--base-url', 'http://api-proxy:10001']);
    expect((await c.exited).code).toBe(0);
    expect(c.stdout()).toContain('ANTHROPIC_BASE_URL=http://api-proxy:10001\n');
  });
});
