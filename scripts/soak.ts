/**
 * The memory floor over time: `npm run soak -- --seconds 300 [--max-slope 10]`.
 *
 * Loopback only: the TLS fake upstream, Squid, and the sidecar as a child
 * process with every control on (budgets that never bind, the model list,
 * the route list, a usage log). Callers run mixed traffic through it for the
 * given time: JSON and SSE Responses calls, and WebSocket sessions (a prewarm
 * and a turn each). The sidecar's RSS is read from /proc every second; the
 * floor of each window (the lowest reading, after its garbage is collected)
 * is printed with its time, and the slope of the floors after the first
 * minute (warm-up: code, pools, caches and the heap's own size settle) is
 * fitted by least squares.
 *
 * Exits non-zero on any failed exchange, or when the slope passes
 * `--max-slope` MB per hour (default 10: with the working set near 130 MB,
 * a job of six hours then stays under the 256 MiB container limit; the
 * creep this was written to catch was 40 MB per hour) by more than twice its
 * standard error (a floor moves by about a megabyte between windows with no
 * growth, which over five minutes alone reads as ±20 MB per hour). A run
 * with fewer than five windows after the warm-up (under about three and a
 * half minutes) prints the slope without judging it: the 30-second smoke in
 * CI checks only that every exchange succeeds.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { WebSocket } from 'ws';
import { startFakeUpstream } from '../testkit/fake-upstream.js';
import { freePort, startSquid, waitForPort } from '../testkit/squid.js';
import { createTestPki } from '../testkit/test-ca.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '300' },
    'max-slope': { type: 'string', default: '10' },
    callers: { type: 'string', default: '8' },
  },
});
const SECONDS = Number(values.seconds);
const MAX_SLOPE = Number(values['max-slope']);
const CALLERS = Number(values.callers);
if (!(SECONDS >= 10) || !(MAX_SLOPE > 0) || !(CALLERS >= 1)) {
  console.error('usage: npm run soak -- [--seconds N (≥ 10)] [--max-slope MB-per-hour] [--callers N]');
  process.exit(64);
}
/** Half a minute per window (a tenth of a short run); the first minute is warm-up. */
const WINDOW_S = Math.min(30, Math.max(5, Math.floor(SECONDS / 10)));
const WARM_UP_S = 60;
const KEY = 'sk-proj-SOAKnotARealKey0000000000000000000000000soak';
const MAIN = new URL('../src/main.js', import.meta.url).pathname;

const work = mkdtempSync(join(tmpdir(), 'api-proxy-soak-'));
const pki = await createTestPki(join(work, 'pki'));
const fake = await startFakeUpstream({ pki, keepReceived: false });
const squid = await startSquid({ allow: ['.openai.test'], hosts: { 'api.openai.test': '127.0.0.1' } });
const port = await freePort();
const sidecar = spawn(process.execPath, [MAIN], {
  env: {
    PATH: process.env.PATH ?? '',
    OPENAI_API_KEY: KEY,
    UPSTREAM_URL: `https://api.openai.test:${fake.port}`,
    HTTPS_PROXY: squid.url,
    REQUIRE_EGRESS_PROXY: 'true',
    HOST: '127.0.0.1',
    PORT: String(port),
    NODE_EXTRA_CA_CERTS: pki.caFile,
    LOG_LEVEL: 'warn',
    MAX_TOKENS: String(1e15),
    MAX_REQUESTS: String(1e15),
    ALLOWED_MODELS: 'gpt-5.*',
    ALLOWED_ROUTES: 'responses,models',
    USAGE_LOG_FILE: join(work, 'usage.jsonl'),
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const pid = sidecar.pid!;
await waitForPort(port);
const base = `http://127.0.0.1:${port}`;
const pool = new Agent({ connections: CALLERS * 2 });

const rssMB = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

let exchanges = 0;
let failures = 0;
const failure = (what: string, why: unknown): void => {
  if (++failures <= 5) console.error(`soak: ${what} failed: ${why instanceof Error ? why.message : String(why)}`);
};

/** One model call over HTTP, JSON or SSE; resolves when its answer has been read whole. */
async function httpCall(stream: boolean): Promise<void> {
  const res = await request(`${base}/v1/responses`, {
    method: 'POST',
    dispatcher: pool,
    headers: { 'content-type': 'application/json', 'x-fake': 'events=20' },
    body: JSON.stringify({ model: 'gpt-5.5', input: 'soak '.repeat(50), stream }),
  });
  const text = await res.body.text();
  if (res.statusCode !== 200 || !text.includes(stream ? 'response.completed' : '"usage"')) throw new Error(`status ${res.statusCode}`);
}

/** A WebSocket session as Codex opens one: a prewarm, a turn, then close. */
async function webSocketSession(): Promise<void> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/responses`, { perMessageDeflate: true });
  ws.on('error', () => undefined); // a close follows, and fails the session
  try {
    await once(ws, 'open');
    for (const message of [{ type: 'response.create', model: 'gpt-5.5', generate: false }, { type: 'response.create', model: 'gpt-5.5', input: 'soak' }]) {
      const done = new Promise<void>((resolve, reject) => {
        const onClose = (code: number): void => reject(new Error(`closed ${code}`));
        const onMessage = (d: Buffer): void => {
          if (!d.toString().includes('"response.completed"')) return;
          ws.off('message', onMessage).off('close', onClose);
          resolve();
        };
        ws.on('message', onMessage).once('close', onClose);
      });
      ws.send(JSON.stringify(message));
      await done;
    }
  } finally {
    ws.close();
  }
}

const deadline = Date.now() + SECONDS * 1000;
const kinds = [() => httpCall(false), () => httpCall(true), () => webSocketSession()];
const callers = Array.from({ length: CALLERS }, async (_, i) => {
  for (let n = i; Date.now() < deadline; n++) {
    try {
      await kinds[n % kinds.length]!();
      exchanges++;
    } catch (err) {
      failure(['json', 'sse', 'websocket'][n % kinds.length]!, err);
    }
  }
});

/** The lowest RSS of each window, with its end time in seconds. */
const floors: { t: number; mb: number; exchanges: number }[] = [];
const started = Date.now();
let low = Infinity;
const sampler = setInterval(() => {
  low = Math.min(low, rssMB());
  const t = Math.round((Date.now() - started) / 1000);
  if (t > 0 && t % WINDOW_S === 0 && floors.at(-1)?.t !== t) {
    floors.push({ t, mb: low, exchanges });
    console.log(`soak: ${String(t).padStart(5)} s  RSS floor ${low.toFixed(1)} MB  ${exchanges} exchanges, ${failures} failed`);
    low = Infinity;
  }
}, 1000);

await Promise.all(callers);
clearInterval(sampler);
sidecar.kill('SIGTERM');
await once(sidecar, 'exit');
await pool.close();
await squid.stop();
await fake.close();
rmSync(work, { recursive: true, force: true });

// Least squares over the floors after the warm-up, with the slope's standard error:
// a floor moves by about a megabyte from one window to the next with no growth at all.
const fit = floors.filter((f) => f.t > WARM_UP_S);
let slope = NaN;
let error = NaN;
if (fit.length >= 3) {
  const mt = fit.reduce((a, f) => a + f.t, 0) / fit.length;
  const mm = fit.reduce((a, f) => a + f.mb, 0) / fit.length;
  const sxx = fit.reduce((a, f) => a + (f.t - mt) ** 2, 0);
  const b = fit.reduce((a, f) => a + (f.t - mt) * (f.mb - mm), 0) / sxx;
  const residual = fit.reduce((a, f) => a + (f.mb - mm - b * (f.t - mt)) ** 2, 0) / (fit.length - 2);
  slope = b * 3600;
  error = Math.sqrt(residual / sxx) * 3600;
}
const judged = fit.length >= 5;
const said = Number.isNaN(slope) ? '–' : `${slope.toFixed(1)} ± ${error.toFixed(1)}`;
console.log(
  `soak: ${exchanges} exchanges in ${SECONDS} s, ${failures} failed; RSS floor slope after warm-up ${said} MB/h` +
    (judged ? ` (limit ${MAX_SLOPE}, judged on slope − 2 × error)` : ' (too short to judge)'),
);
if (failures > 0 || exchanges === 0) process.exit(1);
// Over the limit only when the growth is clear of the floor's own noise.
if (judged && slope - 2 * error > MAX_SLOPE) {
  console.error(`soak: the RSS floor grows ${said} MB per hour, over ${MAX_SLOPE}`);
  process.exit(1);
}
