import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The Codex CLI's launcher from the @openai/codex package (it starts the native binary). */
export const CODEX_JS = createRequire(import.meta.url).resolve('@openai/codex/bin/codex.js');

/**
 * A config.toml that points Codex at the sidecar with no key of its own
 * (see shared CLIENTS.md): a custom provider, since Codex ignores OPENAI_BASE_URL.
 */
export function codexConfig(baseUrl: string, websockets: boolean): string {
  return `model = "gpt-5.5"
model_provider = "sidecar"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
shell_snapshot = false
unbounded_connection_retries = false

[model_providers.sidecar]
name = "sidecar"
base_url = "${baseUrl}"
wire_api = "responses"
supports_websockets = ${websockets}
request_max_retries = 0
stream_max_retries = 0
`;
}

/** A fresh CODEX_HOME holding that config. */
export function codexHome(baseUrl: string, websockets: boolean): string {
  const home = mkdtempSync(join(tmpdir(), 'codex-home-'));
  writeFileSync(join(home, 'config.toml'), codexConfig(baseUrl, websockets));
  return home;
}

/** The agent's final answer from `codex exec --json` output. */
export function agentMessage(jsonl: string): string | undefined {
  for (const line of jsonl.split('\n')) {
    if (!line.startsWith('{')) continue;
    const event = JSON.parse(line) as { type?: string; item?: { type?: string; text?: string } };
    if (event.type === 'item.completed' && event.item?.type === 'agent_message') return event.item.text;
  }
  return undefined;
}
