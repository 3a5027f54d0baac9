/**
 * The throughput load, in its own process: autocannon at N connections.
 * Prints one JSON line. (Sequential latency is wrk's: bench/sequential.lua.)
 */
import autocannon from 'autocannon';

const [url, connectionsArg, secondsArg] = process.argv.slice(2) as [string, string, string];
const body = JSON.stringify({ model: 'gpt-5.5', input: 'x'.repeat(1000) });
const headers = { 'content-type': 'application/json', authorization: 'Bearer agent-key' };
const path = '/v1/responses';

const result = await autocannon({
  url: url + path,
  method: 'POST',
  headers,
  body,
  connections: Number(connectionsArg),
  duration: Number(secondsArg),
});
console.log(JSON.stringify({ rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total, errors: result.errors + result.non2xx }));
