import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, proxyFor } from '../src/config.js';

const KEY = 'sk-proj-abcDEF0123456789';
const fail = (env: Record<string, string>): string => {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('loadConfig accepted a bad environment');
};

const ANT_KEY = 'sk-ant-api03-abcDEF0123456789';

describe('loadConfig', () => {
  it('applies the contract defaults', () => {
    const c = loadConfig({ OPENAI_API_KEY: KEY });
    expect(c.providers).toMatchObject([
      { provider: { name: 'openai' }, key: KEY, keySource: 'env', upstreamUrl: 'https://api.openai.com', basePath: '/v1', egressProxy: null, port: 10000 },
    ]);
    expect(c).toMatchObject({
      requireEgressProxy: false,
      host: '0.0.0.0',
      logLevel: 'info',
      maxBodyBytes: 67108864,
      connectTimeoutMs: 10000,
      idleTimeoutMs: 300000,
      shutdownGraceMs: 10000,
      proxyAuthToken: undefined,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('trims a trailing newline instead of sending it', () => {
    expect(loadConfig({ OPENAI_API_KEY: `${KEY}\n` }).providers[0]!.key).toBe(KEY);
  });

  it.each([
    [{}, 'OPENAI_API_KEY: is missing'],
    [{ OPENAI_API_KEY: '' }, 'OPENAI_API_KEY: is empty'],
    [{ OPENAI_API_KEY: '  \n' }, 'OPENAI_API_KEY: is empty'],
    [{ OPENAI_API_KEY: 'sk-abc def' }, 'OPENAI_API_KEY: contains whitespace'],
    [{ OPENAI_API_KEY: 'sk-abc\u0007def' }, 'OPENAI_API_KEY: contains whitespace or control'],
    [{ OPENAI_API_KEY: 'sk-placeholder-123' }, 'OPENAI_API_KEY: is a placeholder'],
    [{ OPENAI_API_KEY: 'your-api-key-here' }, 'OPENAI_API_KEY: is a placeholder'],
    [{ OPENAI_API_KEY: '${OPENAI_API_KEY}' }, 'OPENAI_API_KEY: is a placeholder'],
  ])('refuses %j with a reason naming the variable', (env, reason) => {
    expect(fail(env)).toContain(reason);
  });

  it('never echoes a rejected secret', () => {
    const secret = 'sk-proj-secret value-9876';
    const message = fail({ OPENAI_API_KEY: secret, PROXY_AUTH_TOKEN: 'tok en-5555' });
    expect(message).not.toContain('secret');
    expect(message).not.toContain('9876');
    expect(message).not.toContain('5555');
    expect(message).toContain('PROXY_AUTH_TOKEN');
  });

  it('reads and trims a key file, and names a bad one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const file = join(dir, 'key');
    writeFileSync(file, `${KEY}\n`);
    expect(loadConfig({ OPENAI_API_KEY_FILE: file, OPENAI_API_KEY: '' }).providers).toMatchObject([{ key: KEY, keySource: 'file', keyFile: file, keySetting: 'OPENAI_API_KEY_FILE' }]);
    writeFileSync(file, '\n');
    expect(fail({ OPENAI_API_KEY_FILE: file })).toMatch(/^OPENAI_API_KEY_FILE: .* is empty$/);
    expect(fail({ OPENAI_API_KEY_FILE: join(dir, 'absent') })).toContain('cannot be read (ENOENT)');
    writeFileSync(file, KEY);
    expect(fail({ OPENAI_API_KEY_FILE: file, OPENAI_API_KEY: KEY })).toContain('set only one');
  });

  it.each([
    [{ UPSTREAM_URL: 'ftp://x' }, 'UPSTREAM_URL: must be http or https'],
    [{ UPSTREAM_URL: 'https://api.openai.com/v1' }, 'UPSTREAM_URL: must be an origin only'],
    [{ PORT: '70000' }, 'PORT:'],
    [{ MAX_BODY_BYTES: '-1' }, 'MAX_BODY_BYTES: must be a positive whole number'],
    [{ UPSTREAM_IDLE_TIMEOUT_MS: '1.5' }, 'UPSTREAM_IDLE_TIMEOUT_MS: must be a positive whole number'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL:'],
    [{ REQUIRE_EGRESS_PROXY: 'maybe' }, 'REQUIRE_EGRESS_PROXY:'],
    [{ HTTPS_PROXY: 'socks5://p:1080' }, 'HTTPS_PROXY: must be an http or https proxy URL'],
    [{ ALLOWED_ROUTES: ' , ' }, 'ALLOWED_ROUTES: is set but names no route family'],
    [{ ALLOWED_ROUTES: 'responses,Files' }, 'ALLOWED_ROUTES: "Files" is not a route family name'],
    [{ RESERVE_TOKENS: '0' }, 'RESERVE_TOKENS: must be a positive whole number'],
    [{ ALLOWED_MCP_SERVERS: 'https://mcp.example.com' }, 'ALLOWED_MCP_SERVERS: "https://mcp.example.com" is not a host name'],
    [{ OPENAI_ORGANIZATION: 'org x' }, 'OPENAI_ORGANIZATION: must be an id of visible ASCII characters'],
    [{ OPENAI_PROJECT: 'proj\r\nx-injected: 1' }, 'OPENAI_PROJECT: must be an id of visible ASCII characters'],
  ])('refuses %j', (env, reason) => {
    expect(fail({ OPENAI_API_KEY: KEY, ...env })).toContain(reason);
  });

  it('guarded by any one budget or the model list: then only the counted routes, unless ALLOWED_ROUTES says', () => {
    const counted = ['responses', 'chat', 'completions', 'embeddings', 'models'];
    const routes = (env: Record<string, string | undefined>) => loadConfig({ OPENAI_API_KEY: KEY, ...env }).providers[0]!.allowedRoutes;
    expect(loadConfig({ OPENAI_API_KEY: KEY })).toMatchObject({ guarded: false, reserveTokens: 16_384 });
    expect(routes({})).toEqual(['*']);
    for (const env of [{ MAX_TOKENS: '5' }, { MAX_REQUESTS: '5' }, { ALLOWED_MODELS: 'gpt-5*' }]) {
      expect(loadConfig({ OPENAI_API_KEY: KEY, ...env })).toMatchObject({ guarded: true });
      expect(routes(env)).toEqual(counted);
    }
    expect(routes({ MAX_TOKENS: '5', ALLOWED_ROUTES: 'responses, files', RESERVE_TOKENS: '' })).toEqual(['responses', 'files']);
    expect(loadConfig({ OPENAI_API_KEY: KEY, RESERVE_TOKENS: '' }).reserveTokens).toBe(16_384);
    // Empty values (compose and the Action pass them so) count as unset.
    expect(loadConfig({ OPENAI_API_KEY: KEY, OPENAI_ORGANIZATION: '', OPENAI_PROJECT: '' })).toMatchObject({ openaiOrganization: undefined });
    expect(routes({ ALLOWED_ROUTES: '' })).toEqual(['*']);
  });

  it('serves each provider whose key is set, on its own port and upstream; the OpenAI settings alone change nothing', () => {
    const both = loadConfig({ OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: ANT_KEY });
    expect(both.providers.map((p) => [p.provider.name, p.port, p.upstreamUrl, p.basePath, p.key])).toEqual([
      ['openai', 10000, 'https://api.openai.com', '/v1', KEY],
      ['anthropic', 10001, 'https://api.anthropic.com', '/v1', ANT_KEY],
    ]);
    const only = loadConfig({ ANTHROPIC_API_KEY: ANT_KEY, ANTHROPIC_PORT: '9001', ANTHROPIC_UPSTREAM_URL: 'https://ant.example:8443', OPENAI_API_KEY: '' });
    expect(only.providers.map((p) => [p.provider.name, p.port, p.upstreamUrl, p.keySetting])).toEqual([['anthropic', 9001, 'https://ant.example:8443', 'ANTHROPIC_API_KEY']]);
    // REQUIRE_EGRESS_PROXY names the upstream setting that has none.
    expect(fail({ ANTHROPIC_API_KEY: ANT_KEY, REQUIRE_EGRESS_PROXY: 'true', NO_PROXY: 'api.anthropic.com', HTTPS_PROXY: 'http://squid:3128' })).toContain(
      'no egress proxy applies to ANTHROPIC_UPSTREAM_URL https://api.anthropic.com',
    );
  });

  it.each([
    [{ ANTHROPIC_API_KEY: 'sk-placeholder' }, 'ANTHROPIC_API_KEY: is a placeholder'],
    [{ ANTHROPIC_API_KEY: 'sk-ant-api-proxy-placeholder' }, 'ANTHROPIC_API_KEY: is a placeholder'],
    [{ ANTHROPIC_API_KEY: 'your-anthropic-api-key' }, 'ANTHROPIC_API_KEY: is a placeholder'],
    [{ GEMINI_API_KEY: 'your_gemini_key' }, 'GEMINI_API_KEY: is a placeholder'],
    [{ ANTHROPIC_API_KEY: 'sk-ant two' }, 'ANTHROPIC_API_KEY: contains whitespace'],
    [{ ANTHROPIC_API_KEY: ANT_KEY, ANTHROPIC_API_KEY_FILE: '/nonexistent' }, 'ANTHROPIC_API_KEY: is set together with ANTHROPIC_API_KEY_FILE'],
    [{ ANTHROPIC_API_KEY_FILE: '/nonexistent/key' }, 'ANTHROPIC_API_KEY_FILE: /nonexistent/key cannot be read (ENOENT)'],
    [{ ANTHROPIC_API_KEY: ANT_KEY, ANTHROPIC_PORT: '10000' }, 'ANTHROPIC_PORT: 10000 is also PORT'],
    [{ ANTHROPIC_API_KEY: ANT_KEY, ANTHROPIC_UPSTREAM_URL: 'https://api.anthropic.com/v1' }, 'ANTHROPIC_UPSTREAM_URL: must be an origin only'],
    [{ OPENAI_API_KEY: '', ANTHROPIC_API_KEY: '' }, 'OPENAI_API_KEY: is empty'],
    [{ ALLOWED_ROUTES: 'bedrock:chat' }, 'ALLOWED_ROUTES: "bedrock:chat" is not a route family name'],
    [{ AZURE_OPENAI_API_KEY: 'azure-key-0123456789abcdef' }, 'AZURE_OPENAI_ENDPOINT: is missing (required with AZURE_OPENAI_API_KEY)'],
  ])('refuses %j, naming the variable and never the key', (env, reason) => {
    const message = fail({ OPENAI_API_KEY: KEY, ...env });
    expect(message).toContain(reason);
    expect(message).not.toContain(ANT_KEY);
  });

  it('with no provider key at all, names every key it would take', () => {
    expect(fail({})).toBe("OPENAI_API_KEY: is missing (set it, or OPENAI_API_KEY_FILE, or another provider's key: ANTHROPIC_API_KEY, GEMINI_API_KEY, AZURE_OPENAI_API_KEY)");
  });

  it('ALLOWED_ROUTES: a bare family applies to each provider that has it, provider:family to that provider only', () => {
    const routes = (env: Record<string, string>) =>
      Object.fromEntries(loadConfig({ OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: ANT_KEY, ...env }).providers.map((p) => [p.provider.name, p.allowedRoutes]));
    expect(routes({ MAX_TOKENS: '5' })).toEqual({ openai: ['responses', 'chat', 'completions', 'embeddings', 'models'], anthropic: ['messages', 'models'] });
    // `chat` is no Anthropic family: it must not open Anthropic's uncounted /v1/chat/completions.
    expect(routes({ ALLOWED_ROUTES: 'responses,chat,models,anthropic:messages,openai:search' })).toEqual({
      openai: ['responses', 'chat', 'models', 'search'],
      anthropic: ['models', 'messages'],
    });
    expect(routes({ ALLOWED_ROUTES: '*' })).toEqual({ openai: ['*'], anthropic: ['*'] });
  });

  it('normalises the base path', () => {
    expect(loadConfig({ OPENAI_API_KEY: KEY, UPSTREAM_BASE_PATH: '/openai/v1/' }).providers[0]!.basePath).toBe('/openai/v1');
    expect(loadConfig({ OPENAI_API_KEY: KEY, UPSTREAM_BASE_PATH: '/' }).providers[0]!.basePath).toBe('');
  });

  it('picks the egress proxy by the upstream scheme, either case, lower case first', () => {
    expect(loadConfig({ OPENAI_API_KEY: KEY, HTTPS_PROXY: 'http://squid:3128' }).providers[0]!.egressProxy?.href).toBe('http://squid:3128/');
    expect(loadConfig({ OPENAI_API_KEY: KEY, https_proxy: 'squid:3128', HTTPS_PROXY: 'http://other:1' }).providers[0]!.egressProxy?.host).toBe('squid:3128');
    expect(loadConfig({ OPENAI_API_KEY: KEY, HTTP_PROXY: 'http://squid:3128' }).providers[0]!.egressProxy).toBeNull();
  });

  it('refuses to start without an egress proxy when one is required', () => {
    expect(fail({ OPENAI_API_KEY: KEY, REQUIRE_EGRESS_PROXY: 'true' })).toContain('REQUIRE_EGRESS_PROXY: is true but no egress proxy');
    expect(
      fail({ OPENAI_API_KEY: KEY, REQUIRE_EGRESS_PROXY: 'true', HTTPS_PROXY: 'http://squid:3128', NO_PROXY: '.openai.com' }),
    ).toContain('check NO_PROXY');
    expect(loadConfig({ OPENAI_API_KEY: KEY, REQUIRE_EGRESS_PROXY: 'true', HTTPS_PROXY: 'http://squid:3128' }).requireEgressProxy).toBe(true);
  });

  it('reads the budgets, the model allowlist and the usage log; none by default', () => {
    expect(loadConfig({ OPENAI_API_KEY: KEY })).toMatchObject({ maxTokens: null, maxRequests: null, allowedModels: null, usageLogFile: undefined });
    const log = join(mkdtempSync(join(tmpdir(), 'api-proxy-usage-')), 'usage.jsonl');
    const c = loadConfig({ OPENAI_API_KEY: KEY, MAX_TOKENS: '100000', MAX_REQUESTS: '50', ALLOWED_MODELS: 'gpt-5*, o4-mini ,ft:gpt-4o:org:x:1', USAGE_LOG_FILE: log });
    expect(c).toMatchObject({ maxTokens: 100000, maxRequests: 50, allowedModels: ['gpt-5*', 'o4-mini', 'ft:gpt-4o:org:x:1'], usageLogFile: log });
  });

  it('takes an empty budget, model list or log path as unset, as templates pass them', () => {
    expect(loadConfig({ OPENAI_API_KEY: KEY, MAX_TOKENS: '', MAX_REQUESTS: '', ALLOWED_MODELS: '', USAGE_LOG_FILE: '' })).toMatchObject({
      maxTokens: null,
      maxRequests: null,
      allowedModels: null,
      usageLogFile: undefined,
    });
  });

  it.each([
    [{ MAX_TOKENS: 'abc' }, 'MAX_TOKENS: must be a positive whole number, got "abc"'],
    [{ MAX_TOKENS: '0' }, 'MAX_TOKENS: must be a positive whole number, got "0"'],
    [{ MAX_REQUESTS: '-5' }, 'MAX_REQUESTS: must be a positive whole number, got "-5"'],
    [{ MAX_REQUESTS: '1.5' }, 'MAX_REQUESTS: must be a positive whole number'],
    [{ ALLOWED_MODELS: ' , ' }, 'ALLOWED_MODELS: is set but names no model'],
    [{ ALLOWED_MODELS: 'gpt-5,,o4-mini' }, 'ALLOWED_MODELS: "" is not a model name or glob'],
    [{ ALLOWED_MODELS: 'gpt 5' }, 'ALLOWED_MODELS: "gpt 5" is not a model name or glob'],
    [{ USAGE_LOG_FILE: '/nonexistent-dir/usage.jsonl' }, 'USAGE_LOG_FILE: /nonexistent-dir/usage.jsonl cannot be written (ENOENT)'],
  ])('refuses %j in one line naming the variable', (env, message) => {
    const m = fail({ OPENAI_API_KEY: KEY, ...env });
    expect(m).toContain(message);
    expect(m).not.toContain('\n');
  });
});

describe('proxyFor and NO_PROXY', () => {
  const vars = (noProxy: string) => ({ https: 'http://squid:3128', http: '', noProxy });
  const target = new URL('https://api.openai.com');
  it.each([
    ['', true],
    ['*', false],
    ['api.openai.com', false],
    ['openai.com', false],
    ['.openai.com', false],
    ['*.openai.com', false],
    ['notopenai.com', true],
    ['api.openai.com:8443', true],
    ['api.openai.com:443', false],
    ['localhost, 127.0.0.1 ,api.openai.com', false],
  ])('NO_PROXY=%j → proxied %s', (noProxy, proxied) => {
    expect(proxyFor(target, vars(noProxy)) !== null).toBe(proxied);
  });
});
