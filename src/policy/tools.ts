import { ProxyError } from '../core/errors.js';

/** The ALLOWED_MCP_SERVERS entry that admits an `mcp` tool naming a connector instead of a URL. */
const CONNECTORS = 'connectors';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Hosted `mcp` tools (OpenAI's `tools`, Anthropic's `mcp_servers`) make the
 * upstream connect to a server on the agent's behalf, around Squid: each must
 * name a host in ALLOWED_MCP_SERVERS (exact,
 * case-insensitive, any port; `.example.com` admits it and its subdomains), or
 * a connector when the list holds `connectors`.
 */
export class ToolPolicy {
  readonly #exact = new Set<string>();
  readonly #suffixes: string[] = [];
  readonly #connectors: boolean;

  constructor(allowed: readonly string[]) {
    for (const entry of allowed.map((e) => e.toLowerCase())) {
      if (entry.startsWith('.')) this.#suffixes.push(entry);
      else this.#exact.add(entry);
    }
    this.#connectors = this.#exact.has(CONNECTORS);
  }

  #hostAllowed(host: string): boolean {
    return this.#exact.has(host) || this.#suffixes.some((s) => host.endsWith(s) || host === s.slice(1));
  }

  /** Throws tool_not_allowed for the first `mcp` tool the list does not admit. */
  check(tools: readonly unknown[]): void {
    for (const tool of tools) {
      // Which duplicate an upstream acts on is its own choice: a tool that could be read two ways is refused.
      if (isObj(tool) && tool.duplicated === true) throw refusal('a tool that names its type, server_url or connector_id twice');
      if (!isObj(tool) || typeof tool.type !== 'string' || tool.type.toLowerCase() !== 'mcp') continue;
      if (tool.server_url !== undefined) {
        let host: string;
        try {
          host = new URL(String(tool.server_url)).hostname.toLowerCase().replace(/^\[|\]$/g, '');
        } catch {
          throw refusal('an mcp tool whose server_url is not a URL');
        }
        if (!this.#hostAllowed(host)) throw refusal(`the mcp server ${JSON.stringify(host.slice(0, 64))}`);
      }
      // Either may be what the upstream acts on: each that is there must pass.
      if (tool.connector_id !== undefined && !this.#connectors) throw refusal('an mcp connector');
      if (tool.server_url === undefined && tool.connector_id === undefined) throw refusal('an mcp tool that names no server');
    }
  }
}

const refusal = (what: string): ProxyError =>
  new ProxyError('tool_not_allowed', `This sandbox does not allow ${what} (ALLOWED_MCP_SERVERS): the upstream would reach it around the egress proxy.`);
