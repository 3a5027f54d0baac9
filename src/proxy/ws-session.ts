import type { IncomingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import { ProxyError } from '../core/errors.js';
import type { Ledger, Reservation } from '../usage/ledger.js';
import { estimate } from '../policy/admission.js';
import type { Logger } from '../core/logger.js';
import { scanMessage, ScanError } from '../policy/body-scan.js';
import { ModelPolicy } from '../policy/models.js';
import type { ToolPolicy } from '../policy/tools.js';
import { eventObject, mayHoldUsage, readEvent, unknownReading } from '../usage/usage.js';
import { acceptedDeflate, clientFrameError, closeFrame, FrameParser, MessageInflater, MessageReader, OPCODE, serverFrame, type Frame, type Message } from './ws-frames.js';

/** What a Responses WebSocket session answers to: the budget, the model list, the bounds of inspection. */
export interface WsPolicy {
  /** The port's provider, whose line the turns are counted on. */
  provider: string;
  ledger: Ledger;
  models: ModelPolicy | null;
  /** Hosted mcp tools a `response.create` may name (ALLOWED_MCP_SERVERS). */
  tools: ToolPolicy;
  /** Largest caller message held to be checked (MAX_BODY_BYTES): past it, 1009. */
  maxMessageBytes: number;
  /** Largest upstream message inspected for usage: past it, the rest of the session counts as unknown. */
  maxInspectBytes: number;
  /** A turn's reserved output when it sets no maximum (RESERVE_TOKENS). */
  reserveTokens: number;
  logger: Logger;
}

// RFC 6455 close codes.
const PROTOCOL_ERROR = 1002;
const POLICY_VIOLATION = 1008;
const MESSAGE_TOO_BIG = 1009;

/** Turns sent and not yet answered, past which the socket closes: Codex keeps one. */
const MAX_UNANSWERED = 1024;

/** A `response.create` sent upstream: its hold on the budget until its response reports usage. */
interface Turn {
  reservation: Reservation;
  model: string | undefined;
}

const responseIdOf = (event: Record<string, unknown>): string | undefined => {
  const response = event.response;
  const id = response && typeof response === 'object' ? (response as { id?: unknown }).id : undefined;
  return typeof id === 'string' ? id : undefined;
};

/**
 * The two directions of an upgraded Responses WebSocket, once the upstream said 101.
 *
 * Upstream to caller, every byte passes as it comes; a copy is read (frames,
 * permessage-deflate) for the events that start and end responses. Caller to
 * upstream, each data message is held until complete and read as the upstream
 * reads it (one inflate stream, ws-frames.ts): a `response.create` passes the
 * model list, the hosted tools and a reservation on the budget, or is not
 * sent, and the caller gets the refusal as an `error` message, slipped in
 * between two of the upstream's messages. Refusing a message the caller
 * compressed with context takeover desynchronises the upstream's inflater, so
 * the socket then closes with 1008.
 *
 * Turns are matched to responses by id. The upstream answers the caller's
 * messages in order, each with `response.created` or an `error`: a created
 * response belongs to the oldest turn still waiting (messages before it that
 * were no turn got their answer first), an `error` to the oldest message
 * waiting; from then on only the response id says which turn a usage settles.
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
  const { ledger } = policy;

  /**
   * Caller messages sent upstream and unanswered, in order: a turn, or how many
   * messages that are none came in a row (a count, so they cost no memory).
   */
  const waiting: (Turn | number)[] = [];
  let turnsWaiting = 0;
  const nextTurn = (): Turn | undefined => {
    const turn = waiting.shift() as Turn | undefined;
    if (turn) turnsWaiting--;
    return turn;
  };
  /** Turns whose response was created, by response id. */
  const responses = new Map<string, Turn>();

  // --- upstream to caller: forward, and read a copy ---
  const fromUpstream = new MessageReader(
    deflate ? new MessageInflater(deflate.serverNoContextTakeover, deflate.serverWindowBits, policy.maxInspectBytes) : null,
    policy.maxInspectBytes,
  );
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
      const message = fromUpstream.frame(frame);
      if (message) onUpstreamMessage(message);
    },
    { keepRaw: false, maxPayload: policy.maxInspectBytes },
  );

  function onUpstreamMessage(message: Message): void {
    if (message.opcode !== OPCODE.text) return;
    const text = message.data.toString('utf8');
    // Only the events that start or end a response, or refuse a message, are parsed; deltas are not.
    if (!text.includes('"response.created"') && !text.includes('"error"') && !mayHoldUsage(text)) return;
    const event = eventObject(text);
    if (!event) return;
    const id = responseIdOf(event);
    if (event.type === 'response.created') {
      // Messages that were no turn, still waiting before this one, got their answer (or none) already.
      while (typeof waiting[0] === 'number') waiting.shift();
      const turn = nextTurn();
      if (turn && id !== undefined) responses.set(id, turn);
      else turn?.reservation.record('websocket', unknownReading(turn.model));
      return;
    }
    const reading = readEvent(event);
    if (reading) {
      const turn = id === undefined ? undefined : responses.get(id);
      if (turn) {
        responses.delete(id!);
        turn.reservation.record('websocket', reading);
      } else {
        ledger.record(reqId, policy.provider, 'websocket', reading); // a response no turn of ours started: counted all the same
      }
    } else if (event.type === 'error' && id === undefined) {
      // The upstream refused the oldest message waiting: if a turn, no response, no tokens.
      if (typeof waiting[0] === 'number') {
        if (--(waiting[0] as number) === 0) waiting.shift();
      } else {
        nextTurn()?.reservation.release();
      }
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

  /** Nothing more of the caller's goes upstream: the socket closes with `code` once the caller is between messages. */
  function closeWith(code: number, reason: string): void {
    policy.logger.info({ reqId, code, reason }, 'websocket closed by the sidecar');
    inject(closeFrame(code, reason), true);
  }

  // --- caller to upstream: hold each message until it is read and admitted ---
  const fromCaller = new MessageReader(
    deflate ? new MessageInflater(deflate.clientNoContextTakeover, deflate.clientWindowBits, policy.maxMessageBytes) : null,
    policy.maxMessageBytes,
  );
  let held: Buffer[] = [];

  const callerFrames = new FrameParser(
    (frame: Frame) => {
      // A refusal that closes is queued (it waits for a boundary in the upstream's
      // stream): nothing more of the caller's goes upstream, nor a second close.
      if (closeAfterInjections) return;
      // Declared past MAX_BODY_BYTES: closed at its header, guarded or not, never buffered.
      if (frame.oversized) return closeWith(MESSAGE_TOO_BIG, 'message too big to check');
      const malformed = clientFrameError(frame, fromCaller.inMessage, deflate !== null);
      if (malformed) return closeWith(PROTOCOL_ERROR, malformed);
      if (frame.opcode >= OPCODE.close) return toUpstream(frame.raw!); // control frames may come between fragments
      held.push(frame.raw!);
      const message = fromCaller.frame(frame);
      if (fromCaller.broken === 'too big') return closeWith(MESSAGE_TOO_BIG, 'message too big to check');
      // It would not mean to the upstream what it means here (it ends inside a DEFLATE block, say).
      if (fromCaller.broken) return closeWith(POLICY_VIOLATION, 'message not read as the upstream reads it');
      if (!message) return;
      if (turnsWaiting >= MAX_UNANSWERED) return closeWith(POLICY_VIOLATION, 'too many turns waiting for an answer');
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
      if (message.compressed && !deflate?.clientNoContextTakeover) closeWith(POLICY_VIOLATION, refusal.code);
    },
    { keepRaw: true, maxPayload: policy.maxMessageBytes },
  );

  /**
   * The gate for one caller message: null to send it upstream, or why not.
   * Binary messages are read like text (the upstream may parse either). A
   * message that is not one strict JSON object could hide a `response.create`
   * read another way upstream: refused. Any `type` of `response.create` makes
   * it a turn, whose every model and hosted tool is checked and which holds a
   * reservation, a prewarm too (only MAX_REQUESTS leaves it out).
   */
  function admit(message: Message): ProxyError | null {
    let scan;
    try {
      scan = scanMessage(message.data, policy.maxMessageBytes);
    } catch (err) {
      if (!(err instanceof ScanError)) throw err;
      return policy.models ? ModelPolicy.unreadable(err.message) : new ProxyError('tool_not_allowed', `The message's tools cannot be checked (${err.message}), so it was refused.`);
    }
    if (!scan.types.includes('response.create')) {
      if (typeof waiting.at(-1) === 'number') (waiting[waiting.length - 1] as number)++;
      else waiting.push(1);
      return null;
    }
    try {
      policy.models?.checkAll(scan.models);
      policy.tools.check(scan.tools);
      // A prewarm only when every `generate` says so: duplicates cannot make a turn free.
      const prewarm = scan.generate.length > 0 && scan.generate.every((g) => g === false);
      const reservation = ledger.reserve(reqId, estimate(scan, message.data.length, policy.reserveTokens), !prewarm, policy.provider);
      waiting.push({ reservation, model: scan.models.find((m): m is string => typeof m === 'string') });
      turnsWaiting++;
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
    // Turns sent and never answered, or answered without usage: each is charged its reservation.
    for (const turn of [...waiting.splice(0), ...responses.values()]) {
      if (typeof turn !== 'number') turn.reservation.record('websocket', unknownReading(turn.model));
    }
    responses.clear();
  });
}
