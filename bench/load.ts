/**
 * The load generator, in its own process: autocannon for throughput, and a
 * sequential undici loop for single-connection latency (autocannon's histogram
 * keeps whole milliseconds; the targets are in tenths). Prints one JSON line.
 */
import autocannon from 'autocannon';
import { Pool } from 'undici';

const [mode, url, connectionsArg, secondsArg] = process.argv.slice(2) as [string, string, string, string];
const body = JSON.stringify({ model: 'gpt-5.5', input: 'x'.repeat(1000) });
const headers = { 'content-type': 'application/json', authorization: 'Bearer agent-key' };
const path = '/v1/responses';

if (mode === 'throughput') {
  const result = await autocannon({
    url: url + path,
    method: 'POST',
    headers,
    body,
    connections: Number(connectionsArg),
    duration: Number(secondsArg),
  });
  console.log(JSON.stringify({ rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total, errors: result.errors + result.non2xx }));
} else {
  // Sequential requests on one kept-alive connection: latency in microseconds.
  const pool = new Pool(url, { connections: 1 });
  const deadline = performance.now() + Number(secondsArg) * 1000;
  const samples: number[] = [];
  let errors = 0;
  while (performance.now() < deadline) {
    const t = performance.now();
    const res = await pool.request({ path, method: 'POST', headers, body });
    await res.body.text();
    if (res.statusCode !== 200) errors++;
    samples.push((performance.now() - t) * 1000);
  }
  samples.sort((a, b) => a - b);
  const q = (p: number): number => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!;
  console.log(JSON.stringify({ rps: samples.length / Number(secondsArg), p50us: q(0.5), p99us: q(0.99), requests: samples.length, errors }));
  await pool.close();
}
