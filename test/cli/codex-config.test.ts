import { spawnSync } from 'node:child_process';
import { parse } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { baseUrlProblem, codexConfig, CODEX_CONFIG_DEFAULTS } from '../../src/cli/codex-config.js';
import { MAIN } from '../support/process.js';

// Parsed TOML, walked by key: the assertions check the shapes.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type TomlTable = Record<string, any>;

/** `api-proxy codex-config ...` as a user runs it: the built entry point, no settings in the environment. */
const run = (...args: string[]) => spawnSync(process.execPath, [MAIN, 'codex-config', ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });

describe('api-proxy codex-config', () => {
  it('prints a config.toml whose provider sends Codex to the sidecar with no key of its own', () => {
    const { status, stdout, stderr } = run('--base-url', 'http://api-proxy:10000/v1');
    expect(stderr).toBe('');
    expect(status).toBe(0);
    const config = parse(stdout) as TomlTable;
    expect(config.model_provider).toBe('api-proxy');
    const provider = config.model_providers['api-proxy'];
    expect(provider).toEqual({ name: 'api-proxy', base_url: 'http://api-proxy:10000/v1', wire_api: 'responses', supports_websockets: true });
    // No env_key: Codex then neither needs a key nor sends one.
    expect(stdout).not.toMatch(/env_key|OPENAI_API_KEY|bearer/i);
    // Nothing that makes Codex reach for other hosts (see CLIENTS.md).
    expect(config.analytics.enabled).toBe(false);
    expect(config.features.plugins).toBe(false);
    expect(config.check_for_update_on_startup).toBe(false);
  });

  it('takes a model, a provider name and the HTTP-only transport', () => {
    const { status, stdout } = run('--base-url', 'https://proxy.internal/v1', '--model', 'gpt-5.5-mini', '--provider', 'sandbox_1', '--no-websockets');
    expect(status).toBe(0);
    const config = parse(stdout) as TomlTable;
    expect(config.model).toBe('gpt-5.5-mini');
    expect(config.model_provider).toBe('sandbox_1');
    expect(config.model_providers.sandbox_1.supports_websockets).toBe(false);
  });

  it('quotes values so a model name cannot add TOML of its own', () => {
    const text = codexConfig({ ...CODEX_CONFIG_DEFAULTS, baseUrl: 'http://a:1/v1', model: 'x"\nenv_key = "OPENAI_API_KEY' });
    const config = parse(text) as TomlTable;
    expect(config.model).toBe('x"\nenv_key = "OPENAI_API_KEY');
    expect(config.model_providers['api-proxy'].env_key).toBeUndefined();
  });

  it.each([
    [['--base-url', 'api-proxy:10000/v1'], '--base-url must be http:// or https://'],
    [['--base-url', 'not a url'], '--base-url is not a URL'],
    [['--base-url', 'http://user:sk-secret@api-proxy:10000/v1'], '--base-url must not hold credentials'],
    [['--base-url', 'http://api-proxy:10000/v1?x=1'], '--base-url must have no query or fragment'],
    [[], '--base-url is required'],
    [['--base-url', 'http://a/v1', '--provider', 'a.b'], '--provider must be letters, digits, - or _'],
    [['--base-url', 'http://a/v1', '--bogus'], "Unknown option '--bogus'"],
  ])('refuses %j with exit 64 and one clear reason', (args, reason) => {
    const { status, stdout, stderr } = run(...args);
    expect(status).toBe(64);
    expect(stdout).toBe('');
    expect(stderr).toContain(reason);
    expect(stderr).not.toContain('sk-secret');
  });

  it('names what is wrong with a base URL, and accepts the sidecar without /v1 (the base-path rule adds it)', () => {
    expect(baseUrlProblem('http://api-proxy:10000')).toBeNull();
    expect(baseUrlProblem('ftp://x')).toBe('must be http:// or https://');
  });
});
