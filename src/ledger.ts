import { createWriteStream, type WriteStream } from 'node:fs';
import { ProxyError } from './errors.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { NO_TOKENS, type Reading, type Tokens } from './usage.js';

/** How many model names get their own label (and /usage entry) before the rest are `other`. */
export const MAX_MODEL_LABELS = 50;
const OTHER_MODEL = 'other';
const TOKEN_TYPES = ['input', 'cached_input', 'output', 'reasoning'] as const;

export type Transport = 'http' | 'sse' | 'websocket';

export interface LedgerOptions {
  maxTokens: number | null;
  maxRequests: number | null;
  usageLogFile: string | undefined;
  metrics: Metrics;
  logger: Logger;
}

export interface UsageSnapshot {
  since: string;
  requests: number;
  tokens: Tokens;
  models: Record<string, { responses: number; tokens: Tokens }>;
  unknown: number;
  budget: { maxTokens: number | null; maxRequests: number | null; usedTokens: number; usedRequests: number; exhausted: boolean };
}

const add = (into: Tokens, t: Tokens): void => {
  into.input += t.input;
  into.cached_input += t.cached_input;
  into.output += t.output;
  into.reasoning += t.reasoning;
  into.total += t.total;
};

/**
 * What the agent has spent, for the sidecar's life: requests as MAX_REQUESTS
 * counts them, tokens per model as the upstream reported them, responses whose
 * usage could not be read. The one place budgets are decided; readers of
 * responses report here, and never the other way round.
 */
export class Ledger {
  readonly since = new Date();
  #requests = 0;
  #unknown = 0;
  #tokens: Tokens = { ...NO_TOKENS };
  #models = new Map<string, { responses: number; tokens: Tokens }>();
  #log: WriteStream | undefined;

  constructor(private readonly opts: LedgerOptions) {
    if (opts.usageLogFile) {
      this.#log = createWriteStream(opts.usageLogFile, { flags: 'a' });
      // Checked writable at start; a later failure (disk full) must not take the proxy down.
      this.#log.on('error', (err) => opts.logger.error({ err: err.message }, 'the usage log cannot be written'));
    }
  }

  get exhausted(): boolean {
    const { maxTokens, maxRequests } = this.opts;
    return (maxTokens !== null && this.#tokens.total >= maxTokens) || (maxRequests !== null && this.#requests >= maxRequests);
  }

  /**
   * The budget gate, for a request about to go upstream: refused once spent;
   * otherwise counted when `counts` (what MAX_REQUESTS counts). Synchronous, so
   * concurrent callers cannot both take the last request.
   */
  admit(counts: boolean): void {
    if (this.exhausted) {
      const { maxTokens, maxRequests } = this.opts;
      const which =
        maxRequests !== null && this.#requests >= maxRequests
          ? `its request budget (MAX_REQUESTS=${maxRequests}) is spent`
          : `its token budget (MAX_TOKENS=${maxTokens}) is spent: ${this.#tokens.total} tokens used`;
      throw new ProxyError('budget_exceeded', `This sandbox's model budget is exhausted: ${which}. Nothing more is sent upstream.`);
    }
    if (counts) this.#requests++;
  }

  /** One model response, counted: its tokens (or that they are unknown), the metrics and the usage log. */
  record(reqId: string, transport: Transport, reading: Reading): void {
    const label = this.#label(reading.model);
    const entry = this.#models.get(label) ?? { responses: 0, tokens: { ...NO_TOKENS } };
    this.#models.set(label, entry);
    entry.responses++;
    const { tokens } = reading;
    if (tokens) {
      add(this.#tokens, tokens);
      add(entry.tokens, tokens);
      for (const type of TOKEN_TYPES) if (tokens[type] > 0) this.opts.metrics.tokens.inc({ model: label, type }, tokens[type]);
    } else {
      this.#unknown++;
      this.opts.metrics.usageUnknown.inc();
    }
    this.#log?.write(
      `${JSON.stringify({
        time: new Date().toISOString(),
        reqId,
        transport,
        model: label,
        input: tokens?.input ?? null,
        cached_input: tokens?.cached_input ?? null,
        output: tokens?.output ?? null,
        reasoning: tokens?.reasoning ?? null,
        total: tokens?.total ?? null,
        status: tokens ? reading.status : 'unknown',
      })}\n`,
    );
  }

  /** A bounded label: the first MAX_MODEL_LABELS names as they are, then `other`. */
  #label(model: string): string {
    return this.#models.has(model) || this.#models.size < MAX_MODEL_LABELS ? model : OTHER_MODEL;
  }

  snapshot(): UsageSnapshot {
    const { maxTokens, maxRequests } = this.opts;
    return {
      since: this.since.toISOString(),
      requests: this.#requests,
      tokens: { ...this.#tokens },
      models: Object.fromEntries([...this.#models].map(([m, e]) => [m, { responses: e.responses, tokens: { ...e.tokens } }])),
      unknown: this.#unknown,
      budget: { maxTokens, maxRequests, usedTokens: this.#tokens.total, usedRequests: this.#requests, exhausted: this.exhausted },
    };
  }

  /** Flushes the usage log. */
  close(): Promise<void> {
    const log = this.#log;
    return log ? new Promise((resolve) => log.end(resolve)) : Promise.resolve();
  }
}
