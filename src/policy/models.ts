import { ProxyError } from '../core/errors.js';

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
   * Throws model_not_allowed unless every model named is allowed: `models` holds
   * each `model` value a body or query gives (servers differ on which duplicate
   * wins). A value that is not a string is refused (fail closed).
   */
  checkAll(models: readonly unknown[]): void {
    for (const model of models) {
      if (typeof model === 'string' && this.allows(model)) continue;
      const shown = typeof model === 'string' ? JSON.stringify(model.slice(0, 128)) : 'a model that is not a string';
      throw new ProxyError('model_not_allowed', `This sandbox does not allow ${shown}; allowed: ${this.allowed.join(', ')}.`);
    }
  }

  /** The same for a parsed message (a WebSocket `response.create`): its top-level `model`, if any. */
  check(body: unknown): void {
    if (typeof body === 'object' && body !== null && 'model' in body) this.checkAll([(body as { model: unknown }).model]);
  }

  /** The refusal for a body whose model the sidecar cannot read strictly. */
  static unreadable(why = 'the body could not be decoded'): ProxyError {
    return new ProxyError('model_not_allowed', `The request's model cannot be checked (${why}), so it was refused.`);
  }
}
