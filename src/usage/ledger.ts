import { createWriteStream, type WriteStream } from 'node:fs';
import { ProxyError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Metrics } from '../core/metrics.js';
import { NO_TOKENS, type Reading, type Tokens } from './usage.js';

/** How many model names get their own label (and /usage entry) before the rest are `other`. */
export const MAX_MODEL_LABELS = 50;
export const OTHER_MODEL = 'other';
/** What the agent names and others read (dashboards, the job summary): plain, short names only; the rest is `other`. */
export const DISPLAYABLE_MODEL = /^[A-Za-z0-9._:/-]{1,64}$/;
const TOKEN_TYPES = ['input', 'cached_input', 'cache_write', 'output', 'reasoning'] as const;

export type Transport = 'http' | 'sse' | 'websocket';

export interface LedgerOptions {
  /** The providers served, each with its own line in the snapshot from the start. */
  providers: readonly string[];
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
  /** What each provider's upstream reported. */
  providers: Record<string, Counted>;
  /** Keyed by model, or `provider:model` for a non-OpenAI provider's model that another provider reported too. */
  models: Record<string, Counted & { provider: string }>;
  unknown: number;
  budget: { maxTokens: number | null; maxRequests: number | null; usedTokens: number; usedRequests: number; exhausted: boolean };
}

export interface Counted {
  responses: number;
  tokens: Tokens;
}

const counted = (): Counted => ({ responses: 0, tokens: { ...NO_TOKENS } });
const copy = (c: Counted): Counted => ({ responses: c.responses, tokens: { ...c.tokens } });

const add = (into: Tokens, t: Tokens): void => {
  into.input += t.input;
  into.cached_input += t.cached_input;
  into.cache_write += t.cache_write;
  into.output += t.output;
  into.reasoning += t.reasoning;
  into.total += t.total;
};

/**
 * A model call's hold on the token budget while it runs: its estimate counts
 * against the calls admitted after it, until its usage replaces it. A call
 * whose usage cannot be read is charged the estimate, never zero.
 */
export class Reservation {
  #done = false;

  constructor(
    private readonly ledger: Ledger,
    readonly reqId: string,
    readonly estimate: number,
    readonly provider: string,
  ) {}

  /** Settles to what the answer reported; a reading without tokens is charged the estimate. */
  record(transport: Transport, reading: Reading): void {
    if (this.#done) return;
    this.#done = true;
    this.ledger.settle(this, transport, reading);
  }

  /** The upstream refused the call before doing any work: nothing is charged. */
  release(): void {
    if (this.#done) return;
    this.#done = true;
    this.ledger.settle(this, null, null);
  }
}

/**
 * What the agent has spent, for the sidecar's life: requests as MAX_REQUESTS
 * counts them, tokens per model as the upstream reported them, responses whose
 * usage could not be read, and the reservations of the calls in flight. The one
 * place budgets are decided; readers of responses report here, and never the
 * other way round.
 */
export class Ledger {
  readonly since = new Date();
  #requests = 0;
  #unknown = 0;
  #tokens: Tokens = { ...NO_TOKENS };
  /** Tokens charged for calls whose usage could not be read: their reservations. */
  #charged = 0;
  /** The sum of the reservations in flight. */
  #reserved = 0;
  /** Keyed by provider and model label. */
  #models = new Map<string, Counted & { provider: string; model: string }>();
  #providers: Map<string, Counted>;
  #log: WriteStream | undefined;

  constructor(private readonly opts: LedgerOptions) {
    this.#providers = new Map(opts.providers.map((p) => [p, counted()]));
    if (opts.usageLogFile) {
      this.#log = createWriteStream(opts.usageLogFile, { flags: 'a' });
      // Checked writable at start; a later failure (disk full) must not take the proxy down.
      this.#log.on('error', (err) => opts.logger.error({ err: err.message }, 'the usage log cannot be written'));
    }
  }

  /** Tokens the budget has spent: what was reported, plus what unreadable calls were charged. */
  get usedTokens(): number {
    return this.#tokens.total + this.#charged;
  }

  get exhausted(): boolean {
    const { maxTokens, maxRequests } = this.opts;
    return (maxTokens !== null && this.usedTokens >= maxTokens) || (maxRequests !== null && this.#requests >= maxRequests);
  }

  #spent(): ProxyError {
    const { maxTokens, maxRequests } = this.opts;
    const which =
      maxRequests !== null && this.#requests >= maxRequests
        ? `its request budget (MAX_REQUESTS=${maxRequests}) is spent`
        : `its token budget (MAX_TOKENS=${maxTokens}) is spent: ${this.usedTokens} tokens used`;
    return new ProxyError('budget_exceeded', `This sandbox's model budget is exhausted: ${which}. Nothing more is sent upstream.`);
  }

  /**
   * The budget gate for a request that is no model call: refused once spent;
   * otherwise counted when `counts` (what MAX_REQUESTS counts).
   */
  admit(counts: boolean): void {
    if (this.exhausted) throw this.#spent();
    if (counts) this.#requests++;
  }

  /**
   * The budget gate for a model call estimated at `estimate` tokens. It is
   * admitted while the tokens used plus the reservations in flight are under
   * MAX_TOKENS (its own counts only against the calls after it), so however many
   * arrive at once the budget is passed by at most one call's usage plus what
   * calls reported beyond their estimates. One that does not fit is refused at
   * once (429, final), never queued. Synchronous, so concurrent calls cannot
   * both take the last room.
   */
  reserve(reqId: string, estimate: number, counts: boolean, provider: string): Reservation {
    const { maxTokens } = this.opts;
    if (this.exhausted) throw this.#spent();
    if (maxTokens !== null && this.usedTokens + this.#reserved >= maxTokens) {
      throw new ProxyError(
        'budget_exceeded',
        `This sandbox's token budget (MAX_TOKENS=${maxTokens}) is held by the calls in flight (${this.#reserved} tokens reserved, ${this.usedTokens} used); this call would pass it. Nothing more is sent upstream.`,
      );
    }
    if (counts) this.#requests++;
    this.#reserved += estimate;
    return new Reservation(this, reqId, estimate, provider);
  }

  /** Called by a Reservation, once: its usage (or its charge) replaces its hold. */
  settle(r: Reservation, transport: Transport | null, reading: Reading | null): void {
    this.#reserved -= r.estimate;
    if (transport && reading) {
      if (!reading.tokens) this.#charged += r.estimate;
      this.record(r.reqId, r.provider, transport, reading);
    }
  }

  /** One model response, counted: its tokens (or that they are unknown), the metrics and the usage log. */
  record(reqId: string, provider: string, transport: Transport, reading: Reading): void {
    const label = this.#label(provider, reading.model);
    const key = `${provider}\0${label}`;
    const entry = this.#models.get(key) ?? { provider, model: label, ...counted() };
    this.#models.set(key, entry);
    const total = this.#providers.get(provider) ?? counted();
    this.#providers.set(provider, total);
    entry.responses++;
    total.responses++;
    const { tokens } = reading;
    if (tokens) {
      add(this.#tokens, tokens);
      add(entry.tokens, tokens);
      add(total.tokens, tokens);
      for (const type of TOKEN_TYPES) if (tokens[type] > 0) this.opts.metrics.tokens.inc({ provider, model: label, type }, tokens[type]);
    } else {
      this.#unknown++;
      this.opts.metrics.usageUnknown.inc();
    }
    this.#log?.write(
      `${JSON.stringify({
        time: new Date().toISOString(),
        reqId,
        provider,
        transport,
        model: label,
        input: tokens?.input ?? null,
        cached_input: tokens?.cached_input ?? null,
        cache_write: tokens?.cache_write ?? null,
        output: tokens?.output ?? null,
        reasoning: tokens?.reasoning ?? null,
        total: tokens?.total ?? null,
        status: tokens ? reading.status : 'unknown',
      })}\n`,
    );
  }

  /** A bounded, inert label: the first MAX_MODEL_LABELS plain names (over every provider) as they are, then `other`. */
  #label(provider: string, model: string): string {
    if (!DISPLAYABLE_MODEL.test(model)) return OTHER_MODEL;
    return this.#models.has(`${provider}\0${model}`) || this.#models.size < MAX_MODEL_LABELS ? model : OTHER_MODEL;
  }

  snapshot(): UsageSnapshot {
    const { maxTokens, maxRequests } = this.opts;
    const reporters = new Map<string, number>();
    for (const e of this.#models.values()) reporters.set(e.model, (reporters.get(e.model) ?? 0) + 1);
    // A name two providers reported is told apart by the provider, OpenAI's keeping the bare name it always had.
    // A name can be the agent's (a call that reported nothing counts under the model it asked for), so one
    // such as `anthropic:claude-x` must not take another entry's key and hide it: no key is given twice.
    const models: UsageSnapshot['models'] = {};
    const entries = [...this.#models.values()].sort((a, b) => Number(b.provider === 'openai') - Number(a.provider === 'openai'));
    for (const e of entries) {
      let key = e.provider !== 'openai' && reporters.get(e.model)! > 1 ? `${e.provider}:${e.model}` : e.model;
      while (Object.hasOwn(models, key)) key = `${e.provider}:${key}`;
      models[key] = { provider: e.provider, ...copy(e) };
    }
    return {
      since: this.since.toISOString(),
      requests: this.#requests,
      tokens: { ...this.#tokens },
      providers: Object.fromEntries([...this.#providers].map(([p, c]) => [p, copy(c)])),
      models,
      unknown: this.#unknown,
      budget: { maxTokens, maxRequests, usedTokens: this.usedTokens, usedRequests: this.#requests, exhausted: this.exhausted },
    };
  }

  /** Flushes the usage log. */
  close(): Promise<void> {
    const log = this.#log;
    return log ? new Promise((resolve) => log.end(resolve)) : Promise.resolve();
  }
}
