/**
 * What the sidecar costs an agent, side by side with the baselines, in one run.
 *
 *   npm run bench            full: 3 rounds of 5 s, 1000 concurrent streams
 *   npm run bench -- --quick smoke: 1 round of 1 s, 100 streams (CI)
 *   npm run bench -- --only=squid,sse   some scenarios only (see ONLY)
 *
 * Everything runs on loopback: the fake upstream (plain and TLS, in this
 * process), Squid, a 10 ms-each-way relay, and each contender in its own
 * process, started fresh per measurement and alternated within every round.
 * Results: a Markdown table and JSON under bench/results/.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { WebSocket } from 'ws';
import { startFakeUpstream } from '../testkit/fake-upstream.js';
import { freePort, startSquid, waitForPort, type Squid } from '../testkit/squid.js';
import { until } from '../testkit/wait.js';
import { createTestPki, type TestPki } from '../testkit/test-ca.js';

const QUICK = process.argv.includes('--quick');
/** `--only=squid,sse`: just those scenarios (start, plain, squid, rtt, sse, anthropic, websocket, streams, cancel), to look at one closely. */
const ONLY = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',');
const runs = (key: string): boolean => !ONLY || ONLY.includes(key);
const ROUNDS = QUICK ? 1 : 3;
const SECONDS = QUICK ? 1 : 5;
const STREAMS = QUICK ? 100 : 1000;
const KEY = 'sk-proj-BENCHnotARealKey000000000000000000000000bench';
const ANTHROPIC_KEY = 'sk-ant-api03-BENCHnotARealKey0000000000000000000bench';
const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const MAIN = here('../src/main.js');
const NODE_PROXY = here('./baselines/node-proxy.js');
const EXPRESS_HPM = here('./baselines/express-hpm.js');
const LOAD = here('./load.js');
const WRK_SCRIPT = fileURLToPath(new URL('../../bench/sequential.lua', import.meta.url));
const RESULTS = fileURLToPath(new URL('../../bench/results/', import.meta.url));

// ---------- the world ----------

if (spawnSync('wrk', ['-v']).error) throw new Error('wrk is not installed: bash scripts/test.sh installs it (apt-get install wrk)');

const work = mkdtempSync(join(tmpdir(), 'api-proxy-bench-'));
const pki: TestPki = await createTestPki(join(work, 'pki'));
// Nothing kept of what they receive: a million kept bodies would make this process's GC the measured tail.
const plain = await startFakeUpstream({ keepReceived: false });
const tls = await startFakeUpstream({ pki, keepReceived: false });
const relay = await startDelayRelay(tls.port, 10);
const squid: Squid = await startSquid({
  allow: ['.openai.test', '.anthropic.test'],
  hosts: { 'api.openai.test': '127.0.0.1', 'slow.openai.test': '127.0.0.1', 'api.anthropic.test': '127.0.0.1' },
});
const trusted = new Agent({ connect: { ca: readFileSync(pki.caFile, 'utf8') } });

/** A TCP relay that holds every chunk `delayMs` in each direction: a realistic round trip. */
async function startDelayRelay(targetPort: number, delayMs: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const target = connect(targetPort, '127.0.0.1');
    for (const s of [client, target]) {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => sockets.delete(s));
    }
    const delayed = (from: Socket, to: Socket): void => {
      from.on('data', (d) => setTimeout(() => to.writable && to.write(d), delayMs));
      from.on('end', () => setTimeout(() => to.end(), delayMs));
    };
    delayed(client, target);
    delayed(target, client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

// ---------- contenders ----------

interface Running {
  url: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

interface Contender {
  name: string;
  start(): Promise<Running>;
}

/** `stopSignal`: SIGKILL for Node processes; nginx needs SIGTERM, or its workers outlive a killed master. */
async function startProcess(command: string, args: string[], env: Record<string, string>, port: number, stopSignal: NodeJS.Signals = 'SIGKILL'): Promise<Running> {
  const child: ChildProcess = spawn(command, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForPort(port);
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(stopSignal);
      await once(child, 'exit');
    },
  };
}

const direct = (url: string): Contender => ({
  name: 'direct',
  start: async () => ({ url, pid: undefined, stop: async () => undefined }),
});

/** A Node contender: `script` on a free loopback port, given the key, the upstream and `env`. */
const nodeContender = (name: string, script: string, upstreamUrl: string, env: Record<string, string>): Contender => ({
  name,
  start: async () => {
    const port = await freePort();
    return startProcess(process.execPath, [script], {
      OPENAI_API_KEY: KEY,
      UPSTREAM_URL: upstreamUrl,
      HOST: '127.0.0.1',
      PORT: String(port),
      NODE_EXTRA_CA_CERTS: pki.caFile,
      ...env,
    }, port);
  },
});

/**
 * Every spend control on, none of them binding: budgets far past what a run
 * spends, the bench's model allowed, the counted routes and the bench's own
 * (`openai:fake`, its large stream: no family of OpenAI's table, so named with the provider) forwarded, a usage log written. So the column is
 * the cost of the gate (held and scanned bodies, reservations, the log), not
 * of refusals.
 */
const GUARDED = {
  MAX_TOKENS: String(1e15),
  MAX_REQUESTS: String(1e15),
  ALLOWED_MODELS: 'gpt-5.*',
  ALLOWED_ROUTES: 'responses,models,openai:fake',
  USAGE_LOG_FILE: join(work, 'usage.jsonl'),
};
const GUARDED_NAME = 'api-proxy (guarded)';

const sidecar = (upstreamUrl: string, viaSquid: boolean, guarded = false): Contender =>
  nodeContender(guarded ? GUARDED_NAME : 'api-proxy', MAIN, upstreamUrl, {
    ...(viaSquid ? { HTTPS_PROXY: squid.url, REQUIRE_EGRESS_PROXY: 'true' } : {}),
    ...(guarded ? GUARDED : {}),
  });

/** The sidecar serving Anthropic only, its port the one measured; guarded like GUARDED, with Anthropic's routes and models. */
const anthropicSidecar = (upstreamUrl: string, guarded = false): Contender => ({
  name: guarded ? GUARDED_NAME : 'api-proxy',
  start: async () => {
    const port = await freePort();
    return startProcess(process.execPath, [MAIN], {
      ANTHROPIC_API_KEY: ANTHROPIC_KEY,
      ANTHROPIC_UPSTREAM_URL: upstreamUrl,
      ANTHROPIC_PORT: String(port),
      HOST: '127.0.0.1',
      NODE_EXTRA_CA_CERTS: pki.caFile,
      HTTPS_PROXY: squid.url,
      REQUIRE_EGRESS_PROXY: 'true',
      ...(guarded ? { ...GUARDED, ALLOWED_MODELS: 'claude-*', ALLOWED_ROUTES: 'messages,models' } : {}),
    }, port);
  },
});

const nodeProxy = (name: string, upstreamUrl: string, tunnel?: 'pool' | 'per-request'): Contender =>
  nodeContender(name, NODE_PROXY, upstreamUrl, tunnel ? { HTTPS_PROXY: squid.url, TUNNEL: tunnel } : {});

/** The design card's stack: express + http-proxy-middleware, with a kept-alive tunnel pool. */
const expressHpm = (upstreamUrl: string, viaSquid: boolean): Contender =>
  nodeContender('express + http-proxy-middleware', EXPRESS_HPM, upstreamUrl, viaSquid ? { HTTPS_PROXY: squid.url } : {});

const nginx = (upstreamPort: number): Contender => ({
  name: 'nginx',
  start: async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(work, 'nginx-'));
    rmSync(dir, { recursive: true });
    mkdirSync(dir, { mode: 0o777 });
    writeFileSync(join(dir, 'nginx.conf'), `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream up { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer ${KEY}";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`);
    return startProcess('/usr/sbin/nginx', ['-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], {}, port, 'SIGTERM');
  },
});

// ---------- measurements ----------

/** utime+stime of a process in seconds (Linux /proc, 10 ms ticks). */
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssKb(pid: number | undefined): number {
  if (!pid) return 0;
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

interface Load {
  rps: number;
  p50?: number;
  p99?: number;
  p50us?: number;
  p99us?: number;
  requests: number;
  errors: number;
}

async function load(url: string, connections: number, seconds = SECONDS): Promise<Load> {
  const child = spawn(process.execPath, [LOAD, url, String(connections), String(seconds)], {
    env: { PATH: process.env.PATH ?? '', NODE_EXTRA_CA_CERTS: pki.caFile },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await once(child, 'exit');
  return JSON.parse(out.trim().split('\n').at(-1)!) as Load;
}

/**
 * Sequential requests on one kept-alive connection, timed by wrk (C, one
 * thread): its per-request histogram gives the tail a JavaScript client
 * would blur with its own pauses. The same POST as the throughput load.
 */
async function sequentialLoad(url: string, seconds = SECONDS): Promise<Load> {
  const child = spawn('wrk', ['-t1', '-c1', `-d${seconds}s`, '-s', WRK_SCRIPT, `${url}/v1/responses`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  const line = out.trim().split('\n').at(-1) ?? '';
  if (code !== 0 || !line.startsWith('{')) throw new Error(`wrk exited ${code}: ${out.slice(-500)}`);
  const r = JSON.parse(line) as { p50us: number; p99us: number; requests: number; errors: number };
  return { rps: r.requests / seconds, ...r };
}

/** Fresh processes start cold: one unrecorded second lets the JIT and the pool settle. */
const warmUp = (url: string, connections: number): Promise<Load> => load(url, connections, 1);

/** CONNECT lines Squid logged since `before`; it logs a tunnel when the tunnel closes. */
async function connectsSince(before: number, run: Running): Promise<number> {
  await run.stop();
  return until(() => squid.connects().length - before, (n) => n > 0, 3000);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Row {
  scenario: string;
  contender: string;
  metric: string;
  unit: string;
  values: number[];
}
const rows: Row[] = [];
function record(scenario: string, contender: string, metric: string, unit: string, value: number): void {
  let row = rows.find((r) => r.scenario === scenario && r.contender === contender && r.metric === metric);
  if (!row) rows.push((row = { scenario, contender, metric, unit, values: [] }));
  row.values.push(value);
}
const valuesOf = (scenario: string, contender: string, metric: string): number[] =>
  rows.find((r) => r.scenario === scenario && r.contender === contender && r.metric === metric)?.values ?? [];
const value = (scenario: string, contender: string, metric: string): number => median(valuesOf(scenario, contender, metric));
const least = (values: number[]): number => (values.length === 0 ? NaN : Math.min(...values));

/** Runs `measure` for every contender, in a rotated order each round. */
async function rounds(contenders: Contender[], measure: (c: Contender, run: Running) => Promise<void>): Promise<void> {
  for (let round = 0; round < ROUNDS; round++) {
    const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]!);
    for (const c of order) {
      const run = await c.start();
      try {
        await measure(c, run);
      } finally {
        await run.stop();
      }
    }
  }
}

/**
 * Requests per second at 32 connections (and the tunnels that took), then, in a
 * fresh process, latency of sequential requests (and CONNECTs per 1000 of them).
 */
async function httpScenario(scenario: string, contenders: Contender[], viaSquid: boolean): Promise<void> {
  console.error(`# ${scenario}`);
  await rounds(contenders, async (c, run) => {
    await warmUp(run.url, 32);
    // Every Squid tunnel is one connection at the upstream: its peak is the tunnels open at once.
    tls.maxOpenConnections = tls.openConnections;
    const cpu0 = cpuSeconds(run.pid);
    const t = await load(run.url, 32);
    const cpu1 = cpuSeconds(run.pid);
    record(scenario, c.name, 'rps c=32', 'req/s', t.rps);
    record(scenario, c.name, 'p99 c=32', 'ms', t.p99!);
    if (run.pid) record(scenario, c.name, 'CPU per request', 'µs', ((cpu1 - cpu0) / Math.max(1, t.requests)) * 1e6);
    if (viaSquid && c.name !== 'direct') record(scenario, c.name, 'peak open tunnels (32 callers)', 'count', tls.maxOpenConnections);
    await run.stop();

    const sequential = await c.start();
    try {
      const before = squid.connects().length;
      const w = await sequentialLoad(sequential.url, 1);
      const l = await sequentialLoad(sequential.url);
      record(scenario, c.name, 'p50 c=1', 'µs', l.p50us!);
      record(scenario, c.name, 'p99 c=1', 'µs', l.p99us!);
      record(scenario, c.name, 'errors', 'count', t.errors + w.errors + l.errors);
      if (viaSquid && c.name !== 'direct') {
        const connects = await connectsSince(before, sequential);
        record(scenario, c.name, 'CONNECTs per 1000 sequential', 'count', (connects / (w.requests + l.requests)) * 1000);
      }
    } finally {
      await sequential.stop();
    }
  });
}

/**
 * Time to first byte and per-event delay of a 200-event stream, 2 ms apart; then (OpenAI's
 * scenario) a 100 MB stream. The stream is the Responses API's (created, deltas, completed
 * with usage) answering a POST /v1/responses, or Anthropic's Messages stream (message_start,
 * deltas, message_delta) answering POST /v1/messages: the sidecar reads it for usage as it
 * passes, so its accounting is measured.
 */
async function sseScenario(contenders: Contender[], scenario = 'SSE over Squid (TLS)', path = '/v1/responses', large = true): Promise<void> {
  console.error(`# ${scenario}`);
  await rounds(contenders, async (c, run) => {
    const ttfb: number[] = [];
    const delays: number[] = [];
    // The first stream warms the JIT and opens the tunnel; it is not recorded.
    for (let i = -1; i < (QUICK ? 3 : 10); i++) {
      const start = performance.now();
      const res = await request(`${run.url}${path}`, {
        method: 'POST',
        dispatcher: trusted,
        headers: { 'content-type': 'application/json', 'x-fake': 'events=200,interval=2' },
        body: JSON.stringify({ stream: true }),
      });
      let first = true;
      let buffered = '';
      for await (const chunk of res.body) {
        const now = performance.timeOrigin + performance.now();
        if (i < 0) continue;
        if (first) ttfb.push(performance.now() - start);
        first = false;
        buffered += chunk.toString();
        const events = buffered.split('\n\n');
        buffered = events.pop()!;
        for (const e of events) {
          const sent = /"sent_at":([\d.]+)/.exec(e)?.[1];
          if (sent) delays.push(now - Number(sent));
        }
      }
    }
    delays.sort((a, b) => a - b);
    record(scenario, c.name, 'TTFB p50', 'ms', median(ttfb));
    record(scenario, c.name, 'per-event delay p99', 'ms', delays[Math.floor(delays.length * 0.99)]!);
    if (!large) return;

    const bytes = QUICK ? 20e6 : 100e6;
    const t0 = performance.now();
    const big = await request(`${run.url}/v1/fake/bytes`, { dispatcher: trusted, headers: { 'x-fake': `bytes=${bytes}` } });
    let got = 0;
    for await (const chunk of big.body) got += chunk.length;
    if (got !== bytes) throw new Error(`${c.name}: got ${got} of ${bytes} bytes`);
    record(scenario, c.name, 'large stream', 'MB/s', bytes / 1e6 / ((performance.now() - t0) / 1000));
  });
}

/** Sequential WebSocket round trips of small messages. */
async function webSocketScenario(contenders: Contender[]): Promise<void> {
  const scenario = 'WebSocket over Squid (TLS)';
  console.error(`# ${scenario}`);
  await rounds(contenders, async (c, run) => {
    const url = `${run.url.replace(/^http/, 'ws')}/v1/responses`;
    const ws = new WebSocket(url, { ca: readFileSync(pki.caFile), perMessageDeflate: false });
    await once(ws, 'open');
    const deadline = performance.now() + SECONDS * 1000;
    const ping = '{"type":"ping"}';
    // Driven by each answer; a socket that closes early fails the run instead of hanging it.
    const trips = await new Promise<number>((resolve, reject) => {
      let n = 0;
      ws.on('message', () => (++n, performance.now() < deadline ? ws.send(ping) : resolve(n)));
      ws.once('close', (code) => reject(new Error(`${c.name}: the WebSocket closed (${code}) after ${n} round trips`)));
      ws.send(ping);
    });
    ws.removeAllListeners('close');
    ws.close();
    record(scenario, c.name, 'round trips', 'per s', trips / SECONDS);
  });
}

/**
 * Many agents: STREAMS concurrent SSE streams held open; RSS per stream; all
 * complete. One RSS delta moves by ±15 KB per stream from run to run, so it
 * is taken every round, like the rest, and judged on the median.
 */
async function manyStreamsScenario(contenders: Contender[]): Promise<void> {
  const scenario = `${STREAMS} open SSE streams over Squid`;
  console.error(`# ${scenario}`);
  await rounds(contenders, async (c, run) => {
    const pool = new Agent({ connections: null });
    // Warm up: first requests load code and open the first tunnels.
    for (let i = 0; i < 20; i++) await (await request(`${run.url}/v1/models`, { dispatcher: pool })).body.text();
    const idle = rssKb(run.pid);
    let firstEvents = 0;
    let onFirst = (): void => undefined;
    const allOpen = new Promise<void>((r) => (onFirst = r));
    const streams = Array.from({ length: STREAMS }, async () => {
      const res = await request(`${run.url}/v1/responses`, {
        method: 'POST',
        dispatcher: pool,
        headers: { 'content-type': 'application/json', 'x-fake': 'events=2,hold' },
        body: JSON.stringify({ stream: true }),
      });
      let text = '';
      let first = true;
      for await (const chunk of res.body) {
        if (first && ++firstEvents === STREAMS) onFirst();
        first = false;
        text += chunk.toString();
      }
      return res.statusCode === 200 && text.includes('response.completed');
    });
    const timeout = setTimeout(() => onFirst(), 60_000);
    await allOpen;
    clearTimeout(timeout);
    const open = rssKb(run.pid);
    tls.release();
    const completed = (await Promise.all(streams.map((s) => s.catch(() => false)))).filter(Boolean).length;
    record(scenario, c.name, 'RSS per open stream', 'KB', (open - idle) / STREAMS);
    record(scenario, c.name, 'idle RSS', 'MB', idle / 1024);
    record(scenario, c.name, 'completed', `of ${STREAMS}`, completed);
    await pool.close();
  });
}

/** A caller leaves mid-stream: how long until the upstream stream is closed. */
async function cancellationScenario(contenders: Contender[]): Promise<void> {
  const scenario = 'Cancellation over Squid';
  console.error(`# ${scenario}`);
  await rounds(contenders, async (c, run) => {
    const times: number[] = [];
    for (let i = 0; i < (QUICK ? 3 : 10); i++) {
      const ac = new AbortController();
      const res = await request(`${run.url}/v1/responses`, {
        method: 'POST',
        dispatcher: trusted,
        signal: ac.signal,
        headers: { 'content-type': 'application/json', 'x-fake': 'events=10000,interval=10' },
        body: JSON.stringify({ stream: true }),
      });
      const reader = res.body[Symbol.asyncIterator]();
      await reader.next();
      const cancelled = once(tls, 'stream-cancelled');
      const t = performance.now();
      ac.abort();
      await Promise.race([cancelled, new Promise((r) => setTimeout(r, 10_000))]);
      times.push(performance.now() - t);
    }
    record(scenario, c.name, 'upstream closed after', 'ms', median(times));
    record(scenario, c.name, 'upstream closed after (max)', 'ms', Math.max(...times));
  });
}

/** From process start until /readyz answers 200. */
async function startScenario(): Promise<void> {
  const scenario = 'Start to ready';
  console.error(`# ${scenario}`);
  for (let i = 0; i < (QUICK ? 2 : 5); i++) {
    const port = await freePort();
    const t = performance.now();
    const child = spawn(process.execPath, [MAIN], {
      env: { PATH: process.env.PATH ?? '', OPENAI_API_KEY: KEY, UPSTREAM_URL: tls.url, HTTPS_PROXY: squid.url, HOST: '127.0.0.1', PORT: String(port), NODE_EXTRA_CA_CERTS: pki.caFile },
      stdio: 'ignore',
    });
    const readyz = (): Promise<boolean> => request(`http://127.0.0.1:${port}/readyz`).then((r) => (r.body.dump(), r.statusCode === 200), () => false);
    if (!(await until(readyz, (ok) => ok, 10_000, 2))) throw new Error('not ready in 10 s');
    record(scenario, 'api-proxy', 'start to ready', 'ms', performance.now() - t);
    record(scenario, 'api-proxy', 'idle RSS at ready', 'MB', rssKb(child.pid) / 1024);
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
}

// ---------- the run ----------

const tlsDirect = `https://127.0.0.1:${tls.port}`;
const viaSquid = `https://api.openai.test:${tls.port}`;
const slowViaSquid = `https://slow.openai.test:${relay.port}`;
const anthropicViaSquid = `https://api.anthropic.test:${tls.port}`;
const ANTHROPIC_SSE = 'Anthropic SSE over Squid (TLS)';
try {
  // First, on a quiet machine: later scenarios leave Squid and the upstream tearing down thousands of tunnels.
  if (runs('start')) await startScenario();
  if (runs('plain')) await httpScenario('1. Plain HTTP upstream, no Squid', [
    direct(plain.url),
    sidecar(plain.url, false),
    nodeProxy('node floor', plain.url),
    nginx(plain.port),
  ], false);
  if (runs('squid')) await httpScenario('2. Squid path, TLS upstream', [
    direct(tlsDirect),
    sidecar(viaSquid, true),
    sidecar(viaSquid, true, true),
    nodeProxy('node floor (pool)', viaSquid, 'pool'),
    nodeProxy('tunnel per request', viaSquid, 'per-request'),
    expressHpm(viaSquid, true),
  ], true);
  if (runs('rtt')) await httpScenario('3. Squid path, 20 ms round trip', [
    direct(`https://127.0.0.1:${relay.port}`),
    sidecar(slowViaSquid, true),
    nodeProxy('node floor (pool)', slowViaSquid, 'pool'),
    nodeProxy('tunnel per request', slowViaSquid, 'per-request'),
  ], true);
  if (runs('sse')) await sseScenario([direct(tlsDirect), sidecar(viaSquid, true), sidecar(viaSquid, true, true), nodeProxy('node floor (pool)', viaSquid, 'pool'), nodeProxy('tunnel per request', viaSquid, 'per-request'), expressHpm(viaSquid, true)]);
  if (runs('anthropic')) await sseScenario([direct(tlsDirect), anthropicSidecar(anthropicViaSquid), anthropicSidecar(anthropicViaSquid, true), nodeProxy('node floor (pool)', anthropicViaSquid, 'pool')], ANTHROPIC_SSE, '/v1/messages', false);
  if (runs('websocket')) await webSocketScenario([direct(tlsDirect), sidecar(viaSquid, true)]);
  if (runs('streams')) await manyStreamsScenario([sidecar(viaSquid, true), sidecar(viaSquid, true, true), nodeProxy('node floor (pool)', viaSquid, 'pool')]);
  if (runs('cancel')) await cancellationScenario([sidecar(viaSquid, true), nodeProxy('node floor (pool)', viaSquid, 'pool')]);
} finally {
  relay.close();
  await squid.stop();
  await plain.close();
  await tls.close();
  await trusted.close();
  rmSync(work, { recursive: true, force: true });
}

// ---------- report ----------

const s2 = '2. Squid path, TLS upstream';
const s3 = '3. Squid path, 20 ms round trip';
const s1 = '1. Plain HTTP upstream, no Squid';
const sse = 'SSE over Squid (TLS)';
const many = `${STREAMS} open SSE streams over Squid`;
const targets: { target: string; value: string; met: boolean }[] = [];
const target = (name: string, v: number, ok: (v: number) => boolean, fmt: (v: number) => string): void => {
  if (ONLY && Number.isNaN(v)) return; // a scenario --only left out: not measured, not failed
  targets.push({ target: name, value: fmt(v), met: ok(v) });
};
const x = (v: number): string => `${v.toFixed(2)}×`;
const ms = (v: number): string => `${v.toFixed(2)} ms`;
// The promise: the controls cost nothing users can see. Each of these holds unguarded and with every control on.
for (const [who, label] of [['api-proxy', ''], [GUARDED_NAME, ' (guarded)']] as const) {
  target(`Squid c=32 ≥ 0.9× node floor (pool)${label}`, value(s2, who, 'rps c=32') / value(s2, 'node floor (pool)', 'rps c=32'), (v) => v >= 0.9, x);
  target(`Squid c=1 p99 ≤ 1.5× node floor (pool)${label}`, value(s2, who, 'p99 c=1') / value(s2, 'node floor (pool)', 'p99 c=1'), (v) => v <= 1.5, x);
  target(`SSE per-event p99 added ≤ 1.5 ms${label}`, value(sse, who, 'per-event delay p99') - value(sse, 'direct', 'per-event delay p99'), (v) => v <= 1.5, ms);
  target(`Anthropic SSE per-event p99 added ≤ 1.5 ms${label}`, value(ANTHROPIC_SSE, who, 'per-event delay p99') - value(ANTHROPIC_SSE, 'direct', 'per-event delay p99'), (v) => v <= 1.5, ms);
  target(`RSS per open stream ≤ 80 KB${label}`, value(many, who, 'RSS per open stream'), (v) => v <= 80, (v) => `${v.toFixed(1)} KB`);
  // Every round, not the median: one round that lost a stream is a failure.
  target(`all ${STREAMS} streams complete${label}`, least(valuesOf(many, who, 'completed')), (v) => v === STREAMS, (v) => String(v));
}
target('Squid c=32 ≥ 8× tunnel per request', value(s2, 'api-proxy', 'rps c=32') / value(s2, 'tunnel per request', 'rps c=32'), (v) => v >= 8, x);
target('Squid c=1 p50 added over direct ≤ 0.6 ms', (value(s2, 'api-proxy', 'p50 c=1') - value(s2, 'direct', 'p50 c=1')) / 1000, (v) => v <= 0.6, ms);
target('20 ms RTT p50 added ≤ 2 ms', (value(s3, 'api-proxy', 'p50 c=1') - value(s3, 'direct', 'p50 c=1')) / 1000, (v) => v <= 2, ms);
target('Plain c=32 ≥ 0.9× node floor', value(s1, 'api-proxy', 'rps c=32') / value(s1, 'node floor', 'rps c=32'), (v) => v >= 0.9, x);
target('CONNECTs per 1000 sequential requests ≤ 2', value(s2, 'api-proxy', 'CONNECTs per 1000 sequential'), (v) => v <= 2, (v) => v.toFixed(2));
target('open tunnels ≤ concurrent requests (32)', value(s2, 'api-proxy', 'peak open tunnels (32 callers)'), (v) => v <= 32, (v) => v.toFixed(0));
target('SSE TTFB added ≤ 1 ms', value(sse, 'api-proxy', 'TTFB p50') - value(sse, 'direct', 'TTFB p50'), (v) => v <= 1, ms);
target('Anthropic SSE TTFB added ≤ 1 ms', value(ANTHROPIC_SSE, 'api-proxy', 'TTFB p50') - value(ANTHROPIC_SSE, 'direct', 'TTFB p50'), (v) => v <= 1, ms);
target('idle RSS ≤ 60 MB', value('Start to ready', 'api-proxy', 'idle RSS at ready'), (v) => v <= 60, (v) => `${v.toFixed(1)} MB`);
target('cancellation ≤ 1 s (max)', value('Cancellation over Squid', 'api-proxy', 'upstream closed after (max)'), (v) => v <= 1000, ms);
target('start to ready ≤ 300 ms', value('Start to ready', 'api-proxy', 'start to ready'), (v) => v <= 300, ms);

// No target, the choice shown: the design card's stack against the sidecar, same run.
const card = 'express + http-proxy-middleware';
const compared = [
  `Squid c=32: api-proxy ${x(value(s2, 'api-proxy', 'rps c=32') / value(s2, 'node floor (pool)', 'rps c=32'))}, ${card} ${x(value(s2, card, 'rps c=32') / value(s2, 'node floor (pool)', 'rps c=32'))} the node floor`,
  `Squid c=1 p50: api-proxy ${fmt3(value(s2, 'api-proxy', 'p50 c=1'))} µs, ${card} ${fmt3(value(s2, card, 'p50 c=1'))} µs`,
  `SSE TTFB p50: api-proxy ${fmt3(value(sse, 'api-proxy', 'TTFB p50'))} ms, ${card} ${fmt3(value(sse, card, 'TTFB p50'))} ms`,
];
function fmt3(v: number): string {
  return Number.isNaN(v) ? '–' : v.toFixed(v >= 100 ? 0 : 2);
}

const fmt = (v: number): string => (Number.isNaN(v) ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
let md = `# api-proxy benchmark (${QUICK ? 'quick' : 'full'}${ONLY ? `, only ${ONLY.join(', ')}` : ''})\n\n${new Date().toISOString()} · ${machine} · ${ROUNDS} round(s) of ${SECONDS} s, medians; spread is min–max over rounds.\n\n`;
md += '| target | measured | met |\n|---|---|---|\n';
for (const t of targets) md += `| ${t.target} | ${t.value} | ${t.met ? 'yes' : '**no**'} |\n`;
md += `\nThe design card's stack, same run: ${compared.join('; ')}.\n`;
let current = '';
for (const r of rows) {
  if (r.scenario !== current) {
    current = r.scenario;
    md += `\n## ${current}\n\n| contender | metric | median | spread | vs direct |\n|---|---|---|---|---|\n`;
  }
  const d = value(r.scenario, 'direct', r.metric);
  const ratio = r.contender !== 'direct' && !Number.isNaN(d) && d !== 0 ? `${(median(r.values) / d).toFixed(2)}×` : '';
  md += `| ${r.contender} | ${r.metric} (${r.unit}) | ${fmt(median(r.values))} | ${fmt(Math.min(...r.values))}–${fmt(Math.max(...r.values))} | ${ratio} |\n`;
}
mkdirSync(RESULTS, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const base = join(RESULTS, `${QUICK ? 'quick' : 'full'}${ONLY ? `-only-${ONLY.join('-')}` : ''}-${stamp}`);
writeFileSync(`${base}.md`, md);
writeFileSync(`${base}.json`, JSON.stringify({ quick: QUICK, machine, rounds: ROUNDS, seconds: SECONDS, targets, rows }, null, 2));
console.log(md);
console.error(`written ${base}.md and .json`);
