import { constants, createDeflateRaw, deflateRawSync } from 'node:zlib';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import { startSidecar, type Sidecar } from '../support/sidecar.js';
import { clientFrame, closeCode, completed, created, rawUpgrade, scriptedUpstream, serverFrames, upstreamError, type RawWebSocket, type Scripted } from '../support/ws.js';

/**
 * The Responses WebSocket as a hostile caller would use it, against the `ws`
 * library as the far side (it inflates each direction as one zlib stream, as
 * RFC 7692 says), so each test asserts what the upstream actually decoded.
 */
const TEXT = 1;
const BINARY = 2;
const CONTINUATION = 0;
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

const ALLOWED = JSON.stringify({ type: 'response.create', model: 'gpt-5.5', input: [] });
const OFF_LIST = JSON.stringify({ type: 'response.create', model: 'gpt-evil', input: [] });

/** Bits in DEFLATE's order: fields least significant bit first, Huffman codes most significant first. */
class BitWriter {
  readonly bytes: number[] = [];
  #bit = 0;
  field(value: number, n: number): void {
    for (let i = 0; i < n; i++) this.#push((value >> i) & 1);
  }
  code(value: number, n: number): void {
    for (let i = n - 1; i >= 0; i--) this.#push((value >> i) & 1);
  }
  #push(b: number): void {
    if (this.#bit === 0) this.bytes.push(0);
    this.bytes[this.bytes.length - 1]! |= b << this.#bit;
    this.#bit = (this.#bit + 1) & 7;
  }
}

/**
 * The spanning block, by hand. Message 1 is a fixed-Huffman block holding the
 * literals of an allowed `response.create` and no end-of-block: its 3 + 8n bits
 * leave 5 zero bits in its last byte. The receiver appends 00 00 ff ff; read on
 * in one stream, 7 zero bits end the block, 3 more open a stored block, and
 * its header takes `00 ff ff` (LEN 0xff00, NLEN's low byte) and the first
 * byte of message 2 (NLEN's high byte, 00). So message 2's next 65280 bytes
 * are stored data to the peer: an off-list `response.create`, padded with
 * spaces. A reader that starts each message afresh reads them as block
 * headers instead.
 */
function spanningMessages(): [Buffer, Buffer] {
  const w = new BitWriter();
  w.field(0, 1); // BFINAL
  w.field(1, 2); // fixed Huffman
  for (const c of Buffer.from(ALLOWED)) w.code(0x30 + c, 8); // literals 0-143: 8-bit codes from 0x30
  const second = Buffer.concat([Buffer.from([0x00]), Buffer.from(OFF_LIST.padEnd(0xff00, ' '))]);
  return [Buffer.from(w.bytes), second];
}

/** Messages compressed as one stream with context takeover (a deflater flushed per message, its 00 00 ff ff removed). */
async function compressedInOneStream(texts: string[], windowBits = 15): Promise<Buffer[]> {
  const deflater = createDeflateRaw({ windowBits });
  const chunks: Buffer[] = [];
  deflater.on('data', (d: Buffer) => chunks.push(d));
  const out: Buffer[] = [];
  for (const t of texts) {
    deflater.write(t);
    await new Promise<void>((r) => deflater.flush(constants.Z_SYNC_FLUSH, () => r()));
    const all = Buffer.concat(chunks.splice(0));
    expect(all.subarray(-4).equals(TAIL)).toBe(true);
    out.push(all.subarray(0, -4));
  }
  deflater.close();
  return out;
}

const DEFLATE = 'permessage-deflate';

let fake: FakeUpstream;
let s: Sidecar;
beforeAll(async () => {
  fake = await startFakeUpstream();
  s = await startSidecar({ UPSTREAM_URL: fake.url, ALLOWED_MODELS: 'gpt-5.5', MAX_TOKENS: '10000000' });
});
afterAll(async () => {
  await s.close();
  await fake.close();
});

/** What the fake upstream decoded on the socket opened last. */
const upstreamMessages = (): string[] => fake.received.at(-1)!.messages;
const usageOf = async (sc: Sidecar) => (await request(sc.url).get('/usage')).body;

/** Sends `frames` through the sidecar; resolves with the close code it answered with. */
async function throughSidecar(extensions: string | undefined, frames: Buffer[]): Promise<{ code: number; ws: RawWebSocket }> {
  const ws = await rawUpgrade(s.port, extensions);
  for (const f of frames) ws.socket.write(f);
  const code = await closeCode(ws);
  ws.socket.destroy();
  return { code, ws };
}

describe('permessage-deflate read as the upstream reads it', () => {
  it('the far side reads the spanning block as message 1 allowed and message 2 off the list', async () => {
    // Straight to the fake: this is what the upstream would read.
    const ws = await rawUpgrade(fake.port, DEFLATE);
    expect(ws.head).toMatch(/sec-websocket-extensions: permessage-deflate/i);
    const [one, two] = spanningMessages();
    ws.socket.write(Buffer.concat([clientFrame(BINARY, one, { rsv1: true }), clientFrame(BINARY, two, { rsv1: true })]));
    const messages = await until(upstreamMessages, (m) => m.length === 2, 10_000);
    expect(messages[0]).toBe(ALLOWED);
    expect(messages[1]!.trimEnd()).toBe(OFF_LIST);
    ws.socket.destroy();
  });

  it('through the sidecar, message 1 already ends inside a DEFLATE block: closed 1008, nothing upstream, nothing charged', async () => {
    const before = await usageOf(s);
    const [one, two] = spanningMessages();
    const { code } = await throughSidecar(DEFLATE, [clientFrame(BINARY, one, { rsv1: true }), clientFrame(BINARY, two, { rsv1: true })]);
    expect(code).toBe(1008);
    expect(upstreamMessages()).toEqual([]);
    expect((await usageOf(s)).budget.usedTokens).toBe(before.budget.usedTokens);
    expect(s.logs.join('')).toContain('message not read as the upstream reads it');
  });

  it('the open block sent as text, a stored block short of its length, a fixed block cut short: 1008', async () => {
    const [one] = spanningMessages();
    // A stored block declaring 100 bytes with 10 sent: the peer would take 00 00 ff ff and the next message as its data.
    const stored = Buffer.concat([Buffer.from([0x00, 100, 0, 0xff - 100, 0xff]), Buffer.from('{"type":"x')]);
    for (const payload of [one, stored, one.subarray(0, 20)]) {
      const { code } = await throughSidecar(DEFLATE, [clientFrame(TEXT, payload, { rsv1: true })]);
      expect(code).toBe(1008);
      expect(upstreamMessages()).toEqual([]);
    }
  });

  it('a final block (BFINAL) ends the peer\'s stream: 1008, nothing upstream', async () => {
    const { code } = await throughSidecar(DEFLATE, [clientFrame(TEXT, deflateRawSync(ALLOWED), { rsv1: true })]);
    expect(code).toBe(1008);
    expect(upstreamMessages()).toEqual([]);
  });

  it('context carried across messages, fragments and control frames between them: every message passes and reaches the upstream as sent', async () => {
    const texts = [ALLOWED, JSON.stringify({ type: 'response.create', model: 'gpt-5.5', input: 'same words again, same words again' }), ALLOWED];
    const [a, b, c] = await compressedInOneStream(texts);
    const ws = await rawUpgrade(s.port, DEFLATE);
    ws.socket.write(clientFrame(BINARY, a!, { rsv1: true }));
    ws.socket.write(clientFrame(TEXT, b!.subarray(0, 5), { rsv1: true, fin: false }));
    ws.socket.write(clientFrame(9, Buffer.from('ping')));
    ws.socket.write(clientFrame(CONTINUATION, b!.subarray(5)));
    ws.socket.write(clientFrame(TEXT, c!, { rsv1: true }));
    expect(await until(upstreamMessages, (m) => m.length === 3, 10_000)).toEqual(texts);
    ws.socket.destroy();
  });

  it('with client_no_context_takeover agreed, a message that reaches back into the one before: 1008, the first passed alone', async () => {
    const texts = [ALLOWED, ALLOWED];
    const [a, b] = await compressedInOneStream(texts);
    const { code, ws } = await throughSidecar(`${DEFLATE}; client_no_context_takeover`, [clientFrame(TEXT, a!, { rsv1: true }), clientFrame(TEXT, b!, { rsv1: true })]);
    expect(ws.head).toMatch(/client_no_context_takeover/);
    expect(code).toBe(1008);
    expect(upstreamMessages()).toEqual([ALLOWED]);
  });

  it('with client_max_window_bits=9 agreed, a distance past 512 bytes: 1008, as the peer would refuse it', async () => {
    const filler = JSON.stringify({ type: 'response.create', model: 'gpt-5.5', input: 'x'.repeat(10) + Array.from({ length: 120 }, (_, i) => i.toString(36)).join('') });
    const texts = [filler.padEnd(700, ' '), filler.padEnd(700, ' ')];
    const [a, b] = await compressedInOneStream(texts);
    const { code, ws } = await throughSidecar(`${DEFLATE}; client_max_window_bits=9`, [clientFrame(TEXT, a!, { rsv1: true }), clientFrame(TEXT, b!, { rsv1: true })]);
    expect(ws.head).toMatch(/client_max_window_bits=9/);
    expect(code).toBe(1008);
    expect(upstreamMessages()).toHaveLength(1);
  });
});

describe('frames a server fails the connection on are not read another way and forwarded', () => {
  const payload = Buffer.from(ALLOWED);
  const cases: [string, string | undefined, Buffer[]][] = [
    ['unmasked', undefined, [clientFrame(TEXT, payload, { masked: false })]],
    ['RSV2 set', undefined, [clientFrame(TEXT, payload, { rsv2: true })]],
    ['RSV1 without permessage-deflate', undefined, [clientFrame(TEXT, payload, { rsv1: true })]],
    ['RSV1 on a continuation', DEFLATE, [clientFrame(TEXT, payload.subarray(0, 4), { fin: false }), clientFrame(CONTINUATION, payload.subarray(4), { rsv1: true })]],
    ['a reserved opcode', undefined, [clientFrame(3, payload)]],
    ['a continuation first', undefined, [clientFrame(CONTINUATION, payload)]],
    ['a new message inside a fragmented one', undefined, [clientFrame(TEXT, payload.subarray(0, 4), { fin: false }), clientFrame(TEXT, payload)]],
    ['a fragmented ping', undefined, [clientFrame(9, Buffer.from('p'), { fin: false })]],
  ];
  it.each(cases)('%s: 1002, nothing upstream', async (_, extensions, frames) => {
    const { code } = await throughSidecar(extensions, frames);
    expect(code).toBe(1002);
    expect(upstreamMessages()).toEqual([]);
  });
});

describe('turns matched to responses by id', () => {
  let up: Scripted;
  let sc: Sidecar;
  /** Completions held back by the script, sent when a message of type `flush` arrives, last first. */
  const heldBack: [WebSocket, string][] = [];
  /** `response.create` messages the far side decoded. */
  let creates = 0;
  beforeAll(async () => {
    let n = 0;
    up = await scriptedUpstream((msg, ws) => {
      if (msg.type === 'response.create') creates++;
      if (msg.type === 'flush') {
        for (const [w, e] of heldBack.splice(0).reverse()) w.send(e);
        return;
      }
      if (msg.type === 'echo') return ws.send(JSON.stringify({ type: 'echo' }));
      if (msg.type !== 'response.create') return ws.send(upstreamError('unknown event type'));
      if (msg.model === 'gpt-missing') return ws.send(upstreamError('model not found'));
      if (msg.model === 'gpt-silent') return; // never answered
      const id = `resp_${++n}`;
      ws.send(created(id));
      if (msg.model === 'gpt-cut') return; // created, never completed
      const input = Number((msg.metadata as { input?: number } | undefined)?.input ?? 10);
      const done = completed(id, String(msg.model), input, 1);
      if (msg.hold === true) heldBack.push([ws, done]);
      else ws.send(done);
    });
  });
  afterAll(async () => {
    await sc?.close();
    await up.close();
  });

  const fresh = async (maxTokens = '10000000'): Promise<Sidecar> => {
    await sc?.close();
    sc = await startSidecar({ UPSTREAM_URL: up.url, MAX_TOKENS: maxTokens, RESERVE_TOKENS: '1000' });
    return sc;
  };
  const send = (ws: RawWebSocket, msg: object): boolean => ws.socket.write(clientFrame(TEXT, Buffer.from(JSON.stringify(msg))));
  /** The upstream's events the caller has seen, parsed. */
  const events = (ws: RawWebSocket): Record<string, unknown>[] => serverFrames(ws.received()).filter((f) => f.opcode === TEXT).map((f) => JSON.parse(f.payload.toString()) as Record<string, unknown>);
  const count = (ws: RawWebSocket, type: string): number => events(ws).filter((e) => e.type === type).length;

  it('a turn and a prewarm answered out of order: each usage settles its own turn, the prewarm\'s tokens count, its request does not', async () => {
    const sidecar = await fresh();
    const ws = await rawUpgrade(sidecar.port);
    send(ws, { type: 'response.create', model: 'gpt-5.5', hold: true, metadata: { input: 1000 } });
    send(ws, { type: 'response.create', model: 'gpt-5.5-mini', generate: false, hold: true, metadata: { input: 7 } });
    send(ws, { type: 'flush' });
    await until(() => count(ws, 'response.completed'), (n) => n === 2, 10_000);
    ws.socket.destroy();
    const u = await until(() => usageOf(sidecar), (b) => b.models['gpt-5.5-mini'] !== undefined && b.models['gpt-5.5'] !== undefined);
    expect(u.models['gpt-5.5'].tokens).toMatchObject({ input: 1000, output: 1 });
    expect(u.models['gpt-5.5-mini'].tokens).toMatchObject({ input: 7, output: 1 });
    expect(u.budget).toMatchObject({ usedTokens: 1009, usedRequests: 1 });
    expect(u.unknown).toBe(0);
  });

  it('an upstream error for a message that is no turn, or for a turn it refused, shifts nothing: the answered turn is charged, the refused one not', async () => {
    const sidecar = await fresh();
    const ws = await rawUpgrade(sidecar.port);
    send(ws, { type: 'bogus.event' });
    send(ws, { type: 'response.create', model: 'gpt-missing' });
    send(ws, { type: 'response.create', model: 'gpt-5.5', metadata: { input: 40 } });
    await until(() => count(ws, 'response.completed'), (n) => n === 1, 10_000);
    expect(count(ws, 'error')).toBe(2);
    ws.socket.destroy();
    const u = await until(() => usageOf(sidecar), (b) => b.models['gpt-5.5'] !== undefined);
    expect(u.budget.usedTokens).toBe(41);
    expect(u.unknown).toBe(0);
    expect(u.models['gpt-missing']).toBeUndefined();
  });

  it('a turn created and cut, one answered after it, one never answered: the cut and the silent turns are charged their own reservations', async () => {
    const sidecar = await fresh();
    const ws = await rawUpgrade(sidecar.port);
    const cut = { type: 'response.create', model: 'gpt-cut', max_output_tokens: 5000 };
    const answered = { type: 'response.create', model: 'gpt-5.5', max_output_tokens: 10, metadata: { input: 3 } };
    const silent = { type: 'response.create', model: 'gpt-silent', input: 'a'.repeat(400) };
    for (const m of [cut, answered, silent]) send(ws, m);
    await until(() => count(ws, 'response.completed'), (n) => n === 1, 10_000);
    ws.socket.destroy();
    const u = await until(() => usageOf(sidecar), (b) => b.unknown === 2);
    const reservation = (m: object, out: number): number => Math.ceil(JSON.stringify(m).length / 4) + out;
    // Matched in order instead, the answer would have settled the cut turn's 5000 and left the small one charged.
    expect(u.budget.usedTokens).toBe(reservation(cut, 5000) + 4 + reservation(silent, 1000));
    expect(u.tokens.total).toBe(4);
  });

  it('turns at once on one socket and on a second one: the first holds its reservation, the others get 429 budget_exceeded and are not sent', async () => {
    const sidecar = await fresh('100');
    creates = 0;
    const a = await rawUpgrade(sidecar.port);
    const b = await rawUpgrade(sidecar.port);
    const turn = { type: 'response.create', model: 'gpt-5.5', hold: true, metadata: { input: 10 } };
    for (let i = 0; i < 3; i++) send(a, turn);
    send(b, turn);
    await until(() => count(a, 'error') + count(b, 'error'), (n) => n === 3, 10_000);
    for (const e of [...events(a), ...events(b)].filter((x) => x.type === 'error')) {
      expect(e).toMatchObject({ status: 429, error: { code: 'budget_exceeded', type: 'insufficient_quota' } });
    }
    await until(() => count(a, 'response.created'), (n) => n === 1, 10_000);
    expect(creates).toBe(1);
    // Once the first reports its 11 tokens, the budget has room again.
    send(a, { type: 'flush' });
    await until(() => count(a, 'response.completed'), (n) => n === 1, 10_000);
    send(b, { ...turn, hold: false });
    await until(() => count(b, 'response.completed'), (n) => n === 1, 10_000);
    expect(creates).toBe(2);
    for (const ws of [a, b]) ws.socket.destroy();
    expect((await until(() => usageOf(sidecar), (u) => u.budget.usedTokens === 22)).unknown).toBe(0);
  });

  it('messages that are no turn, answered with anything but an error, cost nothing and shift nothing: 3000 of them, then a turn', async () => {
    const sidecar = await fresh();
    const ws = await rawUpgrade(sidecar.port);
    const echo = clientFrame(TEXT, Buffer.from('{"type":"echo"}'));
    ws.socket.write(Buffer.concat(Array.from({ length: 3000 }, () => echo)));
    send(ws, { type: 'response.create', model: 'gpt-5.5', metadata: { input: 5 } });
    await until(() => count(ws, 'response.completed'), (n) => n === 1, 10_000);
    expect(count(ws, 'echo')).toBe(3000);
    ws.socket.destroy();
    const u = await until(() => usageOf(sidecar), (b) => b.models['gpt-5.5'] !== undefined);
    expect(u.budget.usedTokens).toBe(6);
    expect(u.unknown).toBe(0);
  });

  it('more than 1024 turns waiting for an answer close the socket with 1008', async () => {
    const sidecar = await fresh();
    const ws = await rawUpgrade(sidecar.port);
    const silent = clientFrame(TEXT, Buffer.from(JSON.stringify({ type: 'response.create', model: 'gpt-silent', max_output_tokens: 1 })));
    ws.socket.write(Buffer.concat(Array.from({ length: 1025 }, () => silent)));
    expect(await closeCode(ws)).toBe(1008);
    ws.socket.destroy();
    // Each turn sent was charged its reservation at the end; the one refused was not sent.
    const u = await until(() => usageOf(sidecar), (b) => b.unknown === 1024);
    expect(u.budget.usedRequests).toBe(1024);
  });
});
