import { ProxyError } from '../errors.js';

/**
 * ALLOWED_MODELS: names and `*` globs, matched against the top-level `model` of
 * a JSON request body or a WebSocket `response.create`. Case-sensitive, whole
 * name: `gpt-5*` admits gpt-5.5 and gpt-5-mini, not GPT-5 or o4-mini.
 */
/** Longer names, or names with anything but printable ASCII, never match: no upstream model is named so. */
const MATCHABLE = /^[\x21-\x7e]{1,256}$/;

/**
 * One glob: its literal parts between `*`s. Matching takes the first part as a
 * prefix, the last as a suffix, and each middle part at its leftmost place
 * after the one before (leftmost is always right when `*` is the only
 * wildcard): one pass over the name, no backtracking, whatever the pattern.
 */
function globMatcher(glob: string): (name: string) => boolean {
  const parts = glob.split('*');
  if (parts.length === 1) return (name) => name === glob;
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  const middle = parts.slice(1, -1).filter((p) => p !== '');
  return (name) => {
    if (name.length < first.length + last.length || !name.startsWith(first) || !name.endsWith(last)) return false;
    let at = first.length;
    const end = name.length - last.length;
    for (const part of middle) {
      const found = name.indexOf(part, at);
      if (found === -1 || found + part.length > end) return false;
      at = found + part.length;
    }
    return true;
  };
}

export class ModelPolicy {
  readonly #matchers: ((name: string) => boolean)[];

  constructor(readonly allowed: readonly string[]) {
    this.#matchers = allowed.map(globMatcher);
  }

  /** True when `name` may be used: a matchable name that one of the globs matches. */
  allows(name: string): boolean {
    return MATCHABLE.test(name) && this.#matchers.some((m) => m(name));
  }

  /**
   * Throws model_not_allowed when `body` names a model outside the list. A body
   * with no `model` passes; one whose `model` is not a string is refused (fail closed).
   */
  check(body: unknown): void {
    if (typeof body !== 'object' || body === null || !('model' in body)) return;
    const model = (body as { model: unknown }).model;
    if (typeof model === 'string' && this.allows(model)) return;
    const shown = typeof model === 'string' ? JSON.stringify(model.slice(0, 128)) : 'a model that is not a string';
    throw new ProxyError('model_not_allowed', `This sandbox does not allow ${shown}; allowed: ${this.allowed.join(', ')}.`);
  }

  /** The refusal for a body that names its model in a way the sidecar cannot read (an undecodable encoding). */
  static unreadable(): ProxyError {
    return new ProxyError('model_not_allowed', 'The request body could not be decoded to check its model, so it was refused.');
  }
}
