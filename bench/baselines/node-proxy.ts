/**
 * The floor for any Node proxy: http.createServer piping to http(s).request,
 * swapping only the Authorization header. TUNNEL=pool keeps CONNECT tunnels
 * alive (an https.Agent whose connections are tunnels); TUNNEL=per-request is
 * the naive way existing sidecars work (https-proxy-agent, no keep-alive: a
 * CONNECT and a TLS handshake for every request).
 */
import { createServer, request as httpRequest, Agent as HttpAgent, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { TunnelAgent } from './tunnel-agent.js';

const upstream = new URL(process.env.UPSTREAM_URL!);
const proxy = process.env.HTTPS_PROXY ? new URL(process.env.HTTPS_PROXY) : undefined;
const key = process.env.OPENAI_API_KEY!;
const tls = upstream.protocol === 'https:';

const agent = !tls
  ? new HttpAgent({ keepAlive: true })
  : !proxy
    ? new HttpsAgent({ keepAlive: true })
    : process.env.TUNNEL === 'per-request'
      ? new HttpsProxyAgent(proxy, { keepAlive: false })
      : new TunnelAgent(proxy, { keepAlive: true });
const send = tls ? httpsRequest : httpRequest;

createServer((req, res) => {
  const headers: IncomingHttpHeaders = { ...req.headers, host: upstream.host, authorization: `Bearer ${key}` };
  const up = send(
    { hostname: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers, agent },
    (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    },
  );
  up.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on('close', () => up.destroy());
  req.pipe(up);
}).listen(Number(process.env.PORT), '127.0.0.1');
