// `api-proxy usage`: what a running sidecar has spent, as a Markdown table for
// $GITHUB_STEP_SUMMARY or as the JSON of GET /usage. Loads nothing of the sidecar.
import { parseArgs } from 'node:util';
import { DISPLAYABLE_MODEL, MAX_MODEL_LABELS, OTHER_MODEL, type UsageSnapshot } from '../usage/ledger.js';
import { firstServedPort } from '../providers/index.js';
import { NO_TOKENS, type Tokens } from '../usage/usage.js';

const EX_USAGE = 64;
const USAGE = 'usage: api-proxy usage [--url URL] [--format markdown|json]   (default URL http://127.0.0.1 on the port of the first provider served: $PORT, 10000, when the OpenAI key is set)';
const TIMEOUT_MS = 5000;

const n = (v: number): string => v.toLocaleString('en-US');
// Provider names come from the sidecar's own table; anything else in a snapshot is shown as `other`.
const PROVIDER_NAME = /^[a-z]{1,16}$/;

interface Row {
  provider: string;
  responses: number;
  tokens: Tokens;
}

/**
 * The rows of the summary: model names come from the agent, so only plain
 * ones (what the ledger keeps) are written, in code spans, and at most
 * MAX_MODEL_LABELS of them; anything else is added up as `other`. Whatever
 * the snapshot says, the summary stays a few KiB (a job summary takes 1 MiB).
 */
function modelRows(models: UsageSnapshot['models']): [string, Row][] {
  const kept = new Map<string, Row>();
  const other: Row = { provider: '', responses: 0, tokens: { ...NO_TOKENS } };
  const providers = new Set<string>();
  const byTotal = Object.entries(models).sort(([, a], [, b]) => b.tokens.total - a.tokens.total);
  for (const [name, m] of byTotal) {
    const provider = PROVIDER_NAME.test(String(m.provider)) ? m.provider : OTHER_MODEL;
    if (DISPLAYABLE_MODEL.test(name) && name !== OTHER_MODEL && kept.size < MAX_MODEL_LABELS) {
      kept.set(name, { provider, responses: m.responses, tokens: m.tokens });
      continue;
    }
    providers.add(provider);
    other.responses += m.responses;
    for (const k of Object.keys(other.tokens) as (keyof Tokens)[]) other.tokens[k] += m.tokens[k] ?? 0;
  }
  // The rest of one provider's names stay under its name; of several, under none.
  other.provider = providers.size === 1 ? [...providers][0]! : '';
  const rows = [...kept].map(([name, m]): [string, Row] => [`\`${name}\``, m]);
  if (other.responses > 0) rows.push([`\`${OTHER_MODEL}\``, other]);
  return rows;
}
const row = (provider: string, name: string, responses: number, t: Tokens): string =>
  `| ${provider} | ${name} | ${n(responses)} | ${n(t.input)} | ${n(t.cached_input)} | ${n(t.cache_write ?? 0)} | ${n(t.output)} | ${n(t.reasoning)} | ${n(t.total)} |`;

/** The summary a workflow appends to its job summary. */
export function usageMarkdown(u: UsageSnapshot): string {
  const models = modelRows(u.models);
  const responses = models.reduce((sum, [, m]) => sum + m.responses, 0);
  const { budget } = u;
  const limits = [
    budget.maxTokens !== null ? `${n(budget.usedTokens)} of ${n(budget.maxTokens)} tokens` : null,
    budget.maxRequests !== null ? `${n(budget.usedRequests)} of ${n(budget.maxRequests)} requests` : null,
  ].filter(Boolean);
  const state = limits.length === 0 ? 'no budget set' : `${limits.join(', ')}: ${budget.exhausted ? '**exhausted**, later calls were refused' : 'within budget'}`;
  return [
    '### Model usage (api-proxy)',
    '',
    '| provider | model | responses | input | cached input | cache write | output | reasoning | total |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
    ...models.map(([name, m]) => row(m.provider, name, m.responses, m.tokens)),
    row('', '**all**', responses, u.tokens),
    '',
    `Requests: ${n(u.requests)} · responses with unknown usage: ${n(u.unknown)} · since ${u.since}`,
    '',
    `Budget: ${state}.`,
    '',
  ].join('\n');
}

export async function usageCommand(args: string[], env: NodeJS.ProcessEnv, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        url: { type: 'string', default: `http://127.0.0.1:${firstServedPort(env)}` },
        format: { type: 'string', default: 'markdown' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (e) {
    err.write(`api-proxy usage: ${(e as Error).message}\n${USAGE}\n`);
    return EX_USAGE;
  }
  if (values.help) {
    out.write(`${USAGE}\n`);
    return 0;
  }
  if (values.format !== 'markdown' && values.format !== 'json') {
    err.write(`api-proxy usage: --format must be markdown or json\n${USAGE}\n`);
    return EX_USAGE;
  }
  let url: URL;
  try {
    url = new URL('/usage', values.url);
  } catch {
    err.write(`api-proxy usage: --url is not a URL\n${USAGE}\n`);
    return EX_USAGE;
  }
  let snapshot: UsageSnapshot;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (!res.ok) throw new Error(`it answered ${res.status}`);
    snapshot = (await res.json()) as UsageSnapshot;
  } catch (e) {
    err.write(`api-proxy usage: cannot read ${url.href}: ${(e as Error).message}\n`);
    return 1;
  }
  out.write(values.format === 'json' ? `${JSON.stringify(snapshot, null, 2)}\n` : usageMarkdown(snapshot));
  return 0;
}
