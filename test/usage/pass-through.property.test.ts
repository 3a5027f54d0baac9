import { once } from 'node:events';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, connect, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverFrame, OPCODE } from '../../src/proxy/ws-frames.js';
import { responseEvents } from '../../testkit/fake-upstream.js';
import { until } from '../../testkit/wait.js';
import { startSidecar, type Sidecar } from '../support/sidecar.js';

/**
 * Observe, do not transform: whatever cuts the upstream's bytes arrive in, the
 * caller receives exactly those bytes, and the response is counted once.
 */
const SSE = Buffer.from(responseEvents('gpt-5.5', ['a', 'b', 'c'], { input: 11, output: 7, cached: 0, reasoning: 0 }).map((e) => `data: ${JSON.stringify(e)}\n\n`).join(''));
const WS_BYTES = Buffer.concat(responseEvents('gpt-5.5', ['x', 'y'], { input: 13, output: 2, cached: 0, reasoning: 0 }).map((e) => serverFrame(OPCODE.text, Buffer.from(JSON.stringify(e)))));

/** Splits `bytes` at the given fractions. */
const cut = (bytes: Buffer, at: number[]): Buffer[] => {
  const points = [...new Set(at.map((f) => Math.floor(f * bytes.length)))].filter((p) => p > 0 && p < bytes.length).sort((a, b) => a - b);
  return [0, ...points].map((p, i) => bytes.subarray(p, points[i] ?? bytes.length));
};
/** Writes the property's cuts one by one, each in a write of its own, then ends. */
async function writeCuts(out: { write(b: Buffer): unknown; end(): unknown }): Promise<void> {
  for (const c of chunks) {
    out.write(c);
    await new Promise((r) => setImmediate(r));
  }
  out.end();
}
const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 });

let chunks: Buffer[] = [];
let http: Server;
let raw: NetServer;
let viaHttp: Sidecar;
let viaWs: Sidecar;

beforeAll(async () => {
  http = createHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    void writeCuts(res);
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  // A WebSocket upstream by hand: a 101, then frames in the cuts the property picks.
  raw = createNetServer((s: Socket) => {
    s.once('data', () => {
      s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
      void writeCuts(s);
    });
  });
  raw.listen(0, '127.0.0.1');
  await once(raw, 'listening');
  viaHttp = await startSidecar({ UPSTREAM_URL: `http://127.0.0.1:${(http.address() as AddressInfo).port}` });
  viaWs = await startSidecar({ UPSTREAM_URL: `http://127.0.0.1:${(raw.address() as AddressInfo).port}` });
});
afterAll(async () => {
  await viaHttp.close();
  await viaWs.close();
  http.close();
  raw.close();
});

describe('the bytes the caller gets are the upstream\'s', () => {
  it('server-sent events, in any cuts: identical, and counted once', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(cuts, async (at) => {
        chunks = cut(SSE, at);
        const res = await fetch(`${viaHttp.url}/v1/responses`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
        expect(Buffer.from(await res.arrayBuffer()).equals(SSE)).toBe(true);
        runs++;
        const u = await until(() => viaHttp.app.ledger.snapshot(), (s) => s.models['gpt-5.5']?.responses === runs);
        expect(u.tokens.total).toBe(18 * runs);
      }),
      { numRuns: 30 },
    );
  });

  it('WebSocket frames from the upstream, in any cuts: identical, and the turn counted once', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(cuts, async (at) => {
        chunks = cut(WS_BYTES, at);
        const received = await new Promise<Buffer>((resolve, reject) => {
          const s = connect(viaWs.port, '127.0.0.1', () =>
            s.write('GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'),
          );
          let all = Buffer.alloc(0);
          s.on('data', (d: Buffer) => (all = Buffer.concat([all, d])));
          s.on('close', () => resolve(all.subarray(all.indexOf('\r\n\r\n') + 4)));
          s.on('error', reject);
        });
        expect(received.equals(WS_BYTES)).toBe(true);
        runs++;
        // No response.create was sent here: the turn is counted as the upstream reported it.
        const u = await until(() => viaWs.app.ledger.snapshot(), (s) => s.models['gpt-5.5']?.responses === runs);
        expect(u.tokens.total).toBe(15 * runs);
      }),
      { numRuns: 30 },
    );
  });
});
