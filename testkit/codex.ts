import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CODEX_CONFIG_DEFAULTS, codexConfig } from '../src/cli/codex-config.js';

/** The Codex CLI's launcher from the @openai/codex package (it starts the native binary). */
export const CODEX_JS = createRequire(import.meta.url).resolve('@openai/codex/bin/codex.js');

/**
 * The product's config (`api-proxy codex-config`), made strict for tests: no
 * approvals or sandbox prompts, no shell snapshot, and no retries, so a failure
 * shows at once instead of after Codex's back-off.
 */
export function codexConfigForTest(baseUrl: string, websockets: boolean): string {
  return `approval_policy = "never"
sandbox_mode = "read-only"
${codexConfig({ ...CODEX_CONFIG_DEFAULTS, baseUrl, websockets }).replace('[features]\n', '[features]\nshell_snapshot = false\n')}request_max_retries = 0
stream_max_retries = 0
`;
}

/** A fresh CODEX_HOME holding that config. */
export function codexHome(baseUrl: string, websockets: boolean): string {
  const home = mkdtempSync(join(tmpdir(), 'codex-home-'));
  writeFileSync(join(home, 'config.toml'), codexConfigForTest(baseUrl, websockets));
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
