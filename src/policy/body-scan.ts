import { jsonParser, type Token } from 'stream-json/core/parser.js';
import { getManyValues, isMany, none } from 'stream-chain/defs.js';

/** An `mcp`-relevant view of one entry of a `tools` array: only the fields ToolPolicy reads. */
export interface ToolFields {
  type?: unknown;
  server_url?: unknown;
  connector_id?: unknown;
  /** One of those keys came twice: servers differ on which wins, so ToolPolicy refuses it. */
  duplicated?: true;
}

/**
 * What admission needs from a JSON request body or WebSocket message: every
 * occurrence of each field (servers differ on which duplicate key wins, so all
 * are checked). Found token by token: no value is assembled but these, each
 * capped, so a body that decodes to MAX_BODY_BYTES holds little beyond itself.
 */
export interface Scan {
  models: unknown[];
  tools: ToolFields[];
  types: unknown[];
  generate: unknown[];
  background: unknown[];
  /** The largest output limit the request sets (`max_output_tokens`, `max_completion_tokens`, `max_tokens`, Gemini's `generationConfig.maxOutputTokens`), or null. */
  maxOutput: number | null;
  /** Decoded bytes read. */
  bytes: number;
}

type Field = 'models' | 'types' | 'generate' | 'background' | 'max';

// The Responses WebSocket puts a turn's fields at the top level; older shapes under `response`.
// Maps, not object literals: a body's key (`constructor`, `__proto__`) must find nothing it did not put there.
const FIELDS = new Map<string, Field>([
  ['model', 'models'],
  ['response.model', 'models'],
  ['type', 'types'],
  ['generate', 'generate'],
  ['background', 'background'],
  ['response.background', 'background'],
  ['max_output_tokens', 'max'],
  ['max_completion_tokens', 'max'],
  ['max_tokens', 'max'],
  ['response.max_output_tokens', 'max'],
  // Gemini's output limit sits in its generation settings.
  ['generationConfig.maxOutputTokens', 'max'],
]);
/** Where tool-like entries sit: which of their keys are read, as which ToolFields, and a type they have by being there. */
interface ToolEntry {
  keys: ReadonlyMap<string, 'type' | 'server_url' | 'connector_id'>;
  type?: string;
}
const TOOL: ToolEntry = { keys: new Map([['type', 'type'], ['server_url', 'server_url'], ['connector_id', 'connector_id']]) };
const TOOL_ENTRIES = new Map<string, ToolEntry>([
  ['tools.*', TOOL],
  ['response.tools.*', TOOL],
  // Anthropic's MCP connector: each entry's `url` is a server the upstream connects to.
  ['mcp_servers.*', { keys: new Map([['url', 'server_url']]), type: 'mcp' }],
]);
/** No field of interest lies deeper than `response.tools.*.server_url`. */
const MAX_DEPTH = 4;
/** A kept string's cap: longer than any name or URL a policy admits, so a cut one still fails. */
const KEEP_CHARS = 2048;
/** What a non-string value stands as, where a string was expected: it matches nothing. */
const NOT_A_STRING = Symbol('not a string');

/** Why a body could not be read strictly. */
export class ScanError extends Error {
  override name = 'ScanError';

  /** `undecodable`: the body did not decode (an unknown or broken encoding, or past the limit once decoded), not merely non-strict JSON. */
  constructor(
    message: string,
    readonly undecodable = false,
  ) {
    super(message);
  }
}

interface Level {
  array: boolean;
  key: string;
}

/**
 * Reads one JSON object in strict UTF-8 (no byte-order mark, no NaN, nothing
 * after it), fed in any cuts; `end()` gives what it found or throws ScanError.
 * stream-json's tokenizer is used with strings unpacked: @streamparser/json
 * assembled every string whole, which put a 64 MiB body at 204 MiB peak.
 */
export class BodyScanner {
  readonly #decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  readonly #parse = jsonParser({ packKeys: true, streamKeys: false, packStrings: false, streamStrings: true, packNumbers: true, streamNumbers: false });
  readonly #scan: Scan = { models: [], tools: [], types: [], generate: [], background: [], maxOutput: null, bytes: 0 };
  readonly #levels: Level[] = [];
  #tokens = 0;
  #error: ScanError | null = null;
  #done = false;
  /** The field the string being read goes to, and what of it is kept. */
  #string: { put: (v: unknown) => void; text: string } | null = null;
  #tool: ToolFields | null = null;
  #toolKeys: ToolEntry['keys'] = new Map();
  /** The nesting depth of the tool object being read: its fields are one key inside. */
  #toolDepth = Infinity;

  constructor(private readonly maxBytes: number) {}

  /** True once the body is known not to be readable strictly: nothing more need be fed. */
  get failed(): boolean {
    return this.#error !== null;
  }

  write(chunk: Uint8Array): void {
    if (this.#error) return;
    if ((this.#scan.bytes += chunk.length) > this.maxBytes) {
      this.#error = new ScanError(`over ${this.maxBytes} bytes once decoded`, true);
      return;
    }
    let text: string;
    try {
      text = this.#decoder.decode(chunk, { stream: true });
    } catch {
      this.#error = new ScanError('not UTF-8');
      return;
    }
    if (text.length > 0) this.#feed(text);
  }

  end(): Scan {
    if (!this.#error) {
      try {
        const rest = this.#decoder.decode();
        if (rest) this.#feed(rest);
      } catch {
        this.#error = new ScanError('not UTF-8');
      }
    }
    if (!this.#error) this.#feed(none);
    if (!this.#error && !this.#done) this.#error = new ScanError(this.#tokens === 0 ? 'empty' : 'not strict JSON: cut short');
    if (this.#error) throw this.#error;
    return this.#scan;
  }

  #feed(input: string | typeof none): void {
    let out;
    try {
      out = this.#parse(input as string);
    } catch (err) {
      this.#error = new ScanError(`not strict JSON: ${(err as Error).message.slice(0, 80)}`);
      return;
    }
    if (out === none) return;
    const tokens = isMany(out) ? (getManyValues(out) as Token[]) : [out as Token];
    for (const token of tokens) {
      this.#token(token);
      if (this.#error) return;
    }
  }

  /** Where a value starting now sits: `response.tools.*`, or null when deeper than any field. */
  #path(): string | null {
    const levels = this.#levels;
    if (levels.length > MAX_DEPTH) return null;
    let path = '';
    for (let i = 0; i < levels.length; i++) {
      const part = levels[i]!.array ? '*' : levels[i]!.key;
      path = i === 0 ? part : `${path}.${part}`;
    }
    return path;
  }

  /** Where a value at `path` goes, if anywhere. */
  #sink(path: string | null): ((v: unknown) => void) | null {
    if (path === null) return null;
    const field = FIELDS.get(path);
    if (field === 'max') {
      return (v) => {
        if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) this.#scan.maxOutput = Math.max(this.#scan.maxOutput ?? 0, v);
      };
    }
    if (field) return (v) => this.#scan[field].push(v);
    // A field of the tool being read: directly inside its object.
    const tool = this.#tool;
    const key = tool && this.#levels.length === this.#toolDepth ? this.#toolKeys.get(this.#levels[this.#levels.length - 1]!.key) : undefined;
    if (!tool || !key) return null;
    return (v) => {
      if (tool[key] !== undefined) tool.duplicated = true;
      tool[key] = v;
    };
  }

  #token(token: Token): void {
    if (this.#done) {
      this.#error = new ScanError('not strict JSON: more after the object');
      return;
    }
    if (this.#tokens++ === 0 && token.name !== 'startObject') {
      this.#error = new ScanError('not a JSON object');
      return;
    }
    switch (token.name) {
      case 'startObject':
      case 'startArray': {
        const path = this.#path();
        this.#sink(path)?.(NOT_A_STRING);
        this.#levels.push({ array: token.name === 'startArray', key: '' });
        const entry = token.name === 'startObject' && path !== null ? TOOL_ENTRIES.get(path) : undefined;
        if (entry) {
          this.#tool = entry.type ? { type: entry.type } : {};
          this.#toolKeys = entry.keys;
          this.#toolDepth = this.#levels.length;
          this.#scan.tools.push(this.#tool);
        }
        return;
      }
      case 'endObject':
      case 'endArray':
        this.#levels.pop();
        if (this.#levels.length < this.#toolDepth) this.#tool = null;
        if (this.#levels.length === 0) this.#done = true;
        return;
      case 'keyValue':
        this.#levels[this.#levels.length - 1]!.key = token.value;
        return;
      case 'startString': {
        const put = this.#sink(this.#path());
        this.#string = put ? { put, text: '' } : null;
        return;
      }
      case 'stringChunk':
        if (this.#string && this.#string.text.length <= KEEP_CHARS) this.#string.text += token.value.slice(0, KEEP_CHARS + 1 - this.#string.text.length);
        return;
      case 'endString':
        this.#string?.put(this.#string.text);
        this.#string = null;
        return;
      case 'numberValue':
        this.#sink(this.#path())?.(Number(token.value));
        return;
      case 'trueValue':
      case 'falseValue':
      case 'nullValue':
        this.#sink(this.#path())?.(token.value);
        return;
      default:
        return;
    }
  }
}

/** Scans a whole buffer (a WebSocket message): what it found, or the ScanError. */
export function scanMessage(data: Buffer, maxBytes: number): Scan {
  const scanner = new BodyScanner(maxBytes);
  for (let at = 0; at < data.length; at += SLICE) scanner.write(data.subarray(at, at + SLICE));
  return scanner.end();
}

/** Decoded text is handed to the tokenizer in slices, so no one string is the whole body. */
export const SLICE = 64 * 1024;
