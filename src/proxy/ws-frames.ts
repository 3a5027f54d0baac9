import { Z_BUF_ERROR, Z_OK, Z_STREAM_END, Z_SYNC_FLUSH, ZStream, zlibInflate, zlibInflateInit2, zlibInflateReset } from 'pako';

/**
 * WebSocket framing (RFC 6455) and permessage-deflate (RFC 7692), for reading
 * copies of what crosses the sidecar. Nothing here writes to a socket.
 */

export const OPCODE = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

export interface Frame {
  fin: boolean;
  /** permessage-deflate's "compressed" bit, meaningful on a message's first frame. */
  rsv1: boolean;
  /** RSV2 or RSV3: no extension in use gives them a meaning. */
  rsv23: boolean;
  masked: boolean;
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
      const rsv23 = (head[0]! & 0x30) !== 0;
      const opcode = head[0]! & 0x0f;
      const bits = { fin, rsv1, rsv23, masked, opcode };
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
        this.onFrame({ ...bits, payload: null, raw: null, size: total, oversized: true });
        if (this.#skip > 0) return;
        continue;
      }
      if (!this.opts.keepRaw && length > this.opts.maxPayload) {
        // Too large to read: let it pass without holding it.
        const skipped: Frame = { ...bits, payload: null, raw: null, size: offset + length };
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
      this.onFrame({ ...bits, payload, raw: this.opts.keepRaw ? bytes : null, size: offset + length });
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

/**
 * What the upstream agreed to in its 101, per direction: whether the sender
 * resets its DEFLATE context per message, and the window it compresses in
 * (the receiver refuses a distance past it, so the sidecar's reader must too).
 */
export interface Deflate {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  serverWindowBits: number;
  clientWindowBits: number;
}

/** permessage-deflate as accepted in `sec-websocket-extensions`, or null when not in use. */
export function acceptedDeflate(header: string | string[] | undefined): Deflate | null {
  for (const ext of String(header ?? '').split(',')) {
    const [name, ...params] = ext.split(';').map((p) => p.trim().toLowerCase());
    if (name !== 'permessage-deflate') continue;
    const values = new Map(params.map((p) => [p.split('=')[0]!.trim(), p.split('=')[1]?.trim().replace(/^"|"$/g, '')]));
    const bits = (key: string): number => {
      const n = Number(values.get(key));
      return Number.isInteger(n) && n >= 8 && n <= 15 ? n : 15;
    };
    return {
      serverNoContextTakeover: values.has('server_no_context_takeover'),
      clientNoContextTakeover: values.has('client_no_context_takeover'),
      serverWindowBits: bits('server_max_window_bits'),
      clientWindowBits: bits('client_max_window_bits'),
    };
  }
  return null;
}

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const OUT_CHUNK = 64 * 1024;
/** zlib's `data_type` bit: the inflater stopped where a block ends, waiting for the next block's header. */
const AT_BLOCK_BOUNDARY = 128;

/** Why a compressed message could not be read as the peer reads it. */
export class InflateError extends Error {
  constructor(
    message: string,
    /** Its output passed the bound: 1009, not 1008. */
    readonly tooBig = false,
  ) {
    super(message);
  }
}

/**
 * One direction's compressed messages, inflated as one DEFLATE stream, as the
 * receiving peer does (RFC 7692): each message's payload plus 00 00 ff ff,
 * the context carried into the next unless the sender resets it. A message
 * must leave the stream where a block ends: if it stopped inside one, the
 * peer would read the next message's first bytes as the rest of that block
 * while a reader starting afresh would read them as a new block, so the two
 * could see different messages. Such a message, a final block, or bytes zlib
 * refuses (a distance past the window) are an InflateError. zlib's own state
 * tells where a block ends (`data_type`), which Node's zlib does not expose:
 * hence pako, a port of zlib, here.
 */
export class MessageInflater {
  readonly #strm = new ZStream();
  /** Where zlib writes; what it wrote is copied out, so small messages cost no large buffer each. */
  readonly #scratch = new Uint8Array(OUT_CHUNK);
  #broken = false;

  constructor(
    private readonly noContextTakeover: boolean,
    private readonly windowBits: number,
    private readonly maxBytes: number,
  ) {
    zlibInflateInit2(this.#strm, -windowBits);
  }

  /** The message's bytes; throws InflateError, after which the direction cannot be read. */
  inflate(payload: Buffer): Buffer {
    if (this.#broken) throw new InflateError('an earlier message could not be read');
    const strm = this.#strm;
    if (this.noContextTakeover) zlibInflateReset(strm);
    strm.input = Buffer.concat([payload, TAIL]);
    strm.next_in = 0;
    strm.avail_in = strm.input.length;
    const out: Buffer[] = [];
    let size = 0;
    try {
      do {
        strm.output = this.#scratch;
        strm.next_out = 0;
        strm.avail_out = OUT_CHUNK;
        const status = zlibInflate(strm, Z_SYNC_FLUSH);
        if (status === Z_STREAM_END) throw new InflateError('a final DEFLATE block');
        if (status !== Z_OK && status !== Z_BUF_ERROR) throw new InflateError(strm.msg || `zlib status ${status}`);
        if ((size += strm.next_out) > this.maxBytes) throw new InflateError('inflates past the bound', true);
        if (strm.next_out > 0) out.push(Buffer.from(this.#scratch.subarray(0, strm.next_out)));
      } while (strm.avail_out === 0 || strm.avail_in > 0);
      if ((strm.data_type & AT_BLOCK_BOUNDARY) === 0) throw new InflateError('ends inside a DEFLATE block');
    } catch (err) {
      this.#broken = true;
      throw err;
    } finally {
      strm.input = EMPTY;
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out, size);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * What RFC 6455 and 7692 forbid in a client's frame, which a server fails the
 * connection on (so the sidecar must not read such a frame its own way and
 * forward it): null when the frame is well formed.
 */
export function clientFrameError(frame: Frame, inMessage: boolean, deflate: boolean): string | null {
  const { opcode } = frame;
  if (!frame.masked) return 'an unmasked client frame';
  if (frame.rsv23) return 'RSV2 or RSV3 set';
  if (opcode >= OPCODE.close) {
    if (opcode > OPCODE.pong) return `reserved opcode ${opcode}`;
    if (!frame.fin || frame.rsv1 || (frame.payload?.length ?? Infinity) > 125) return 'a fragmented, compressed or long control frame';
    return null;
  }
  if (opcode > OPCODE.binary) return `reserved opcode ${opcode}`;
  if (opcode === OPCODE.continuation ? !inMessage : inMessage) return 'fragments out of order';
  if (frame.rsv1 && (opcode === OPCODE.continuation || !deflate)) return 'RSV1 where permessage-deflate gives it no meaning';
  return null;
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
 * inflated, makes the direction unreadable (`broken`, and why): with context
 * takeover, nothing after it could be read either.
 */
export class MessageReader {
  #opcode = -1;
  #compressed = false;
  #parts: Buffer[] = [];
  #size = 0;
  broken: 'too big' | 'undecodable' | null = null;

  /** Whether a fragmented message has begun and not ended. */
  get inMessage(): boolean {
    return this.#opcode !== -1;
  }

  constructor(
    private readonly inflater: MessageInflater | null,
    private readonly maxBytes: number,
  ) {}

  /** The message this frame completes, or null (a fragment, a control frame, or unreadable). */
  frame(frame: Frame): Message | null {
    if (frame.opcode >= OPCODE.close || this.broken) return null;
    if (frame.opcode !== OPCODE.continuation) {
      this.#opcode = frame.opcode;
      this.#compressed = frame.rsv1 && this.inflater !== null;
      this.#parts = [];
      this.#size = 0;
    }
    if (frame.payload === null || (this.#size += frame.payload.length) > this.maxBytes) {
      this.broken = 'too big';
      return null;
    }
    this.#parts.push(frame.payload);
    if (!frame.fin) return null;
    const payload = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts);
    const opcode = this.#opcode;
    this.#parts = [];
    this.#opcode = -1;
    try {
      return { opcode, compressed: this.#compressed, data: this.#compressed ? this.inflater!.inflate(payload) : payload };
    } catch (err) {
      if (!(err instanceof InflateError)) throw err;
      this.broken = err.tooBig ? 'too big' : 'undecodable';
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
