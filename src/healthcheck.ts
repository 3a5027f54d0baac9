// The image's HEALTHCHECK and Kubernetes' exec probes: GET /readyz (or the path
// given, /healthz for liveness) on the sidecar's own port (its first provider's),
// with nothing but node (no curl in a slim image). Exit 0 on 200, 1 otherwise.
import { get } from 'node:http';
import { firstServedPort } from './providers/index.js';

const PATHS = new Set(['/readyz', '/healthz']);
const path = process.argv[2] ?? '/readyz';
if (!PATHS.has(path)) {
  process.stderr.write(`healthcheck: unknown path ${path} (use /readyz or /healthz)\n`);
  process.exit(64);
}
// Where the sidecar listens: a wildcard is reached through loopback.
const listen = process.env.HOST ?? '0.0.0.0';
const host = listen === '0.0.0.0' ? '127.0.0.1' : listen === '::' ? '::1' : listen;
const port = firstServedPort(process.env);
const req = get({ host, port, path, timeout: 3000 }, (res) => {
  res.resume();
  process.exitCode = res.statusCode === 200 ? 0 : 1;
});
req.on('timeout', () => req.destroy(new Error('timed out')));
req.on('error', () => (process.exitCode = 1));
