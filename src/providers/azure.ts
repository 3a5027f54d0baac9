import type { Family } from '../policy/routes.js';
import { OPENAI_FAMILIES, openai } from './openai.js';
import type { Provider } from './provider.js';

/**
 * OpenAI's families as Azure serves them, paths as sent: the v1 API
 * (`/openai/v1/…`, the model in the body), a deployment's
 * (`/openai/deployments/{deployment}/…`, the deployment is the model), and the
 * dated API (`/openai/…?api-version=`). Each keeps OpenAI's shapes and flags.
 */
const under = (prefix: string[], modelSegment?: number): Family[] =>
  OPENAI_FAMILIES.map((f) => ({ ...f, prefix: [...prefix, ...f.prefix], label: `${prefix.join('/')}/${f.label ?? f.prefix.join('/')}`, modelSegment }));

const FAMILIES: readonly Family[] = [...under(['openai', 'v1']), ...under(['openai', 'deployments', '*'], 2), ...under(['openai'])];

/** Azure OpenAI: OpenAI's API on the customer's endpoint, its key as `api-key`. */
export const azure: Provider = {
  ...openai,
  name: 'azure',
  settings: { key: 'AZURE_OPENAI_API_KEY', port: 'AZURE_OPENAI_PORT', upstream: 'AZURE_OPENAI_ENDPOINT' },
  defaults: { port: 10005, upstream: undefined, basePath: '' },
  families: FAMILIES,
  credential: (key) => ['api-key', key],
  billingHeaders: false,
};
