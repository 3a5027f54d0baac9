import { mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { claudeEnv } from '../src/cli/agent-config.js';

/** Claude Code's native binary, from the platform package npm installs beside @anthropic-ai/claude-code. */
export const CLAUDE_BIN = join(dirname(createRequire(import.meta.url).resolve('@anthropic-ai/claude-code-linux-x64/package.json')), 'claude');

/**
 * The product's settings (`api-proxy agent-config claude`) plus a fresh, empty
 * HOME, and `extra` (ANTHROPIC_CUSTOM_HEADERS, say): what a sandbox gives it.
 */
export function claudeEnvForTest(baseUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? '', HOME: mkdtempSync(join(tmpdir(), 'claude-home-')), ...claudeEnv(baseUrl), ...extra };
}
