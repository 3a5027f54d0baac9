import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { until } from '../../testkit/wait.js';
import { startSidecar, type Sidecar } from '../support/sidecar.js';
import { completed, created, scriptedUpstream, upstreamError, type Scripted } from '../support/ws.js';

/**
 * For random sequences of caller messages on one Responses WebSocket
 * (compressed or not, fragmented, binary or text, turns, prewarms, messages
 * that are no turn, turns the upstream refuses, turns the sidecar refuses),
 * answered by a far side in whatever order its timers give: the turns the
 * upstream answered are exactly the ones the sidecar charged, each with the
 * usage its own response reported, and nothing else is charged.
 */
type Kind = 'turn' | 'prewarm' | 'other' | 'upstream-refuses' | 'off-list';
interface Msg {
  kind: Kind;
  binary: boolean;
  fragments: number;
  compress: boolean;
}

const msgArb: fc.Arbitrary<Msg> = fc.record({
  kind: fc.constantFrom<Kind>('turn', 'turn', 'prewarm', 'other', 'upstream-refuses', 'off-list'),
  binary: fc.boolean(),
  fragments: fc.integer({ min: 1, max: 3 }),
  compress: fc.boolean(),
});

let up: Scripted;
let s: Sidecar;
let log: string;
/** Input token counts of the turns the far side answered with a completed response. */
const answered: number[] = [];

beforeAll(async () => {
  let n = 0;
  up = await scriptedUpstream((msg, ws) => {
    if (msg.type !== 'response.create') return ws.send(upstreamError('unknown event type'));
    if (msg.model === 'gpt-missing') return ws.send(upstreamError('model not found'));
    const id = `resp_p${++n}`;
    const input = (msg.metadata as { input: number }).input;
    ws.send(created(id));
    // Completed after a timer of its own, so responses may finish out of order.
    setTimeout(() => {
      answered.push(input);
      ws.send(completed(id, String(msg.model), input, 1));
    }, input % 3);
  });
  log = join(mkdtempSync(join(tmpdir(), 'api-proxy-ws-prop-')), 'usage.jsonl');
  s = await startSidecar({ UPSTREAM_URL: up.url, ALLOWED_MODELS: 'gpt-5.5,gpt-missing', MAX_TOKENS: '100000000', USAGE_LOG_FILE: log, LOG_LEVEL: 'warn' });
});
afterAll(async () => {
  await s.close();
  await up.close();
});

const usageOf = async () => (await request(s.url).get('/usage')).body;
const logLines = (): { input: number; transport: string }[] =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { input: number; transport: string });

let nextInput = 1000;

async function run(deflate: boolean, msgs: Msg[]): Promise<void> {
  const before = await usageOf();
  const linesBefore = logLines().length;
  answered.length = 0;
  const ws = new WebSocket(`${s.url.replace('http', 'ws')}/v1/responses`, { perMessageDeflate: deflate ? { threshold: 0 } : false });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let answers = 0;
  ws.on('message', (d: Buffer) => {
    const type = (JSON.parse(d.toString()) as { type: string }).type;
    if (type === 'response.completed' || type === 'error') answers++;
  });
  const sentInputs: number[] = [];
  let counted = 0;
  for (const m of msgs) {
    const input = nextInput++;
    const model = m.kind === 'off-list' ? 'gpt-evil' : m.kind === 'upstream-refuses' ? 'gpt-missing' : 'gpt-5.5';
    const body =
      m.kind === 'other'
        ? { type: 'conversation.item.create', metadata: { input } }
        : { type: 'response.create', model, ...(m.kind === 'prewarm' ? { generate: false } : {}), metadata: { input } };
    if (m.kind === 'turn' || m.kind === 'prewarm') sentInputs.push(input);
    if (m.kind === 'turn' || m.kind === 'upstream-refuses') counted++;
    const bytes = Buffer.from(JSON.stringify(body));
    // A refusal of a message compressed with context takeover closes the socket (1008): not sent compressed here.
    const compress = m.compress && m.kind !== 'off-list';
    const cut = Math.ceil(bytes.length / m.fragments);
    for (let at = 0; at < bytes.length; at += cut) {
      ws.send(bytes.subarray(at, at + cut), { binary: m.binary, compress, fin: at + cut >= bytes.length });
    }
  }
  await until(() => answers, (n) => n === msgs.length, 10_000);
  ws.close();
  await until(() => logLines().length - linesBefore, (n) => n === sentInputs.length, 10_000);
  const after = await usageOf();

  const charged = logLines()
    .slice(linesBefore)
    .map((l) => l.input)
    .sort();
  expect(charged).toEqual([...answered].sort());
  expect(charged).toEqual([...sentInputs].sort());
  expect(after.budget.usedTokens - before.budget.usedTokens).toBe(sentInputs.reduce((a, b) => a + b + 1, 0));
  expect(after.budget.usedRequests - before.budget.usedRequests).toBe(counted);
  expect(after.unknown).toBe(before.unknown);
}

describe('WebSocket turns, property', () => {
  it('the turns the upstream answered are the turns charged, each by its own usage', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(msgArb, { minLength: 1, maxLength: 8 }), (deflate, msgs) => run(deflate, msgs)),
      { numRuns: 100, interruptAfterTimeLimit: 20_000 },
    );
  });
});
