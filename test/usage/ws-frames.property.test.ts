import { constants, createDeflateRaw, createInflateRaw, inflateRawSync, type InflateRaw } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clientFrameError, FrameParser, InflateError, MessageInflater, MessageReader, OPCODE, type Frame } from '../../src/proxy/ws-frames.js';
import { clientFrame } from '../support/ws.js';

/**
 * The frame reader fuzzed, each property within a few seconds: whatever the
 * bytes and however they are cut, it neither throws nor holds a frame over
 * its bound; well-formed frames come back exactly as they were built; and
 * messages compressed as one stream (as a peer's deflater does) inflate back
 * to what was sent, while corrupted ones fail only with an InflateError.
 */
const LIMIT = { numRuns: 300, interruptAfterTimeLimit: 4_000 };
const MAX = 1024;

/** Feeds `bytes` to `write` in the given cuts. */
function feed(bytes: Buffer, cuts: number[], write: (b: Buffer) => void): void {
  let at = 0;
  for (const cut of [...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b), bytes.length]) {
    write(bytes.subarray(at, Math.max(at, cut)));
    at = Math.max(at, cut);
  }
}

const cutsArb = fc.array(fc.nat(), { maxLength: 8 });

describe('the frame reader, fuzzed', () => {
  it('any bytes in any cuts: no throw, and nothing delivered past the bound', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), cutsArb, fc.boolean(), (bytes, cuts, deflate) => {
        const reader = new MessageReader(deflate ? new MessageInflater(false, 15, MAX) : null, MAX);
        const parser = new FrameParser(
          (f: Frame) => {
            if (f.payload) expect(f.payload.length).toBeLessThanOrEqual(MAX);
            if (f.raw) expect(f.raw.length).toBeLessThanOrEqual(MAX + 14);
            if (f.oversized) return;
            if (clientFrameError(f, reader.inMessage, deflate)) return;
            const m = reader.frame(f);
            if (m) expect(m.data.length).toBeLessThanOrEqual(MAX);
          },
          { keepRaw: true, maxPayload: MAX },
        );
        feed(Buffer.from(bytes), cuts, (b) => parser.write(b));
      }),
      LIMIT,
    );
  });

  const frameArb = fc.record({
    opcode: fc.constantFrom(OPCODE.continuation, OPCODE.text, OPCODE.binary, OPCODE.ping, OPCODE.pong),
    fin: fc.boolean(),
    // Around the 7-, 16- and 64-bit length encodings.
    size: fc.oneof(fc.integer({ min: 0, max: 130 }), fc.integer({ min: 65530, max: 65540 })),
    masked: fc.boolean(),
  });

  it('well-formed frames, in any cuts, come back as built: bits, opcode, payload and size', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), cutsArb, (specs, cuts) => {
        const built = specs.map((f, i) => ({ ...f, payload: Buffer.alloc(f.size, i + 1) }));
        const wire = built.map((f) => clientFrame(f.opcode, f.payload, { fin: f.fin, masked: f.masked }));
        const got: Frame[] = [];
        const parser = new FrameParser((f) => got.push(f), { keepRaw: true, maxPayload: 70_000 });
        feed(Buffer.concat(wire), cuts, (b) => parser.write(b));
        expect(got.map((f) => [f.opcode, f.fin, f.masked, f.payload!.equals(built[got.indexOf(f)]!.payload), f.size])).toEqual(
          built.map((f, i) => [f.opcode, f.fin, f.masked, true, wire[i]!.length]),
        );
        expect(got.map((f) => f.raw!.equals(wire[got.indexOf(f)]!))).toEqual(wire.map(() => true));
      }),
      { numRuns: 100, interruptAfterTimeLimit: 4_000 },
    );
  });

  it('messages a peer compressed as one stream inflate back to what was sent; a corrupted one fails with an InflateError only', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ maxLength: 300 }), { minLength: 1, maxLength: 5 }),
        fc.boolean(),
        fc.nat(),
        async (texts, noContextTakeover, flip) => {
          const payloads = await compress(texts, noContextTakeover);
          const inflater = new MessageInflater(noContextTakeover, 15, 1 << 20);
          expect(payloads.map((p) => inflater.inflate(p).toString())).toEqual(texts);
          // One bit flipped somewhere: the reader may read something else, or refuse, never crash.
          const all = Buffer.concat(payloads);
          if (all.length === 0) return;
          const broken = payloads.map((p) => Buffer.from(p));
          const at = flip % all.length;
          let i = 0;
          let offset = at;
          while (offset >= broken[i]!.length) offset -= broken[i++]!.length;
          broken[i]![offset]! ^= 1 << (flip % 8);
          const again = new MessageInflater(noContextTakeover, 15, 1 << 20);
          for (const p of broken) {
            try {
              again.inflate(p);
            } catch (err) {
              expect(err).toBeInstanceOf(InflateError);
              break;
            }
          }
        },
      ),
      { numRuns: 200, interruptAfterTimeLimit: 4_000 },
    );
  });

  it('differential: whatever a hostile sender compresses, a message the sidecar reads is the one both kinds of peer read: one zlib stream (as ws), or each message afresh on the window before it', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.string({ maxLength: 200 }), { minLength: 1, maxLength: 4 }),
        fc.array(fc.record({ message: fc.nat(), byte: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), { maxLength: 3 }),
        fc.array(fc.record({ message: fc.nat(), cut: fc.nat() }), { maxLength: 2 }),
        async (texts, flips, cuts) => {
          const payloads = await compress(texts, false);
          // Bits flipped and messages cut short or moved across the boundary: what a hostile sender could do.
          for (const f of flips) {
            const p = payloads[f.message % payloads.length]!;
            if (p.length > 0) p[f.byte % p.length]! ^= 1 << f.bit;
          }
          for (const c of cuts) {
            const i = c.message % payloads.length;
            if (i + 1 >= payloads.length) continue;
            const at = c.cut % (payloads[i]!.length + 1);
            payloads[i + 1] = Buffer.concat([payloads[i]!.subarray(at), payloads[i + 1]!]);
            payloads[i] = payloads[i]!.subarray(0, at);
          }
          const ours = new MessageInflater(false, 15, 1 << 20);
          const peer = new PeerInflater();
          const afresh = new WindowInflater();
          for (const p of payloads) {
            let read: Buffer;
            try {
              read = ours.inflate(p);
            } catch (err) {
              expect(err).toBeInstanceOf(InflateError);
              break; // the sidecar closes the socket: nothing after this reaches the peer
            }
            expect((await peer.inflate(p)).toString('hex')).toBe(read.toString('hex'));
            expect(afresh.inflate(p).toString('hex')).toBe(read.toString('hex'));
          }
          peer.close();
        },
      ),
      { numRuns: 400, interruptAfterTimeLimit: 6_000 },
    );
  });
});

/** What a permessage-deflate sender puts on the wire: each message flushed, its 00 00 ff ff removed. */
async function compress(texts: string[], noContextTakeover: boolean): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let deflater = createDeflateRaw();
  const chunks: Buffer[] = [];
  const listen = (): void => void deflater.on('data', (d: Buffer) => chunks.push(d));
  listen();
  for (const t of texts) {
    if (noContextTakeover) {
      deflater.close();
      deflater = createDeflateRaw();
      listen();
    }
    deflater.write(t);
    await new Promise<void>((r) => deflater.flush(constants.Z_SYNC_FLUSH, () => r()));
    out.push(Buffer.concat(chunks.splice(0)).subarray(0, -4));
  }
  deflater.close();
  return out;
}

/** The receiving peer as the ws library is: Node's zlib, one raw inflate stream, each message plus 00 00 ff ff flushed. */
class PeerInflater {
  readonly #zlib: InflateRaw = createInflateRaw();
  #out: Buffer[] = [];
  #error: Error | null = null;

  constructor() {
    this.#zlib.on('data', (d: Buffer) => this.#out.push(d));
    this.#zlib.on('error', (err: Error) => (this.#error = err));
  }

  inflate(payload: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.#error) return reject(this.#error);
      this.#zlib.write(Buffer.concat([payload, Buffer.from([0x00, 0x00, 0xff, 0xff])]));
      this.#zlib.flush(constants.Z_SYNC_FLUSH, () => (this.#error ? reject(this.#error) : resolve(Buffer.concat(this.#out.splice(0)))));
    });
  }

  close(): void {
    this.#zlib.close();
  }
}

/**
 * A peer that inflates each message afresh, given the last 32 KiB it read as
 * its dictionary (as this sidecar once did): it agrees with one stream only
 * while every message ends where a block ends.
 */
class WindowInflater {
  #window: Buffer = Buffer.alloc(0);

  inflate(payload: Buffer): Buffer {
    const out = inflateRawSync(Buffer.concat([payload, Buffer.from([0x00, 0x00, 0xff, 0xff])]), {
      finishFlush: constants.Z_SYNC_FLUSH,
      ...(this.#window.length > 0 ? { dictionary: this.#window } : {}),
    });
    this.#window = Buffer.concat([this.#window, out]).subarray(-32 * 1024);
    return out;
  }
}
