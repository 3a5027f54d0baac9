import { constants, inflateRawSync } from 'node:zlib';

/**
 * WebSocket framing (RFC 6455) and permessage-deflate (RFC 7692), for reading
 * copies of what crosses the sidecar. Nothing here writes to a socket.
 */

export const OPCODE = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

export interface Frame {
  fin: boolean;
  /** permessage-deflate's "compressed" bit, meaningful on a message's first frame. */
  rsv1: boolean;
  opcode: number;
  /** Unmasked, or null when over the parser's limit (the frame was still delimited). */
  payload: Buffer | null;
  /** The frame's bytes as they came, when the parser keeps them. */
  raw: Buffer | null;
  /** Its length on the wire, header included. */
  size: number;
  /**
   * Set when the parser keeps frames (`keepRaw`) and this one declares more
   * than `maxPayload`: said as soon as its header is read, and its bytes are
   * dropped as they come, never buffered.
   */
  oversized?: boolean;
}

/**
 * Delimits frames in a byte stream fed in any cuts. `keepRaw` keeps each frame's
 * bytes (to forward or drop it whole); payloads over `maxPayload` are skipped,
 * not buffered.
 */
export class FrameParser {
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Bytes still to pass of a frame too large to copy, and that frame. */
  #skip = 0;
  #skipped: Frame | null = null;

  constructor(
    private readonly onFrame: (frame: Frame) => void,
    private readonly opts: { keepRaw: boolean; maxPayload: number },
  ) {}

  write(chunk: Buffer): void {
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, chunk.length);
      this.#skip -= n;
      chunk = chunk.subarray(n);
      if (this.#skip > 0) return;
      if (this.#skipped) this.onFrame(this.#skipped);
      this.#skipped = null;
    }
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    for (;;) {
      const head = this.#peek(14);
      if (head.length < 2) return;
      const masked = (head[1]! & 0x80) !== 0;
      let length = head[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (head.length < 4) return;
        length = head.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (head.length < 10) return;
        length = Number(head.readBigUInt64BE(2));
        offset = 10;
      }
      const maskAt = offset;
      if (masked) offset += 4;
      const fin = (head[0]! & 0x80) !== 0;
      const rsv1 = (head[0]! & 0x40) !== 0;
      const opcode = head[0]! & 0x0f;
      if (head.length < offset) return;
      if (this.opts.keepRaw && length > this.opts.maxPayload) {
        // A frame that could not be held whole: the caller hears of it now, at its
        // header; its bytes (up to 2^63 declared) are dropped as they come.
        const total = offset + length;
        if (this.#buffered >= total) this.#take(total);
        else {
          this.#skip = total - this.#buffered;
          this.#keep(Buffer.alloc(0));
        }
        this.onFrame({ fin, rsv1, opcode, payload: null, raw: null, size: total, oversized: true });
        if (this.#skip > 0) return;
        continue;
      }
      if (!this.opts.keepRaw && length > this.opts.maxPayload) {
        // Too large to read: let it pass without holding it.
        const skipped: Frame = { fin, rsv1, opcode, payload: null, raw: null, size: offset + length };
        if (this.#buffered >= offset + length) {
          this.#take(offset + length);
          this.onFrame(skipped);
          continue;
        }
        this.#skip = offset + length - this.#buffered;
        this.#skipped = skipped;
        this.#keep(Buffer.alloc(0));
        return;
      }
      if (this.#buffered < offset + length) return;
      const bytes = this.#take(offset + length);
      let payload: Buffer | null = null;
      if (length <= this.opts.maxPayload) {
        payload = Buffer.from(bytes.subarray(offset));
        if (masked) unmask(payload, bytes.subarray(maskAt, maskAt + 4));
      }
      this.onFrame({ fin, rsv1, opcode, payload, raw: this.opts.keepRaw ? bytes : null, size: offset + length });
    }
  }

  /** The first `n` buffered bytes (fewer if not there yet), without consuming them. */
  #peek(n: number): Buffer {
    if (this.#chunks[0] && this.#chunks[0].length >= n) return this.#chunks[0].subarray(0, n);
    return Buffer.concat(this.#chunks, Math.min(n, this.#buffered));
  }


  #keep(rest: Buffer): void {
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
  }

  #take(n: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
    this.#keep(all.subarray(n));
    return all.subarray(0, n);
  }
}

function unmask(payload: Buffer, mask: Buffer): void {
  for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
}

/** What the upstream agreed to in its 101: whether each side resets its DEFLATE context per message. */
export interface Deflate {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
}

/** permessage-deflate as accepted in `sec-websocket-extensions`, or null when not in use. */
export function acceptedDeflate(header: string | string[] | undefined): Deflate | null {
  for (const ext of String(header ?? '').split(',')) {
    const [name, ...params] = ext.split(';').map((p) => p.trim().toLowerCase());
    if (name !== 'permessage-deflate') continue;
    const names = new Set(params.map((p) => p.split('=')[0]!.trim()));
    return { serverNoContextTakeover: names.has('server_no_context_takeover'), clientNoContextTakeover: names.has('client_no_context_takeover') };
  }
  return null;
}

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const WINDOW = 32 * 1024;

/**
 * One direction's compressed messages, inflated in order. With context takeover
 * a message may refer back into the last 32 KiB of what came before: that
 * window is kept and given to each inflate as its dictionary, which is exactly
 * the context the sender compressed against.
 */
export class MessageInflater {
  #window: Buffer | undefined;

  constructor(
    private readonly noContextTakeover: boolean,
    private readonly maxBytes: number,
  ) {}

  /** Throws on bad data or output over the limit; the direction can then no longer be read. */
  inflate(payload: Buffer): Buffer {
    const out = inflateRawSync(Buffer.concat([payload, TAIL]), {
      finishFlush: constants.Z_SYNC_FLUSH,
      maxOutputLength: this.maxBytes,
      ...(this.#window ? { dictionary: this.#window } : {}),
    });
    if (!this.noContextTakeover) {
      const joined = this.#window ? Buffer.concat([this.#window, out]) : out;
      this.#window = joined.length > WINDOW ? Buffer.from(joined.subarray(joined.length - WINDOW)) : joined;
    }
    return out;
  }
}

/** A complete data message, decompressed. */
export interface Message {
  opcode: number;
  compressed: boolean;
  data: Buffer;
}

/**
 * Frames into messages: fragments joined (control frames may come between them),
 * compressed ones inflated. A message over `maxBytes`, or one that cannot be
 * inflated, makes the direction unreadable (`broken`): with context takeover,
 * nothing after it could be read either.
 */
export class MessageReader {
  #opcode = -1;
  #compressed = false;
  #parts: Buffer[] = [];
  #size = 0;
  broken = false;

  constructor(
    private readonly inflater: MessageInflater | null,
    private readonly maxBytes: number,
  ) {}

  /** The message this frame completes, or null (a fragment, a control frame, or unreadable). */
  frame(frame: Frame): Message | null {
    if (frame.opcode >= OPCODE.close) return null;
    if (frame.opcode !== OPCODE.continuation) {
      this.#opcode = frame.opcode;
      this.#compressed = frame.rsv1 && this.inflater !== null;
      this.#parts = [];
      this.#size = 0;
    }
    if (frame.payload === null || (this.#size += frame.payload.length) > this.maxBytes) this.broken = true;
    if (this.broken) return null;
    this.#parts.push(frame.payload!);
    if (!frame.fin) return null;
    const payload = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts);
    this.#parts = [];
    try {
      return { opcode: this.#opcode, compressed: this.#compressed, data: this.#compressed ? this.inflater!.inflate(payload) : payload };
    } catch {
      this.broken = true;
      return null;
    }
  }
}

/** A frame the sidecar itself sends to the caller (unmasked, as a server's are). */
export function serverFrame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (n >= 126 && n < 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else if (n >= 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

/** A close frame with a status code and a short reason. */
export function closeFrame(code: number, reason: string): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return serverFrame(OPCODE.close, payload);
}
