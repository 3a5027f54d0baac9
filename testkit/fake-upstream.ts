import { EventEmitter, once } from 'node:events';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { WebSocketServer, type WebSocket } from 'ws';
import { anthropicError, anthropicMessage, messageEvents } from './fake-anthropic.js';
import { GEMINI_PATH, geminiChunks, geminiError, geminiResponse } from './fake-gemini.js';
import type { TestPki } from './test-ca.js';

/**
 * A fake OpenAI API: enough of /v1/models, /v1/responses (JSON, SSE and the
 * Responses WebSocket), /v1/chat/completions and /v1/files for the real Codex
 * CLI and openai SDK, recording what it received; and Anthropic's
 * /v1/messages (fake-anthropic.ts) for Claude Code and its SDK, and Gemini's
 * models/{model}:{method} (fake-gemini.ts), and OpenAI's routes as Azure
 * serves them (/openai/v1/…, /openai/deployments/{deployment}/…). A request header
 * `x-fake: k=v,k=v` makes it misbehave:
 *   status=401|500|…   answer that status (401 echoes the masked key like OpenAI)
 *   gzip               gzip an error body
 *   delay=MS           wait before the response head
 *   events=N           stream N text deltas (default 3)
 *   interval=MS        between stream events (default 0)
 *   reset=N            destroy the socket after N stream events
 *   hold               send the first stream event, then wait for release()
 *   bigheader=N        add a response header of N bytes
 *   bytes=N            GET /v1/fake/bytes: N bytes of body
 *   input=N,output=N,cached=N,reasoning=N   the usage it reports (default 5 in, one per delta out)
 *   cache_read=N,cache_write=N               Anthropic's cache usage (default 0)
 */

export const FAKE_TEXT = 'Hello from the fake upstream.';

export interface Received {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
  websocket: boolean;
  messages: string[];
}

export interface FakeUpstream extends EventEmitter {
  /** Base URL callers use, e.g. https://api.openai.test:PORT */
  url: string;
  port: number;
  received: Received[];
  /** TCP connections and TLS handshakes accepted so far: tunnels, seen from this end. */
  connections: number;
  /** Connections open now, and the most open at once (reset it to measure a run). */
  openConnections: number;
  maxOpenConnections: number;
  tlsHandshakes: number;
  /** Streams whose caller (the sidecar) went away before the end. */
  streamsCancelled: number;
  /** Lets every stream waiting under `hold` go on. */
  release(): void;
  close(): Promise<void>;
}

export interface FakeOptions {
  pki?: TestPki;
  /** Host name in `url` (default api.openai.test with TLS, 127.0.0.1 without). */
  hostname?: string;
  listenHost?: string;
  /** Port to listen on (default: any free one). */
  port?: number;
  /** How long idle connections are kept (Node's default is 5 s; OpenAI's is longer). */
  keepAliveTimeoutMs?: number;
  /**
   * Keep every request in `received` (default). Off for load: a million kept
   * bodies make this process's own major GCs the tail of whatever is measured.
   */
  keepReceived?: boolean;
}

type Behaviour = Record<string, string>;

function behaviour(headers: IncomingHttpHeaders): Behaviour {
  const raw = headers['x-fake'];
  const out: Behaviour = {};
  for (const part of String(raw ?? '').split(',')) {
    const [k, v = 'true'] = part.split('=').map((s) => s.trim());
    if (k) out[k] = v;
  }
  return out;
}

/** OpenAI's mask: what its 401 says about the key it was sent. */
export function maskKey(key: string): string {
  return key.length <= 12 ? '****' : `${key.slice(0, 8)}${'*'.repeat(key.length - 12)}${key.slice(-4)}`;
}

function bearer(headers: IncomingHttpHeaders): string {
  return /^Bearer (.*)$/.exec(headers.authorization ?? '')?.[1] ?? '';
}

function errorFor(status: number, headers: IncomingHttpHeaders): object {
  if (status === 401) {
    return {
      error: {
        message: `Incorrect API key provided: ${maskKey(bearer(headers))}. You can find your API key at https://platform.openai.com/account/api-keys.`,
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      },
    };
  }
  return { error: { message: `Fake upstream error ${status}`, type: 'server_error', param: null, code: null } };
}

let ids = 0;
const nextId = (prefix: string): string => `${prefix}_fake${++ids}`;

export interface FakeUsage {
  input: number;
  output: number;
  cached: number;
  reasoning: number;
}

function usageFor(b: Behaviour, deltas: string[]): FakeUsage {
  const n = (k: string, d: number): number => (b[k] === undefined ? d : Number(b[k]));
  return { input: n('input', 5), output: n('output', deltas.length), cached: n('cached', 0), reasoning: n('reasoning', 0) };
}

/** The Responses API event sequence that both Codex and the SDK accept. */
export function responseEvents(model: string, deltas: string[], u: FakeUsage = { input: 5, output: deltas.length, cached: 0, reasoning: 0 }): object[] {
  const id = nextId('resp');
  const itemId = nextId('msg');
  const text = deltas.join('');
  const base = { id, object: 'response', created_at: Math.floor(Date.now() / 1000), model };
  const item = { id: itemId, type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text, annotations: [] }] };
  const usage = { input_tokens: u.input, input_tokens_details: { cached_tokens: u.cached }, output_tokens: u.output, output_tokens_details: { reasoning_tokens: u.reasoning }, total_tokens: u.input + u.output };
  const events: object[] = [
    { type: 'response.created', response: { ...base, status: 'in_progress', output: [] } },
    { type: 'response.in_progress', response: { ...base, status: 'in_progress', output: [] } },
    { type: 'response.output_item.added', output_index: 0, item: { ...item, status: 'in_progress', content: [] } },
    { type: 'response.content_part.added', item_id: itemId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } },
    ...deltas.map((delta) => ({ type: 'response.output_text.delta', item_id: itemId, output_index: 0, content_index: 0, delta })),
    { type: 'response.output_text.done', item_id: itemId, output_index: 0, content_index: 0, text },
    { type: 'response.content_part.done', item_id: itemId, output_index: 0, content_index: 0, part: { type: 'output_text', text, annotations: [] } },
    { type: 'response.output_item.done', output_index: 0, item },
    { type: 'response.completed', response: { ...base, status: 'completed', output: [item], usage } },
  ];
  return events.map((e, i) => ({ ...e, sequence_number: i }));
}

function deltasFor(b: Behaviour): string[] {
  const n = Number(b.events ?? 0);
  return n > 0 ? Array.from({ length: n }, (_, i) => `tok${i} `) : FAKE_TEXT.split(/(?<= )/);
}

const chatUsage = (u: FakeUsage): object => ({
  prompt_tokens: u.input,
  completion_tokens: u.output,
  total_tokens: u.input + u.output,
  prompt_tokens_details: { cached_tokens: u.cached },
  completion_tokens_details: { reasoning_tokens: u.reasoning },
});

/** Chat chunks; with `include_usage`, the last one carries usage and no choices, as OpenAI sends it. */
function chatChunks(model: string, deltas: string[], u: FakeUsage | null): object[] {
  const base = { id: nextId('chatcmpl'), object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model };
  return [
    { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
    ...deltas.map((content) => ({ ...base, choices: [{ index: 0, delta: { content }, finish_reason: null }] })),
    { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
    ...(u ? [{ ...base, choices: [], usage: chatUsage(u) }] : []),
  ];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startFakeUpstream(opts: FakeOptions = {}): Promise<FakeUpstream> {
  const fake = new EventEmitter() as FakeUpstream;
  fake.received = [];
  fake.connections = 0;
  fake.openConnections = 0;
  fake.maxOpenConnections = 0;
  fake.tlsHandshakes = 0;
  fake.streamsCancelled = 0;
  const sockets = new Set<Socket>();
  // A plain deferred: Promise.withResolvers needs Node 22.
  let releaseHeld = (): void => undefined;
  const hold = (): Promise<void> => new Promise<void>((resolve) => (releaseHeld = resolve));
  let held = hold();
  fake.release = () => {
    releaseHeld();
    held = hold();
  };

  const server: Server = opts.pki
    ? createHttpsServer({ key: opts.pki.key, cert: opts.pki.cert }, (req, res) => serve(req, res))
    : createHttpServer((req, res) => serve(req, res));
  // A caller (the sidecar) may abort mid-body on purpose: that ends the exchange, not the fake.
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch(() => {
      fake.emit('request-aborted');
      res.destroy();
    });
  };
  server.on('connection', (s: Socket) => {
    fake.connections++;
    fake.maxOpenConnections = Math.max(fake.maxOpenConnections, ++fake.openConnections);
    sockets.add(s);
    s.on('close', () => {
      fake.openConnections--;
      sockets.delete(s);
    });
  });
  server.on('secureConnection', () => fake.tlsHandshakes++);
  if (opts.keepAliveTimeoutMs) server.keepAliveTimeout = opts.keepAliveTimeoutMs;

  // Every message compressed, small ones too, so the sidecar's readers meet compression on each event.
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: { threshold: 0 } });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const rec = record(req, Buffer.alloc(0), true);
    const b = behaviour(req.headers);
    if (b.status) {
      const body = JSON.stringify(errorFor(Number(b.status), req.headers));
      socket.end(`HTTP/1.1 ${b.status} Refused\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => serveWebSocket(ws, rec, b));
  });

  function record(req: IncomingMessage, body: Buffer, websocket: boolean): Received {
    const rec: Received = {
      method: req.method ?? '',
      path: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body,
      websocket,
      messages: [],
    };
    if (opts.keepReceived !== false) fake.received.push(rec);
    fake.emit('request', rec);
    return rec;
  }

  function serveWebSocket(ws: WebSocket, rec: Received, b: Behaviour): void {
    ws.on('close', () => fake.emit('websocket-closed'));
    ws.on('message', (data) => {
      const text = data.toString();
      rec.messages.push(text);
      let msg: { type?: string; generate?: boolean; model?: string };
      try {
        msg = JSON.parse(text);
      } catch {
        ws.send(JSON.stringify({ type: 'error', error: { message: 'not JSON' } }));
        return;
      }
      if (msg.type !== 'response.create') {
        ws.send(JSON.stringify({ type: 'echo', received: msg }));
        return;
      }
      const deltas = deltasFor(b);
      const events = responseEvents(msg.model ?? 'gpt-5.5', deltas, usageFor(b, deltas));
      // A prewarm (generate:false) wants only created and completed, with an id.
      const out = msg.generate === false ? [events[0]!, events[events.length - 1]!] : events;
      for (const e of out) ws.send(JSON.stringify(e));
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    record(req, body, false);
    const b = behaviour(req.headers);
    if (b.delay) await sleep(Number(b.delay));
    const url = new URL(req.url ?? '/', 'http://fake');
    // Azure serves OpenAI's API under /openai/v1/, /openai/deployments/{deployment}/ and /openai/.
    const azure = /^\/openai\/(?:v1\/|deployments\/([^/]+)\/)?(.+)$/.exec(url.pathname);
    const path = azure ? `/v1/${azure[2]}` : url.pathname;

    if (b.status) {
      const status = Number(b.status);
      const error = path.startsWith('/v1/messages') ? anthropicError(status) : GEMINI_PATH.test(path) ? geminiError(status) : errorFor(status, req.headers);
      let payload = Buffer.from(JSON.stringify(error));
      const headers: Record<string, string> = { 'content-type': 'application/json', 'x-request-id': 'req_upstream' };
      if (b.gzip) {
        payload = gzipSync(payload);
        headers['content-encoding'] = 'gzip';
      }
      res.writeHead(status, headers).end(payload);
      return;
    }

    let json: Record<string, unknown> = {};
    if (req.headers['content-type']?.includes('json') && body.length > 0) {
      try {
        json = JSON.parse(body.toString());
      } catch {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"message":"bad json"}}');
        return;
      }
    }
    const model = String(azure?.[1] ?? json.model ?? 'gpt-5.5');
    const rid = String(req.headers['x-request-id'] ?? '');
    if (b.bigheader) res.setHeader('x-fake-big', 'b'.repeat(Number(b.bigheader)));

    if (req.method === 'POST' && path === '/v1/messages') {
      const deltas = deltasFor(b);
      const { input, output } = usageFor(b, deltas);
      const u = { input, output, cacheRead: Number(b.cache_read ?? 0), cacheWrite: Number(b.cache_write ?? 0) };
      if (json.stream) return stream(res, b, messageEvents(model, deltas, u).map((e) => `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`), rid);
      return sendJson(res, anthropicMessage(model, deltas, u));
    }
    const google = req.method === 'POST' ? GEMINI_PATH.exec(path) : null;
    if (google) {
      const [, geminiModel, method] = google as unknown as [string, string, string];
      const deltas = deltasFor(b);
      const u = usageFor(b, deltas);
      if (method === 'countTokens') return sendJson(res, { totalTokens: u.input });
      if (method === 'embedContent') return sendJson(res, { embedding: { values: [0.1, 0.2] } });
      if (method === 'generateContent') return sendJson(res, geminiResponse(geminiModel, deltas, u));
      const chunks = geminiChunks(geminiModel, deltas, u);
      if (url.searchParams.get('alt') === 'sse') return stream(res, b, chunks.map((c) => `data: ${JSON.stringify(c)}\r\n\r\n`), rid);
      // Without alt=sse the stream is one JSON array, written an element at a time.
      res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': 'req_upstream' });
      for (const [i, c] of chunks.entries()) res.write(`${i === 0 ? '[' : ',\r\n'}${JSON.stringify(c)}`);
      res.end(']');
      return;
    }
    if (req.method === 'POST' && path === '/v1/messages/count_tokens') return sendJson(res, { input_tokens: usageFor(b, []).input });
    if (req.method === 'POST' && path === '/v1/responses') {
      const deltas = deltasFor(b);
      const events = responseEvents(model, deltas, usageFor(b, deltas));
      if (json.stream) return stream(res, b, events.map((e) => `event: ${(e as { type: string }).type}\ndata: ${JSON.stringify(e)}\n\n`), rid);
      const done = events[events.length - 1] as { response: object };
      return sendJson(res, done.response);
    }
    if (req.method === 'POST' && path === '/v1/chat/completions') {
      const deltas = deltasFor(b);
      const u = usageFor(b, deltas);
      if (json.stream) {
        const withUsage = (json.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
        return stream(res, b, [...chatChunks(model, deltas, withUsage ? u : null).map((c) => `data: ${JSON.stringify(c)}\n\n`), 'data: [DONE]\n\n'], rid);
      }
      return sendJson(res, {
        id: nextId('chatcmpl'),
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model,
        choices: [{ index: 0, message: { role: 'assistant', content: deltas.join(''), refusal: null }, finish_reason: 'stop' }],
        usage: chatUsage(u),
      });
    }
    if (req.method === 'POST' && path === '/v1/embeddings') {
      const u = usageFor(b, []);
      return sendJson(res, { object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2] }], model, usage: { prompt_tokens: u.input, total_tokens: u.input } });
    }
    if (req.method === 'GET' && path === '/v1/models') {
      // Codex asks with ?client_version= and wants {models:[…]}; the SDK wants a list.
      if (url.searchParams.has('client_version')) return sendJson(res, { models: [] });
      return sendJson(res, { object: 'list', data: [{ id: 'gpt-5.5', object: 'model', created: 0, owned_by: 'fake' }] });
    }
    if (req.method === 'POST' && path === '/v1/files') {
      const text = body.toString('latin1');
      return sendJson(res, {
        id: nextId('file'),
        object: 'file',
        bytes: body.length,
        created_at: Math.floor(Date.now() / 1000),
        filename: /filename="([^"]*)"/.exec(text)?.[1] ?? 'unknown',
        purpose: /name="purpose"\r\n\r\n([^\r]*)/.exec(text)?.[1] ?? 'unknown',
        status: 'processed',
      });
    }
    if (req.method === 'GET' && path === '/v1/fake/bytes') {
      const total = Number(b.bytes ?? 0);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
      const block = Buffer.alloc(64 * 1024, 97);
      for (let sent = 0; sent < total; sent += block.length) {
        if (!res.write(block.subarray(0, Math.min(block.length, total - sent)))) await once(res, 'drain');
      }
      res.end();
      return;
    }
    sendJson(res, { method: req.method, path: req.url, bytes: body.length });
  }

  async function stream(res: ServerResponse, b: Behaviour, frames: string[], rid: string): Promise<void> {
    const interval = Number(b.interval ?? 0);
    const resetAfter = b.reset === undefined ? Infinity : Number(b.reset);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-request-id': 'req_upstream' });
    let cancelled = false;
    res.on('close', () => {
      if (!res.writableFinished) {
        cancelled = true;
        fake.streamsCancelled++;
        fake.emit('stream-cancelled');
      }
    });
    for (let i = 0; i < frames.length; i++) {
      if (cancelled) return;
      if (i >= resetAfter) {
        res.socket?.destroy();
        return;
      }
      // Each frame carries its send time (epoch ms, sub-ms), so callers can measure per-event
      // delay, and the request id it answers, so callers can tell their stream from another's.
      res.write(frames[i]!.replace(/^data: \{/m, `data: {"sent_at":${performance.timeOrigin + performance.now()},"rid":${JSON.stringify(rid)},`));
      if (i === 0 && b.hold) await held;
      if (interval > 0 && i < frames.length - 1) await sleep(interval);
    }
    res.end();
  }

  function sendJson(res: ServerResponse, value: unknown): void {
    const body = JSON.stringify(value);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-request-id': 'req_upstream' });
    res.end(body);
  }

  const listenHost = opts.listenHost ?? '127.0.0.1';
  server.listen(opts.port ?? 0, listenHost);
  await once(server, 'listening');
  fake.port = (server.address() as AddressInfo).port;
  const hostname = opts.hostname ?? (opts.pki ? 'api.openai.test' : '127.0.0.1');
  fake.url = `${opts.pki ? 'https' : 'http'}://${hostname}:${fake.port}`;
  fake.close = async () => {
    for (const client of wss.clients) client.terminate();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return fake;
}
