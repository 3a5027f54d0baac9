import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The Gemini CLI's bundle from @google/gemini-cli (it runs on node). */
export const GEMINI_CLI_JS = createRequire(import.meta.url).resolve('@google/gemini-cli/bundle/gemini.js');

/**
 * What the Gemini CLI needs headless (CLIENTS.md): a placeholder key, an
 * empty HOME whose settings pick API-key auth, a trusted workspace, and the
 * sidecar as its base URL.
 */
export function geminiEnvForTest(baseUrl: string): Record<string, string> {
  const home = mkdtempSync(join(tmpdir(), 'gemini-home-'));
  mkdirSync(join(home, '.gemini'));
  writeFileSync(join(home, '.gemini', 'settings.json'), JSON.stringify({ security: { auth: { selectedType: 'gemini-api-key' } } }));
  return { PATH: process.env.PATH ?? '', HOME: home, GEMINI_API_KEY: 'agent-placeholder-key', GEMINI_CLI_TRUST_WORKSPACE: 'true', GOOGLE_GEMINI_BASE_URL: baseUrl };
}
