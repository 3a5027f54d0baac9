import { anthropic } from './anthropic.js';
import { azure } from './azure.js';
import { gemini } from './gemini.js';
import { openai } from './openai.js';
import type { Provider } from './provider.js';

export type { Provider, ProviderName } from './provider.js';

/** Every provider the sidecar knows, in the order their settings are checked and their ports listed. */
export const PROVIDERS: readonly Provider[] = [openai, anthropic, gemini, azure];

/**
 * The port of the first provider whose key (or key file) is set, as the
 * sidecar would read it: where a probe or `api-proxy usage` finds the
 * process, whose reserved paths answer on every port.
 */
export function firstServedPort(env: Record<string, string | undefined>): number {
  const served = PROVIDERS.find(({ settings }) => env[settings.key]?.trim() || env[`${settings.key}_FILE`]?.trim()) ?? PROVIDERS[0]!;
  return Number(env[served.settings.port] || served.defaults.port);
}
