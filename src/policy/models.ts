import { ProxyError } from '../errors.js';

/**
 * ALLOWED_MODELS: names and `*` globs, matched against the top-level `model` of
 * a JSON request body or a WebSocket `response.create`. Case-sensitive, whole
 * name: `gpt-5*` admits gpt-5.5 and gpt-5-mini, not GPT-5 or o4-mini.
 */
export class ModelPolicy {
  readonly #pattern: RegExp;

  constructor(readonly allowed: readonly string[]) {
    const alternatives = allowed.map((p) => p.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*'));
    this.#pattern = new RegExp(`^(?:${alternatives.join('|')})$`);
  }

  /**
   * Throws model_not_allowed when `body` names a model outside the list. A body
   * with no `model` passes; one whose `model` is not a string is refused (fail closed).
   */
  check(body: unknown): void {
    if (typeof body !== 'object' || body === null || !('model' in body)) return;
    const model = (body as { model: unknown }).model;
    if (typeof model === 'string' && this.#pattern.test(model)) return;
    const shown = typeof model === 'string' ? JSON.stringify(model.slice(0, 128)) : 'a model that is not a string';
    throw new ProxyError('model_not_allowed', `This sandbox does not allow ${shown}; allowed: ${this.allowed.join(', ')}.`);
  }

  /** The refusal for a body that names its model in a way the sidecar cannot read (an undecodable encoding). */
  static unreadable(): ProxyError {
    return new ProxyError('model_not_allowed', 'The request body could not be decoded to check its model, so it was refused.');
  }
}
