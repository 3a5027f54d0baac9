import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

export type KeySource = 'env' | 'file';

// Values people leave in templates and examples; sent upstream they only earn a 401.
// A provider's prefix (`sk-`, `sk-ant-`) may come first; "placeholder" anywhere (`sk-ant-api-proxy-placeholder`, what
// `agent-config claude` gives agents) is never a real key.
const PLACEHOLDER =
  /^(sk-([a-z0-9]+-)*)?(placeholder.*|your[-_]?([a-z]+[-_]?)?(api[-_]?)?key.*|x{4,}.*|\*+|changeme|change[-_]me|replace[-_]?me|dummy.*|none|null|undefined|<.*>|\$\{.*\}|\$[a-z_]+)$|placeholder/i;
// Any whitespace or control character inside a key corrupts the header.
// eslint-disable-next-line no-control-regex
const BAD_CHARS = /[\s\x00-\x1f\x7f]/;

/** Trims a key and returns it, or throws a reason that never contains the value. */
export function parseKey(raw: string): string {
  const key = raw.trim();
  if (key === '') throw new Error('is empty');
  if (BAD_CHARS.test(key)) throw new Error('contains whitespace or control characters');
  if (PLACEHOLDER.test(key)) throw new Error('is a placeholder, not a real key');
  return key;
}

export function readKeyFile(path: string): string {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseKey(raw);
}

/** First 8 hex of the key's SHA-256: enough to tell keys apart, useless to an attacker. */
export function fingerprint(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

export interface KeyReloadResult {
  changed: boolean;
  error?: string;
}

/**
 * Holds the live key. A file-backed key is re-read on demand (SIGHUP) and when the
 * file changes; a bad new key keeps the old one.
 */
export class KeyStore {
  #key: string;
  #fingerprint: string;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  readonly source: KeySource;
  readonly file: string | undefined;

  /** `setting` names the key's variable in what reload reports (`ANTHROPIC_API_KEY_FILE …`). */
  constructor(key: string, source: KeySource, file?: string, readonly setting = 'OPENAI_API_KEY_FILE') {
    this.#key = key;
    this.#fingerprint = fingerprint(key);
    this.source = source;
    this.file = file;
  }

  get key(): string {
    return this.#key;
  }

  get fingerprint(): string {
    return this.#fingerprint;
  }

  reload(): KeyReloadResult {
    if (!this.file) return { changed: false };
    let key: string;
    try {
      key = readKeyFile(this.file);
    } catch (err) {
      return { changed: false, error: `${this.setting} ${(err as Error).message}` };
    }
    if (key === this.#key) return { changed: false };
    this.#key = key;
    this.#fingerprint = fingerprint(key);
    return { changed: true };
  }

  /**
   * Watches the file's directory, not the file: Kubernetes swaps secrets by
   * renaming a `..data` symlink, which a watch on the old inode never sees.
   */
  watch(onReload: (result: KeyReloadResult) => void): void {
    if (!this.file || this.#watcher) return;
    const name = basename(this.file);
    this.#watcher = watch(dirname(this.file), (_event, changed) => {
      if (changed !== null && changed !== name && !String(changed).startsWith('..')) return;
      clearTimeout(this.#debounce);
      // Editors and kubelet write in several steps; read once they are done.
      this.#debounce = setTimeout(() => onReload(this.reload()), 50);
    });
    this.#watcher.on('error', () => this.#watcher?.close());
  }

  close(): void {
    clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#watcher = undefined;
  }
}
