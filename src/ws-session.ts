import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { ProxyError } from './errors.js';
import type { Ledger } from './ledger.js';
import type { Logger } from './logger.js';
import { scanMessage, ScanError } from './policy/body-scan.js';
import { ModelPolicy } from './policy/models.js';
import type { ToolPolicy } from './policy/tools.js';
import { mayHoldUsage, readEvent, unknownReading } from './usage.js';
import { acceptedDeflate, closeFrame, FrameParser, MessageInflater, MessageReader, OPCODE, serverFrame, type Frame, type Message } from './ws-frames.js';

/** What a Responses WebSocket session answers to: the budget, the model list, the bounds of inspection. */
export interface WsPolicy {
  ledger: Ledger;
  models: ModelPolicy | null;
  /** Hosted mcp tools a `response.create` may name (ALLOWED_MCP_SERVERS). */
  tools: ToolPolicy;
  /** Largest caller message held to be checked (MAX_BODY_BYTES): past it, 1009. */
  maxMessageBytes: number;
  /** Largest upstream message inspected for usage: past it, the rest of the session counts as unknown. */
  maxInspectBytes: number;
  logger: Logger;
}

// RFC 6455 close codes.
const POLICY_VIOLATION = 1008;
const MESSAGE_TOO_BIG = 1009;

/**
 * The two directions of an upgraded Responses WebSocket, once the upstream said 101.
 *
 * Upstream to caller, every byte passes as it comes; a copy is read (frames,
 * permessage-deflate) for the terminal events that carry usage. Caller to
 * upstream, each data message is held until complete and read: a
 * `response.create` passes the model list and the budget or is not sent, and
 * the caller gets the refusal as an `error` message, slipped in between two of
 * the upstream's messages. Refusing a message the caller compressed with
 * context takeover desynchronises the upstream's inflater, so the socket then
 * closes with 1008.
 */
export function relayWebSocket(
  caller: Duplex,
  upstream: Duplex,
  upgradeHeaders: IncomingHttpHeaders,
  ex: { readonly id: string; bytesIn: number; bytesOut: number },
  policy: WsPolicy,
): void {
  const deflate = acceptedDeflate(upgradeHeaders['sec-websocket-extensions']);
  const reqId = ex.id;

  // --- upstream to caller: forward, and read a copy ---
  const fromUpstream = new MessageReader(deflate ? new MessageInflater(deflate.serverNoContextTakeover, policy.maxInspectBytes) : null, policy.maxInspectBytes);
  /** Turns sent upstream and not yet answered: whether each counts (a prewarm does not), and the model it asked for. */
  const pending: { counts: boolean; model: string | undefined }[] = [];
  let upstreamMidMessage = false;
  let upstreamReceived = 0;
  let upstreamFramed = 0;
  /** Where in the current upstream chunk a message ended first, while something waits to be slipped in. */
  let boundaryInChunk = -1;
  let chunkStart = 0;
  const injections: Buffer[] = [];
  let closeAfterInjections = false;

  const upstreamFrames = new FrameParser(
    (frame: Frame) => {
      upstreamFramed += frame.size;
      if (frame.opcode < OPCODE.close) upstreamMidMessage = !frame.fin;
      if (!upstreamMidMessage && injections.length > 0 && boundaryInChunk < 0) boundaryInChunk = upstreamFramed - chunkStart;
      if (fromUpstream.broken) return;
      const message = fromUpstream.frame(frame);
      if (message) onUpstreamMessage(message);
    },
    { keepRaw: false, maxPayload: policy.maxInspectBytes },
  );

  function onUpstreamMessage(message: Message): void {
    if (message.opcode !== OPCODE.text) return;
    const text = message.data.toString('utf8');
    const isError = text.includes('"error"');
    if (!isError && !mayHoldUsage(text)) return;
    let event: unknown;
    try {
      event = JSON.parse(text);
    } catch {
      return;
    }
    const reading = readEvent(event);
    if (reading) {
      if (pending.shift()?.counts ?? true) policy.ledger.record(reqId, 'websocket', reading);
    } else if (isError && (event as { type?: unknown }).type === 'error') {
      pending.shift(); // the upstream refused the turn itself: no response, no tokens
    }
  }

  upstream.on('data', (chunk: Buffer) => {
    ex.bytesOut += chunk.length;
    chunkStart = upstreamReceived;
    upstreamReceived += chunk.length;
    boundaryInChunk = -1;
    upstreamFrames.write(chunk);
    if (injections.length > 0 && boundaryInChunk >= 0) {
      // The caller must not see our message inside one of the upstream's.
      toCaller(chunk.subarray(0, boundaryInChunk));
      flushInjections();
      toCaller(chunk.subarray(boundaryInChunk));
    } else {
      toCaller(chunk);
    }
  });

  function toCaller(bytes: Buffer): void {
    // Ended by a refusal that closes the socket: what the upstream sends after it is not the caller's.
    if (bytes.length === 0 || caller.destroyed || caller.writableEnded) return;
    if (!caller.write(bytes)) {
      upstream.pause();
      caller.once('drain', () => upstream.resume());
    }
  }

  const atBoundary = (): boolean => !upstreamMidMessage && upstreamFramed === upstreamReceived;

  function inject(frame: Buffer, thenClose: boolean): void {
    injections.push(frame);
    closeAfterInjections ||= thenClose;
    if (atBoundary()) flushInjections();
  }

  function flushInjections(): void {
    for (const frame of injections.splice(0)) toCaller(frame);
    if (closeAfterInjections) {
      caller.end();
      upstream.destroy();
    }
  }

  // --- caller to upstream: hold each message until it is read and admitted ---
  const fromCaller = new MessageReader(deflate ? new MessageInflater(deflate.clientNoContextTakeover, policy.maxMessageBytes) : null, policy.maxMessageBytes);
  let held: Buffer[] = [];

  const callerFrames = new FrameParser(
    (frame: Frame) => {
      // A refusal that closes is queued (it waits for a boundary in the upstream's
      // stream): nothing more of the caller's goes upstream, nor a second close.
      if (closeAfterInjections) return;
      if (frame.oversized) {
        // Declared past MAX_BODY_BYTES: closed at its header, guarded or not, never buffered.
        inject(closeFrame(MESSAGE_TOO_BIG, 'message too big to check'), true);
        return;
      }
      if (frame.opcode >= OPCODE.close) return toUpstream(frame.raw!); // control frames may come between fragments
      held.push(frame.raw!);
      const message = fromCaller.frame(frame);
      if (fromCaller.broken) {
        inject(closeFrame(MESSAGE_TOO_BIG, 'message too big to check'), true);
        return;
      }
      if (!message) return;
      const frames = held;
      held = [];
      const refusal = admit(message);
      if (!refusal) {
        for (const f of frames) toUpstream(f);
        return;
      }
      policy.logger.info({ reqId, code: refusal.code }, 'websocket message refused');
      const body = JSON.stringify({ type: 'error', status: refusal.status, error: refusal });
      inject(serverFrame(OPCODE.text, Buffer.from(body)), false);
      if (message.compressed && !deflate?.clientNoContextTakeover) inject(closeFrame(POLICY_VIOLATION, refusal.code), true);
    },
    { keepRaw: true, maxPayload: policy.maxMessageBytes },
  );

  /**
   * The gate for one caller message: null to send it upstream, or why not.
   * Binary messages are read like text (the upstream may parse either). A
   * message that is not one strict JSON object could hide a `response.create`
   * read another way upstream: refused. Any `type` of `response.create` makes
   * it a turn, whose every model and hosted tool is checked.
   */
  function admit(message: Message): ProxyError | null {
    let scan;
    try {
      scan = scanMessage(message.data, policy.maxMessageBytes);
    } catch (err) {
      if (!(err instanceof ScanError)) throw err;
      return policy.models ? ModelPolicy.unreadable(err.message) : new ProxyError('tool_not_allowed', `The message's tools cannot be checked (${err.message}), so it was refused.`);
    }
    if (!scan.types.includes('response.create')) return null;
    try {
      policy.models?.checkAll(scan.models);
      policy.tools.check(scan.tools);
      // A prewarm only when every `generate` says so: duplicates cannot make a turn free.
      const turn = !(scan.generate.length > 0 && scan.generate.every((g) => g === false));
      policy.ledger.admit(turn);
      const model = scan.models.find((m): m is string => typeof m === 'string');
      pending.push({ counts: turn, model });
      return null;
    } catch (err) {
      if (err instanceof ProxyError) return err;
      throw err;
    }
  }

  caller.on('data', (chunk: Buffer) => {
    ex.bytesIn += chunk.length;
    callerFrames.write(chunk);
  });

  function toUpstream(bytes: Buffer): void {
    if (upstream.destroyed) return;
    if (!upstream.write(bytes)) {
      caller.pause();
      upstream.once('drain', () => caller.resume());
    }
  }

  // A caller that exits sends FIN: pass half-closes on, or the tunnel would stay up.
  caller.on('end', () => upstream.end());
  upstream.on('end', () => caller.end());
  upstream.on('close', () => {
    // Turns sent and never answered: a response cut short is counted, as unknown.
    for (const turn of pending.splice(0)) if (turn.counts) policy.ledger.record(reqId, 'websocket', unknownReading(turn.model));
  });
}
