import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/core/metrics.js';
import { Ledger } from '../../src/usage/ledger.js';
import { NO_TOKENS } from '../../src/usage/usage.js';

const ledger = (): Ledger => new Ledger({ providers: ['openai', 'anthropic'], maxTokens: null, maxRequests: null, usageLogFile: undefined, metrics: createMetrics(() => 0), logger: pino({ level: 'silent' }) });
const tokens = (input: number) => ({ ...NO_TOKENS, input, total: input });

describe('the ledger across providers', () => {
  it('keys a name two providers reported as provider:model (OpenAI keeps the bare name), and every provider has its line from the start', () => {
    const l = ledger();
    expect(l.snapshot().providers).toEqual({ openai: { responses: 0, tokens: NO_TOKENS }, anthropic: { responses: 0, tokens: NO_TOKENS } });
    l.record('a', 'anthropic', 'sse', { model: 'claude-x', status: 'completed', tokens: tokens(5) });
    expect(Object.keys(l.snapshot().models)).toEqual(['claude-x']);
    l.record('b', 'openai', 'http', { model: 'claude-x', status: 'completed', tokens: tokens(7) });
    expect(l.snapshot().models).toEqual({
      'claude-x': { provider: 'openai', responses: 1, tokens: tokens(7) },
      'anthropic:claude-x': { provider: 'anthropic', responses: 1, tokens: tokens(5) },
    });
  });

  it('a name the agent chose (an unreported call counts under the model it asked for) cannot take another entry\'s key and hide it', () => {
    const l = ledger();
    l.record('a', 'anthropic', 'sse', { model: 'claude-x', status: 'completed', tokens: tokens(1000) });
    l.record('b', 'openai', 'http', { model: 'claude-x', status: 'completed', tokens: tokens(1) });
    l.record('c', 'openai', 'sse', { model: 'anthropic:claude-x', status: 'unknown', tokens: null });
    const { models, providers } = l.snapshot();
    expect(Object.keys(models)).toHaveLength(3);
    expect(Object.values(models).find((m) => m.provider === 'anthropic')).toEqual({ provider: 'anthropic', responses: 1, tokens: tokens(1000) });
    expect(Object.values(models).reduce((n, m) => n + m.responses, 0)).toBe(providers.openai!.responses + providers.anthropic!.responses);
  });
});
