import type { ErrorShape } from '../core/errors.js';
import type { Family } from '../policy/routes.js';
import type { UsageReader } from '../usage/usage.js';

/** The providers this sidecar serves, each on its own port; a bounded label everywhere usage shows. */
export type ProviderName = 'openai' | 'anthropic' | 'gemini' | 'azure';

/**
 * Everything that differs between one model API and another, as data: where
 * it listens and forwards, how its key travels, its routes, how its answers
 * report usage, how its clients read a refusal. The data path has no branch
 * on a provider's name.
 */
export interface Provider {
  readonly name: ProviderName;
  /** Its settings' names: key (and key + `_FILE`), port, upstream origin, and a base-path setting when it has one. */
  readonly settings: { readonly key: string; readonly port: string; readonly upstream: string; readonly basePath?: string };
  /** `upstream` undefined: the setting is required with the key (Azure's endpoint is the customer's own). */
  readonly defaults: { readonly port: number; readonly upstream: string | undefined; readonly basePath: string };
  /** Its route table, checked in order. */
  readonly families: readonly Family[];
  /** The families a guarded sidecar forwards when ALLOWED_ROUTES is unset: the counted ones and their reads. */
  readonly guardedRoutes: readonly string[];
  /** The header pairs that carry the key upstream, given the caller's raw headers (already stripped of credentials). */
  credential(key: string, rawHeaders: readonly string[]): string[];
  /** OPENAI_ORGANIZATION / OPENAI_PROJECT apply to it. */
  readonly billingHeaders?: boolean;
  readonly usage: UsageReader;
  readonly errors: ErrorShape;
}
