// The image's HEALTHCHECK: GET /readyz on the sidecar's own port, with nothing
// but node (no curl in a slim image). Exit 0 when ready, 1 otherwise.
import { get } from 'node:http';

const port = Number(process.env.PORT ?? 10000);
const req = get({ host: '127.0.0.1', port, path: '/readyz', timeout: 3000 }, (res) => {
  res.resume();
  process.exitCode = res.statusCode === 200 ? 0 : 1;
});
req.on('timeout', () => req.destroy(new Error('timed out')));
req.on('error', () => (process.exitCode = 1));
