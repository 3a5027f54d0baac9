import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer, type PerMessageDeflateOptions } from 'ws';
import { acceptedDeflate, FrameParser, MessageInflater, MessageReader, OPCODE, type Frame } from '../../src/proxy/ws-frames.js';

/**
 * Frames made by the `ws` library on both ends, recorded off the wire by a TCP
 * relay between them, then read back by the sidecar's parser in every cut.
 */
interface Recording {
  /** Bytes after each side's HTTP head. */
  toClient: Buffer;
  toServer: Buffer;
  extensions: string | undefined;
}

const servers: Server[] = [];
afterAll(() => servers.forEach((s) => s.close()));

async function record(deflate: PerMessageDeflateOptions | false, script: (ws: WebSocket) => Promise<void>, serverScript: (ws: WebSocket) => Promise<void>): Promise<Recording> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: deflate });
  await once(wss, 'listening');
  const wsPort = (wss.address() as AddressInfo).port;
  let toClient = Buffer.alloc(0);
  let toServer = Buffer.alloc(0);
  const relay = createServer((client: Socket) => {
    const server = connect(wsPort, '127.0.0.1');
    client.on('data', (d) => {
      toServer = Buffer.concat([toServer, d]);
      server.write(d);
    });
    server.on('data', (d) => {
      toClient = Buffer.concat([toClient, d]);
      client.write(d);
    });
    client.on('close', () => server.destroy());
    server.on('close', () => client.destroy());
  });
  servers.push(relay);
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  const served = new Promise<void>((resolve) => wss.once('connection', (ws) => void serverScript(ws).then(resolve)));
  const ws = new WebSocket(`ws://127.0.0.1:${(relay.address() as AddressInfo).port}/v1/responses`, { perMessageDeflate: deflate });
  const upgrade = new Promise<string | undefined>((resolve) => ws.once('upgrade', (res) => resolve(res.headers['sec-websocket-extensions'] as string | undefined)));
  await once(ws, 'open');
  await script(ws);
  await served;
  ws.close();
  await once(ws, 'close');
  wss.close();
  const body = (b: Buffer): Buffer => b.subarray(b.indexOf('\r\n\r\n') + 4);
  return { toClient: body(toClient), toServer: body(toServer), extensions: await upgrade };
}

/** Reads one direction's bytes in the given cuts: the messages (as text) and control frames, in order. */
function readBack(bytes: Buffer, cuts: number[], inflate: MessageInflater | null): string[] {
  const out: string[] = [];
  const reader = new MessageReader(inflate, 1 << 20);
  const parser = new FrameParser((f: Frame) => {
    if (f.opcode >= OPCODE.close) return void out.push(`<${f.opcode === OPCODE.ping ? 'ping' : f.opcode === OPCODE.pong ? 'pong' : 'close'}>`);
    const m = reader.frame(f);
    if (m) out.push(m.data.toString('utf8'));
  }, { keepRaw: true, maxPayload: 1 << 20 });
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    parser.write(bytes.subarray(at, cut));
    at = cut;
  }
  expect(reader.broken).toBeNull();
  return out;
}

/** Deterministic random cut points. */
function randomCuts(length: number, n: number, seed: number): number[] {
  let x = seed;
  const next = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  return Array.from({ length: n }, () => Math.floor(next() * length)).sort((a, b) => a - b);
}

const event = (i: number): string => JSON.stringify({ type: 'response.output_text.delta', delta: `token ${i} of a reply that repeats itself, `, sequence_number: i });
const SERVER_MESSAGES = [...Array.from({ length: 20 }, (_, i) => event(i)), 'x'.repeat(200), JSON.stringify({ big: 'y'.repeat(70_000) })];
const CLIENT_MESSAGES = [JSON.stringify({ type: 'response.create', generate: false, model: 'gpt-5.5' }), JSON.stringify({ type: 'response.create', model: 'gpt-5.5', input: 'hi '.repeat(50) })];

async function converse(deflate: PerMessageDeflateOptions | false): Promise<Recording> {
  return record(
    deflate,
    async (ws) => {
      for (const m of CLIENT_MESSAGES) ws.send(m);
      // A fragmented message with a ping between its fragments (masked, as a client's are).
      ws.send('{"type":"response.create",', { fin: false });
      ws.ping();
      ws.send('"model":"gpt-5.5"}', { fin: true });
      await new Promise<void>((resolve) => {
        let n = 0;
        ws.on('message', () => ++n === SERVER_MESSAGES.length && resolve());
      });
    },
    async (ws) => {
      await new Promise<void>((resolve) => {
        let n = 0;
        ws.on('message', () => ++n === CLIENT_MESSAGES.length + 1 && resolve());
      });
      for (const m of SERVER_MESSAGES) ws.send(m);
    },
  );
}

const CLIENT_EXPECTED = [...CLIENT_MESSAGES, '<ping>', '{"type":"response.create","model":"gpt-5.5"}'];

describe.each([
  ['no compression', false as const],
  ['permessage-deflate, context kept across messages', { threshold: 0 }],
  ['permessage-deflate, no context takeover either way', { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true }],
])('frames from ws, %s', (_, deflate) => {
  let rec: Recording;
  const inflaters = (): { server: MessageInflater | null; client: MessageInflater | null } => {
    const d = acceptedDeflate(rec.extensions);
    return { server: d && new MessageInflater(d.serverNoContextTakeover, d.serverWindowBits, 1 << 20), client: d && new MessageInflater(d.clientNoContextTakeover, d.clientWindowBits, 1 << 20) };
  };

  it('negotiates what was asked', async () => {
    rec = await converse(deflate);
    expect(acceptedDeflate(rec.extensions) !== null).toBe(deflate !== false);
    if (deflate && 'serverNoContextTakeover' in deflate) expect(acceptedDeflate(rec.extensions)).toMatchObject({ serverNoContextTakeover: true, clientNoContextTakeover: true });
  });

  it('reads the server messages (unmasked; 7-, 16- and 64-bit lengths) whole and in 200 random cuts', () => {
    expect(readBack(rec.toClient, [], inflaters().server).filter((m) => !m.startsWith('<'))).toEqual(SERVER_MESSAGES);
    for (let seed = 1; seed <= 20; seed++) {
      expect(readBack(rec.toClient, randomCuts(rec.toClient.length, 10, seed), inflaters().server).filter((m) => !m.startsWith('<'))).toEqual(SERVER_MESSAGES);
    }
  });

  it('reads the client messages (masked; fragments with a ping between) at every byte offset and a byte at a time', () => {
    const bytes = rec.toServer;
    const messages = (cuts: number[]): string[] => readBack(bytes, cuts, inflaters().client).filter((m) => m !== '<close>');
    expect(messages([])).toEqual(CLIENT_EXPECTED);
    for (let i = 1; i < bytes.length; i++) expect(messages([i]), `cut at ${i}`).toEqual(CLIENT_EXPECTED);
    expect(messages(Array.from({ length: bytes.length - 1 }, (_, i) => i + 1))).toEqual(CLIENT_EXPECTED);
  });
});

describe('MessageReader bounds', () => {
  it('marks a direction unreadable past its bound, and a frame too large to copy passes without being held', () => {
    const frames: Frame[] = [];
    const parser = new FrameParser((f) => frames.push(f), { keepRaw: false, maxPayload: 10 });
    const big = Buffer.concat([Buffer.from([0x81, 126, 0x01, 0x00]), Buffer.alloc(256, 120)]);
    parser.write(big.subarray(0, 6));
    parser.write(big.subarray(6));
    parser.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
    expect(frames.map((f) => [f.payload?.toString() ?? null, f.size])).toEqual([
      [null, 260],
      ['hi', 4],
    ]);
    const reader = new MessageReader(null, 10);
    expect(reader.frame(frames[0]!)).toBeNull();
    expect(reader.broken).toBe('too big');
  });
});
