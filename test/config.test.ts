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

describe('loadConfig', () => {
  it('applies the contract defaults', () => {
    const c = loadConfig({ OPENAI_API_KEY: KEY });
    expect(c).toMatchObject({
      key: KEY,
      keySource: 'env',
      upstreamUrl: 'https://api.openai.com',
      basePath: '/v1',
      egressProxy: null,
      requireEgressProxy: false,
      host: '0.0.0.0',
      port: 10000,
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
    expect(loadConfig({ OPENAI_API_KEY: `${KEY}\n` }).key).toBe(KEY);
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
    expect(loadConfig({ OPENAI_API_KEY_FILE: file, OPENAI_API_KEY: '' })).toMatchObject({ key: KEY, keySource: 'file', keyFile: file });
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
    expect(loadConfig({ OPENAI_API_KEY: KEY })).toMatchObject({ guarded: false, allowedRoutes: ['*'], reserveTokens: 16_384 });
    for (const env of [{ MAX_TOKENS: '5' }, { MAX_REQUESTS: '5' }, { ALLOWED_MODELS: 'gpt-5*' }]) {
      expect(loadConfig({ OPENAI_API_KEY: KEY, ...env })).toMatchObject({ guarded: true, allowedRoutes: counted });
    }
    expect(loadConfig({ OPENAI_API_KEY: KEY, MAX_TOKENS: '5', ALLOWED_ROUTES: 'responses, files', RESERVE_TOKENS: '' })).toMatchObject({ allowedRoutes: ['responses', 'files'], reserveTokens: 16_384 });
    // Empty values (compose and the Action pass them so) count as unset.
    expect(loadConfig({ OPENAI_API_KEY: KEY, ALLOWED_ROUTES: '', OPENAI_ORGANIZATION: '', OPENAI_PROJECT: '' })).toMatchObject({ allowedRoutes: ['*'], openaiOrganization: undefined });
  });

  it('normalises the base path', () => {
    expect(loadConfig({ OPENAI_API_KEY: KEY, UPSTREAM_BASE_PATH: '/openai/v1/' }).basePath).toBe('/openai/v1');
    expect(loadConfig({ OPENAI_API_KEY: KEY, UPSTREAM_BASE_PATH: '/' }).basePath).toBe('');
  });

  it('picks the egress proxy by the upstream scheme, either case, lower case first', () => {
    expect(loadConfig({ OPENAI_API_KEY: KEY, HTTPS_PROXY: 'http://squid:3128' }).egressProxy?.href).toBe('http://squid:3128/');
    expect(loadConfig({ OPENAI_API_KEY: KEY, https_proxy: 'squid:3128', HTTPS_PROXY: 'http://other:1' }).egressProxy?.host).toBe('squid:3128');
    expect(loadConfig({ OPENAI_API_KEY: KEY, HTTP_PROXY: 'http://squid:3128' }).egressProxy).toBeNull();
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
