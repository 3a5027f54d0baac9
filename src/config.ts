import { closeSync, openSync } from 'node:fs';
import { bool, cleanEnv, host, makeValidator, port, str, EnvError, type ValidatorSpec } from 'envalid';
import { parseKey, readKeyFile, type KeySource } from './key.js';
import { PROVIDERS, type Provider } from './providers/index.js';

/** One provider as served: its key, its port, its upstream and the routes it forwards. */
export interface ProviderConfig {
  readonly provider: Provider;
  readonly key: string;
  readonly keySource: KeySource;
  readonly keyFile: string | undefined;
  /** The setting the key came from (`OPENAI_API_KEY` or `OPENAI_API_KEY_FILE`), named when the upstream refuses it. */
  readonly keySetting: string;
  readonly port: number;
  /** Origin only, e.g. `https://api.openai.com`. */
  readonly upstreamUrl: string;
  /** `/v1`, or `''` for none. */
  readonly basePath: string;
  /** The egress proxy that applies to `upstreamUrl`, or null. */
  readonly egressProxy: URL | null;
  /** Route families forwarded (ALLOWED_ROUTES as it applies to this provider); `*` for every family but ephemeral_keys. */
  readonly allowedRoutes: readonly string[];
}

export interface Config {
  /** Every provider whose key is set, in PROVIDERS order: at least one. */
  readonly providers: readonly ProviderConfig[];
  readonly requireEgressProxy: boolean;
  readonly host: string;
  readonly logLevel: string;
  readonly maxBodyBytes: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly proxyAuthToken: string | undefined;
  /** The token budget (input + output), or null for none. */
  readonly maxTokens: number | null;
  /** The request budget, or null for none. */
  readonly maxRequests: number | null;
  /** Model names and `*` globs; null allows any model. */
  readonly allowedModels: readonly string[] | null;
  readonly usageLogFile: string | undefined;
  /** Any of MAX_TOKENS, MAX_REQUESTS, ALLOWED_MODELS set: the spend controls are on. */
  readonly guarded: boolean;
  /** Output tokens reserved for a model call that sets no maximum of its own. */
  readonly reserveTokens: number;
  /** Hosts (and `.suffix`es, `connectors`) a hosted `mcp` tool may name. */
  readonly allowedMcpServers: readonly string[];
  /** Sent upstream as OpenAI-Organization / OpenAI-Project; the caller's are always removed. */
  readonly openaiOrganization: string | undefined;
  readonly openaiProject: string | undefined;
}

/** A bad setting: `message` names the variable and never holds a secret's value. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const secretKey = makeValidator<string>((raw) => {
  try {
    return parseKey(raw);
  } catch (err) {
    throw new EnvError((err as Error).message);
  }
});

// Tokens are compared to what callers send, so the same character rules apply.
const secretToken = secretKey;

const originUrl = makeValidator<string>((raw) => {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new EnvError('is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new EnvError('must be http or https');
  if (url.username || url.password) throw new EnvError('must not hold credentials');
  if (url.pathname !== '/' || url.search || url.hash) {
    throw new EnvError('must be an origin only (put a path prefix in UPSTREAM_BASE_PATH)');
  }
  return url.origin;
});

// Proxy URLs may carry credentials: reasons never echo the value.
const proxyUrl = makeValidator<string>((raw) => {
  if (raw === '') return '';
  let url: URL;
  try {
    url = new URL(raw.includes('://') ? raw : `http://${raw}`);
  } catch {
    throw new EnvError('is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new EnvError('must be an http or https proxy URL');
  return url.href;
});

const basePath = makeValidator<string>((raw) => {
  const trimmed = raw.replace(/\/+$/, '');
  if (trimmed !== '' && !/^\/[A-Za-z0-9._~\-/]*$/.test(trimmed)) {
    throw new EnvError('must be a path such as /v1');
  }
  return trimmed;
});

const positive = makeValidator<number>((raw) => {
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new EnvError(`must be a positive whole number, got "${raw}"`);
  return n;
});

// A model name or glob: what OpenAI's names hold (gpt-5.5, ft:gpt-4o:org:x:id, o4-mini), plus `*`.
const MODEL_PATTERN = /^[A-Za-z0-9._:/*-]{1,128}$/;

const modelList = makeValidator<string[]>((raw) => {
  const entries = raw.split(',').map((e) => e.trim());
  if (entries.every((e) => e === '')) throw new EnvError('is set but names no model');
  const bad = entries.find((e) => !MODEL_PATTERN.test(e));
  if (bad !== undefined) throw new EnvError(`"${bad}" is not a model name or glob (letters, digits, . _ : / - and *)`);
  return entries;
});

// `family`, `*`, or either after a provider's name: `anthropic:messages`.
const ROUTE_ENTRY = new RegExp(`^((${PROVIDERS.map((p) => p.name).join('|')}):)?([a-z_]{1,64}|\\*)$`);

const routeList = makeValidator<string[]>((raw) => {
  const entries = raw.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (entries.length === 0) throw new EnvError('is set but names no route family (use * for all)');
  const bad = entries.find((e) => !ROUTE_ENTRY.test(e));
  if (bad !== undefined) throw new EnvError(`"${bad.slice(0, 64)}" is not a route family name (such as responses, files, anthropic:messages, or *)`);
  return entries;
});

// A host name, a `.suffix` for its subdomains, `connectors`, or an IP address: what a URL's hostname can be.
const MCP_SERVER = /^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$|^[0-9a-f:.]+$/;

const mcpServerList = makeValidator<string[]>((raw) => {
  const entries = raw.split(',').map((e) => e.trim().toLowerCase()).filter((e) => e !== '');
  const bad = entries.find((e) => !MCP_SERVER.test(e));
  if (bad !== undefined) throw new EnvError(`"${bad.slice(0, 64)}" is not a host name, a .suffix, or connectors`);
  return entries;
});

// Sent as header values: visible ASCII only, so nothing can split or smuggle a header.
const headerValue = makeValidator<string>((raw) => {
  const value = raw.trim();
  if (!/^[\x21-\x7e]{1,256}$/.test(value)) throw new EnvError('must be an id of visible ASCII characters');
  return value;
});

const OPTIONAL_WHEN_EMPTY = ['MAX_TOKENS', 'MAX_REQUESTS', 'ALLOWED_MODELS', 'USAGE_LOG_FILE', 'ALLOWED_ROUTES', 'RESERVE_TOKENS', 'ALLOWED_MCP_SERVERS', 'OPENAI_ORGANIZATION', 'OPENAI_PROJECT'];

/** Each provider's settings: its key (or key file), port, upstream and base path. */
const PROVIDER_SPECS: Record<string, ValidatorSpec<unknown>> = Object.fromEntries(
  PROVIDERS.flatMap(({ settings, defaults }) => [
    [settings.key, secretKey({ default: undefined })],
    [`${settings.key}_FILE`, str({ default: undefined })],
    [settings.port, port({ default: defaults.port })],
    [settings.upstream, originUrl({ default: defaults.upstream })],
    ...(settings.basePath ? [[settings.basePath, basePath({ default: defaults.basePath })]] : []),
  ]),
);

const SPECS = {
  HTTPS_PROXY: proxyUrl({ default: '' }),
  https_proxy: proxyUrl({ default: '' }),
  HTTP_PROXY: proxyUrl({ default: '' }),
  http_proxy: proxyUrl({ default: '' }),
  NO_PROXY: str({ default: '' }),
  no_proxy: str({ default: '' }),
  REQUIRE_EGRESS_PROXY: bool({ default: false }),
  HOST: host({ default: '0.0.0.0' }),
  LOG_LEVEL: str({ default: 'info', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] }),
  MAX_BODY_BYTES: positive({ default: 67_108_864 }), // 64 MiB: audio and file uploads
  UPSTREAM_CONNECT_TIMEOUT_MS: positive({ default: 10_000 }), // 10 s, CONNECT and TLS included
  UPSTREAM_IDLE_TIMEOUT_MS: positive({ default: 300_000 }), // 5 min: reasoning models think before the first byte
  SHUTDOWN_GRACE_MS: positive({ default: 10_000 }), // 10 s
  PROXY_AUTH_TOKEN: secretToken({ default: undefined }),
  MAX_TOKENS: positive({ default: undefined }),
  MAX_REQUESTS: positive({ default: undefined }),
  ALLOWED_MODELS: modelList({ default: undefined }),
  USAGE_LOG_FILE: str({ default: undefined }),
  ALLOWED_ROUTES: routeList({ default: undefined }),
  RESERVE_TOKENS: positive({ default: 16_384 }),
  ALLOWED_MCP_SERVERS: mcpServerList({ default: [] }),
  OPENAI_ORGANIZATION: headerValue({ default: undefined }),
  OPENAI_PROJECT: headerValue({ default: undefined }),
};

/** Parses and validates the environment once; throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const input = { ...env };
  // Templates pass an unused provider's key (or key file) as '', and Kubernetes manifests an empty key
  // beside its file setting: empty is unset, unless no provider has a key at all.
  const empty: string[] = [];
  for (const { settings } of PROVIDERS) {
    for (const name of [settings.key, `${settings.key}_FILE`]) {
      if (input[name] === undefined || input[name]!.trim() !== '') continue;
      empty.push(name);
      delete input[name];
    }
  }
  // Compose and Helm templates pass optional limits through as empty strings: empty means unset.
  for (const name of OPTIONAL_WHEN_EMPTY) if (input[name] === '') delete input[name];
  const e = cleanEnv(input, { ...SPECS, ...PROVIDER_SPECS }, {
    reporter: ({ errors }) => {
      const parts = Object.entries(errors).map(([name, err]) => describe(name, err as Error));
      if (parts.length > 0) throw new ConfigError(parts.join('; '));
    },
  });

  const guarded = e.MAX_TOKENS !== undefined || e.MAX_REQUESTS !== undefined || e.ALLOWED_MODELS !== undefined;
  const setting = (name: string): unknown => (e as Record<string, unknown>)[name];
  const proxies = { https: e.https_proxy || e.HTTPS_PROXY, http: e.http_proxy || e.HTTP_PROXY, noProxy: e.no_proxy || e.NO_PROXY };
  const providers: ProviderConfig[] = [];
  for (const provider of PROVIDERS) {
    const { key: keyName, upstream: upstreamName, port: portName, basePath: baseName } = provider.settings;
    const resolved = resolveKey(input, keyName, setting(keyName) as string | undefined, setting(`${keyName}_FILE`) as string | undefined);
    if (!resolved) continue;
    const upstreamUrl = setting(upstreamName) as string | undefined;
    if (upstreamUrl === undefined) throw new ConfigError(`${upstreamName}: is missing (required with ${keyName})`);
    const upstream = new URL(upstreamUrl);
    const egressProxy = proxyFor(upstream, proxies);
    if (e.REQUIRE_EGRESS_PROXY && !egressProxy) {
      const which = upstream.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY';
      throw new ConfigError(`REQUIRE_EGRESS_PROXY: is true but no egress proxy applies to ${upstreamName} ${upstreamUrl} (set ${which}, check NO_PROXY)`);
    }
    const port = setting(portName) as number;
    const clash = providers.find((p) => p.port === port);
    if (clash) throw new ConfigError(`${portName}: ${port} is also ${clash.provider.settings.port}; each provider needs its own port`);
    providers.push(
      Object.freeze({
        provider,
        ...resolved,
        port,
        upstreamUrl,
        basePath: baseName ? (setting(baseName) as string) : provider.defaults.basePath,
        egressProxy,
        allowedRoutes: Object.freeze(routesFor(provider, e.ALLOWED_ROUTES, guarded)),
      }),
    );
  }
  if (providers.length === 0) {
    if (empty.length > 0) throw new ConfigError(`${empty[0]}: is empty`);
    const others = PROVIDERS.slice(1).map((p) => p.settings.key).join(', ');
    throw new ConfigError(`OPENAI_API_KEY: is missing (set it, or OPENAI_API_KEY_FILE, or another provider's key: ${others})`);
  }

  if (e.USAGE_LOG_FILE) checkWritable(e.USAGE_LOG_FILE);

  return Object.freeze({
    providers: Object.freeze(providers),
    requireEgressProxy: e.REQUIRE_EGRESS_PROXY,
    host: e.HOST,
    logLevel: e.LOG_LEVEL,
    maxBodyBytes: e.MAX_BODY_BYTES,
    connectTimeoutMs: e.UPSTREAM_CONNECT_TIMEOUT_MS,
    idleTimeoutMs: e.UPSTREAM_IDLE_TIMEOUT_MS,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    proxyAuthToken: e.PROXY_AUTH_TOKEN,
    maxTokens: e.MAX_TOKENS ?? null,
    maxRequests: e.MAX_REQUESTS ?? null,
    allowedModels: e.ALLOWED_MODELS ? Object.freeze(e.ALLOWED_MODELS) : null,
    usageLogFile: e.USAGE_LOG_FILE || undefined,
    guarded,
    reserveTokens: e.RESERVE_TOKENS,
    allowedMcpServers: Object.freeze(e.ALLOWED_MCP_SERVERS),
    openaiOrganization: e.OPENAI_ORGANIZATION,
    openaiProject: e.OPENAI_PROJECT,
  });
}

/** The usage log is appended to for the process's life: a path it cannot write is a bad setting, found now. */
function checkWritable(file: string): void {
  try {
    closeSync(openSync(file, 'a'));
  } catch (err) {
    throw new ConfigError(`USAGE_LOG_FILE: ${file} cannot be written (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

function describe(name: string, err: Error): string {
  if (err.name === 'EnvMissingError') return `${name}: is missing`;
  return `${name}: ${err.message}`;
}

/**
 * ALLOWED_ROUTES as it applies to one provider: a bare entry to every
 * provider whose table has a family of that name (so `chat` opens no
 * uncounted `/v1/chat/…` on another provider's port), `provider:family` to
 * that one, known or not. Unset, guarded: the provider's counted families;
 * unguarded: all.
 */
function routesFor(provider: Provider, entries: readonly string[] | undefined, guarded: boolean): string[] {
  if (!entries) return guarded ? [...provider.guardedRoutes] : ['*'];
  const prefix = `${provider.name}:`;
  const known = (name: string): boolean => name === '*' || provider.families.some((f) => f.name === name);
  return entries.flatMap((e) => (e.startsWith(prefix) ? [e.slice(prefix.length)] : !e.includes(':') && known(e) ? [e] : []));
}

/** A provider's key from its setting or its file; undefined when neither is set (the provider is not served). */
function resolveKey(
  env: Record<string, string | undefined>,
  name: string,
  fromEnv: string | undefined,
  file: string | undefined,
): { key: string; keySource: KeySource; keyFile: string | undefined; keySetting: string } | undefined {
  if (file) {
    if (env[name]?.trim()) throw new ConfigError(`${name}: is set together with ${name}_FILE; set only one`);
    try {
      return { key: readKeyFile(file), keySource: 'file', keyFile: file, keySetting: `${name}_FILE` };
    } catch (err) {
      throw new ConfigError(`${name}_FILE: ${file} ${(err as Error).message}`);
    }
  }
  return fromEnv ? { key: fromEnv, keySource: 'env', keyFile: undefined, keySetting: name } : undefined;
}

/** Which proxy, if any, the usual *_PROXY / NO_PROXY conventions pick for `target`. */
export function proxyFor(target: URL, vars: { https: string; http: string; noProxy: string }): URL | null {
  const chosen = target.protocol === 'https:' ? vars.https : vars.http;
  if (!chosen) return null;
  const port = target.port || (target.protocol === 'https:' ? '443' : '80');
  const host = target.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  for (const raw of vars.noProxy.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return null;
    const [name = '', entryPort] = entry.replace(/^\[|\]$/g, '').split(/:(?=\d+$)/);
    if (entryPort && entryPort !== port) continue;
    const bare = name.replace(/^\*?\./, '');
    if (host === bare || host.endsWith(`.${bare}`)) return null;
  }
  return new URL(chosen);
}
