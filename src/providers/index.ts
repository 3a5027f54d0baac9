import { anthropic } from './anthropic.js';
import { openai } from './openai.js';
import type { Provider } from './provider.js';

export type { Provider, ProviderName } from './provider.js';

/** Every provider the sidecar knows, in the order their settings are checked and their ports listed. */
export const PROVIDERS: readonly Provider[] = [openai, anthropic];
