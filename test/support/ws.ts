import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { until } from '../../testkit/wait.js';

/** Opens a WebSocket and resolves on open, or with the refusal's status and body. */
export function openWebSocket(
  url: string,
  headers: Record<string, string>,
): Promise<{ ws?: WebSocket; refused?: { status: number; headers: IncomingMessage['headers']; body: string } }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d));
      res.on('end', () => resolve({ refused: { status: res.statusCode ?? 0, headers: res.headers, body } }));
    });
    ws.once('error', reject);
  });
}

/** Sends `message` and collects JSON events until one of type `until` arrives. */
export function exchangeEvents(ws: WebSocket, message: object, until: string): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const events: Record<string, unknown>[] = [];
    const onMessage = (data: Buffer): void => {
      const event = JSON.parse(data.toString()) as Record<string, unknown>;
      events.push(event);
      if (event.type === until) {
        ws.off('message', onMessage);
        resolve(events);
      }
    };
    ws.on('message', onMessage);
    ws.once('close', () => reject(new Error(`closed before ${until}`)));
    ws.send(JSON.stringify(message));
  });
}

/** A raw WebSocket past its 101, byte for byte: the socket, what came after the head, and the head. */
export interface RawWebSocket {
  socket: Socket;
  received: () => Buffer;
  head: string;
}

/** Upgrades `/v1/responses` on a plain socket, offering `extensions` when given. */
export async function rawUpgrade(port: number, extensions?: string, extraHeaders = ''): Promise<RawWebSocket> {
  const socket = connect(port, '127.0.0.1');
  let data = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (data = Buffer.concat([data, d])));
  socket.on('error', () => undefined); // the far end may close while this side still sends
  await once(socket, 'connect');
  const offer = extensions ? `Sec-WebSocket-Extensions: ${extensions}\r\n` : '';
  socket.write(
    `GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n${offer}${extraHeaders}\r\n`,
  );
  await until(() => data.includes('\r\n\r\n'), (v) => v, 10_000);
  const headEnd = data.indexOf('\r\n\r\n') + 4;
  const head = data.subarray(0, headEnd).toString('latin1');
  if (!/^HTTP\/1\.1 101 /.test(head)) throw new Error(`not upgraded: ${head.split('\r\n')[0]}`);
  return { socket, received: () => data.subarray(headEnd), head };
}

/** A client frame as a hostile caller may build it: masked unless told, any bits. */
export function clientFrame(opcode: number, payload: Buffer, bits: { fin?: boolean; rsv1?: boolean; rsv2?: boolean; masked?: boolean } = {}): Buffer {
  const { fin = true, rsv1 = false, rsv2 = false, masked = true } = bits;
  const n = payload.length;
  const len = n < 126 ? Buffer.from([n]) : n < 65536 ? Buffer.from([126, n >> 8, n & 0xff]) : Buffer.concat([Buffer.from([127]), bigLength(n)]);
  len[0]! |= masked ? 0x80 : 0;
  const first = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (rsv2 ? 0x20 : 0) | opcode;
  if (!masked) return Buffer.concat([Buffer.from([first]), len, payload]);
  const mask = randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]!));
  return Buffer.concat([Buffer.from([first]), len, mask, body]);
}

function bigLength(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/** The server's frames in `bytes` (unmasked, unfragmented): opcode and payload each. */
export function serverFrames(bytes: Buffer): { opcode: number; payload: Buffer }[] {
  const out: { opcode: number; payload: Buffer }[] = [];
  let at = 0;
  while (at + 2 <= bytes.length) {
    let len = bytes[at + 1]! & 0x7f;
    let start = at + 2;
    if (len === 126) [len, start] = [bytes.readUInt16BE(at + 2), at + 4];
    else if (len === 127) [len, start] = [Number(bytes.readBigUInt64BE(at + 2)), at + 10];
    if (start + len > bytes.length) break;
    out.push({ opcode: bytes[at]! & 0x0f, payload: bytes.subarray(start, start + len) });
    at = start + len;
  }
  return out;
}

/** The close code the server sent on `ws`, once it has: waits up to 10 s. */
export async function closeCode(ws: RawWebSocket): Promise<number> {
  const frames = await until(() => serverFrames(ws.received()), (f) => f.some((x) => x.opcode === 8), 10_000);
  return frames.find((x) => x.opcode === 8)!.payload.readUInt16BE(0);
}

/**
 * A far side scripted per message: answers each caller message as the test
 * says (events, with ids and usage it chooses), so interleavings can be made.
 */
export interface Scripted {
  url: string;
  close(): Promise<void>;
}

export async function scriptedUpstream(answer: (msg: Record<string, unknown>, ws: WebSocket) => void): Promise<Scripted> {
  const server: Server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ server, perMessageDeflate: true });
  wss.on('connection', (ws) => ws.on('message', (d: Buffer) => answer(JSON.parse(d.toString()) as Record<string, unknown>, ws)));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => server.close(r));
    },
  };
}

export const created = (id: string): string => JSON.stringify({ type: 'response.created', response: { id, status: 'in_progress' } });
export const completed = (id: string, model: string, input: number, output: number): string =>
  JSON.stringify({ type: 'response.completed', response: { id, model, status: 'completed', usage: { input_tokens: input, output_tokens: output, total_tokens: input + output } } });
export const upstreamError = (message: string): string => JSON.stringify({ type: 'error', status: 400, error: { type: 'invalid_request_error', message } });
